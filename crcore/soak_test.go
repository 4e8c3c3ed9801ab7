//go:build linux && amd64

package crcore_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// soakCycles is 10 in make test, CRHOOK_SOAK_CYCLES (100 in make soak)
// when set.
func soakCycles(t *testing.T) int {
	if v := os.Getenv("CRHOOK_SOAK_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("CRHOOK_SOAK_CYCLES=%q", v)
		}
		return n
	}
	return 10
}

func selfRSS(t *testing.T) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestSoak checkpoints and restores the same counter again and again (the
// restored process is the next cycle's target), checking at every cycle
// that its memory is what was dumped and that it counts on from where it
// stood, and at the end that the engine leaked neither fds nor memory.
func TestSoak(t *testing.T) {
	crtest.RequireRoot(t)
	cycles := soakCycles(t)
	bin := crtest.BuildC(t, "counter", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^count 3$`, 10*time.Second)
	mask := rseqMask(t, p)
	pid := p.Pid
	fds0 := crtest.OpenFds()
	var rss0 int64
	for i := 0; i < cycles; i++ {
		crtest.Stop(t, pid)
		hash := crtest.HashVMAs(t, pid, mask)
		counts := p.Counts()
		last := counts[len(counts)-1]
		dir := filepath.Join(t.TempDir(), "img")
		if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: dir}); err != nil {
			t.Fatalf("cycle %d: dump: %v", i, err)
		}
		if _, err := crtest.Reap(pid); err != nil {
			t.Fatalf("cycle %d: reap: %v", i, err)
		}
		res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
		if err != nil {
			t.Fatalf("cycle %d: restore: %v", i, err)
		}
		pid = res.Pid
		os.RemoveAll(dir)
		crtest.WaitState(t, pid, 'T', 5*time.Second)
		after := crtest.HashVMAs(t, pid, mask)
		for line, h := range hash {
			if after[line] != h {
				t.Fatalf("cycle %d: contents of %s differ after restore", i, line)
			}
		}
		unix.Kill(pid, unix.SIGCONT)
		p.WaitLine(t, "^count "+strconv.FormatUint(last+2, 10)+"$", 10*time.Second)
		if i == 1 {
			rss0 = selfRSS(t)
		}
	}
	all := p.Counts()
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			t.Fatalf("counts not consecutive across the cycles: %d then %d", all[i-1], all[i])
		}
	}
	if n := crtest.OpenFds(); n != fds0 {
		t.Errorf("%d fds before the cycles, %d after: %v", fds0, n, crtest.FdList())
	}
	if cycles > 2 {
		rss := selfRSS(t)
		t.Logf("%d cycles; test process RSS %d KiB after cycle 2, %d KiB at the end", cycles, rss0>>10, rss>>10)
		if rss > rss0+32<<20 {
			t.Errorf("RSS grew from %d KiB to %d KiB over %d cycles", rss0>>10, rss>>10, cycles)
		}
	}
	crtest.KillAndReap(pid)
}
