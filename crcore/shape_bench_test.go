//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// The shape limits (issue 4, item 7): a tree of 1,000 processes and a
// process of 1,000 threads go through dump and restore. Each iteration
// dumps what the previous one restored (the first: the started program),
// kills it, and restores it: ns/op is one dump plus one restore; dump-ms
// and restore-ms split it.
const shapeSize = 1000

func BenchmarkShapeTree1000(b *testing.B) {
	benchShape(b, "procs", func(p *crtest.Proc) {
		deadline := time.Now().Add(30 * time.Second)
		for len(p.Lines()) < shapeSize {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d processes up", len(p.Lines()), shapeSize)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func BenchmarkShapeThreads1000(b *testing.B) {
	benchShape(b, "threads", func(p *crtest.Proc) { p.WaitLine(b, `^ready$`, 30*time.Second) })
}

func benchShape(b *testing.B, kind string, ready func(*crtest.Proc)) {
	crtest.RequireRoot(b)
	bin := crtest.BuildC(b, "shape", false)
	p := crtest.Start(b, bin, kind, fmt.Sprint(shapeSize))
	ready(p)
	root := p.Pid
	var live []int
	b.Cleanup(func() {
		crtest.KillAndReap(root)
		for _, pid := range live {
			crtest.KillAndReap(pid)
		}
		crtest.ReapGone(b, live, 10*time.Second)
	})
	base := b.TempDir()
	var dumpT, restT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(base, fmt.Sprint(i))
		t0 := time.Now()
		res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: root, ImageDir: dir})
		if err != nil {
			b.Fatalf("dump: %v", err)
		}
		dumpT += time.Since(t0)
		if kind == "procs" && len(res.Pids) != shapeSize {
			b.Fatalf("dumped %d processes, want %d", len(res.Pids), shapeSize)
		}
		b.StopTimer()
		crtest.Reap(root)
		crtest.ReapGone(b, res.Pids, 10*time.Second)
		b.StartTimer()
		t0 = time.Now()
		r, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
		if err != nil {
			b.Fatalf("restore: %v", err)
		}
		restT += time.Since(t0)
		root, live = r.Pid, res.Pids
	}
	b.StopTimer()
	if kind == "procs" {
		if n := len(crtest.Descendants(root)) + 1; n != shapeSize {
			b.Fatalf("restored tree has %d processes, want %d", n, shapeSize)
		}
	} else {
		if n := countTasks(root); n != shapeSize {
			b.Fatalf("restored process has %d threads, want %d", n, shapeSize)
		}
	}
	b.ReportMetric(float64(dumpT.Milliseconds())/float64(b.N), "dump-ms/op")
	b.ReportMetric(float64(restT.Milliseconds())/float64(b.N), "restore-ms/op")
}

// countTasks counts the threads of pid.
func countTasks(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(ents)
}
