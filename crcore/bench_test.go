//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// benchMiB is the memhog size of the Go benchmarks: big enough that the
// memory path dominates, small enough for `make bench` to stay quick.
// The driver in bench/ covers 64 MiB to 2 GiB and compares with CRIU.
const benchMiB = 256

func startMemhog(b *testing.B, mib int) *crtest.Proc {
	b.Helper()
	bin := crtest.BuildC(b, "memhog", true)
	p := crtest.Start(b, bin, fmt.Sprint(mib))
	p.WaitLine(b, `^ready$`, 30*time.Second+time.Duration(mib)*20*time.Millisecond)
	return p
}

// BenchmarkDump dumps a running memhog (--leave-running) into a fresh
// directory each iteration. The image directory is under the test's
// temp dir, so the figure includes that filesystem's write speed.
func BenchmarkDump(b *testing.B) {
	crtest.RequireRoot(b)
	p := startMemhog(b, benchMiB)
	base := b.TempDir()
	b.SetBytes(benchMiB << 20)
	var frozen time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(base, fmt.Sprint(i))
		res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir, LeaveRunning: true})
		if err != nil {
			b.Fatalf("dump: %v", err)
		}
		frozen += res.Stats.FrozenTime
	}
	b.ReportMetric(float64(frozen.Milliseconds())/float64(b.N), "frozen-ms/op")
}

// BenchmarkRestore restores one image of memhog each iteration; killing
// and reaping the restored process is not timed.
func BenchmarkRestore(b *testing.B) {
	crtest.RequireRoot(b)
	p := startMemhog(b, benchMiB)
	dir := filepath.Join(b.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		b.Fatalf("dump: %v", err)
	}
	if _, err := crtest.Reap(p.Pid); err != nil {
		b.Fatalf("reap dumped pid %d: %v", p.Pid, err)
	}
	b.SetBytes(benchMiB << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
		if err != nil {
			b.Fatalf("restore: %v", err)
		}
		b.StopTimer()
		crtest.KillAndReap(res.Pid)
		b.StartTimer()
	}
}

// TestMemhogRoundTrip restores a memhog big enough for the parallel fill
// of internal/mem and has it rehash its memory.
func TestMemhogRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	const mib = 160
	bin := crtest.BuildC(t, "memhog", true)
	p := crtest.Start(t, bin, fmt.Sprint(mib))
	p.WaitLine(t, `^ready$`, 30*time.Second)
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if _, err := crtest.Reap(p.Pid); err != nil {
		t.Fatalf("reap dumped pid %d: %v", p.Pid, err)
	}
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	if got, want := res.Stats.PagesRestored, uint64(mib<<20)/uint64(os.Getpagesize()); got < want {
		t.Errorf("restored %d pages, want at least %d", got, want)
	}
	if err := unix.Kill(res.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	m := p.WaitLine(t, `^check (ok|bad)$`, 30*time.Second)
	if m[1] != "ok" {
		t.Fatalf("restored memory differs from the dumped one")
	}
}
