//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// rseqMask returns the task's registered rseq area (the counter logs it),
// which the kernel rewrites with the current CPU whenever the task
// returns to user mode.
func rseqMask(t *testing.T, p *crtest.Proc) crtest.Mask {
	t.Helper()
	m := p.WaitLine(t, `^rseq 0x([0-9a-f]+) ([0-9]+)$`, 5*time.Second)
	addr, _ := strconv.ParseUint(m[1], 16, 64)
	n, _ := strconv.ParseUint(m[2], 10, 64)
	return crtest.Mask{Addr: addr, Len: max(n, 32)}
}

// TestCounterRoundTrip restores counter, static and dynamic, and checks
// its mappings, their contents, its exe, its counting, brk and rseq. Each
// twice: filled as usual and with every fresh anonymous mapping filled
// through a userfaultfd (restore.go, userfault), which must leave no
// trace in the mappings.
func TestCounterRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	for _, c := range []struct {
		static    bool
		userfault bool
	}{{true, false}, {false, false}, {true, true}, {false, true}} {
		name := "dynamic"
		if c.static {
			name = "static"
		}
		if c.userfault {
			name += "-userfaultfd"
		}
		static := c.static
		t.Run(name, func(t *testing.T) {
			if c.userfault {
				defer crcore.SetUserfaultMin(0)()
			}
			bin := crtest.BuildC(t, "counter", static)
			p := crtest.Start(t, bin)
			p.WaitLine(t, `^count 5$`, 10*time.Second)

			mask := rseqMask(t, p)
			crtest.Stop(t, p.Pid)
			mapsBefore := crtest.Maps(t, p.Pid)
			hashBefore := crtest.HashVMAs(t, p.Pid, mask)
			dir := filepath.Join(t.TempDir(), "img")
			if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
				t.Fatalf("dump: %v", err)
			}
			ws, err := crtest.Reap(p.Pid)
			if err != nil || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
				t.Fatalf("dumped process should be killed: %v %v", ws, err)
			}
			counts := p.Counts()
			last := counts[len(counts)-1]

			// The dump must leave the images private.
			checkPerms(t, dir)

			res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
			if res.Pid != p.Pid {
				t.Fatalf("restored pid %d, dumped %d", res.Pid, p.Pid)
			}
			if c.userfault && res.Stats.PagesUserfault == 0 {
				t.Errorf("no page went in through a userfaultfd (%d restored)", res.Stats.PagesRestored)
			}
			// Dumped stopped, restored stopped: compare before it runs.
			crtest.WaitState(t, res.Pid, 'T', 5*time.Second)
			mapsAfter := crtest.Maps(t, res.Pid)
			if fmt.Sprint(mapsBefore) != fmt.Sprint(mapsAfter) {
				t.Errorf("maps differ\nbefore:\n%s\nafter:\n%s", join(mapsBefore), join(mapsAfter))
			}
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", res.Pid)); exe != bin {
				t.Errorf("/proc/PID/exe = %q, want %q", exe, bin)
			}
			hashAfter := crtest.HashVMAs(t, res.Pid, mask)
			for line, h := range hashBefore {
				if hashAfter[line] != h {
					t.Errorf("contents of %s differ after restore", line)
				}
			}

			if err := unix.Kill(res.Pid, unix.SIGCONT); err != nil {
				t.Fatal(err)
			}
			p.WaitLine(t, "^count "+strconv.FormatUint(last+20, 10)+"$", 10*time.Second)
			after := p.Counts()[len(counts):]
			if after[0] != last+1 {
				t.Errorf("first count after restore %d, want %d (dumped at %d)", after[0], last+1, last)
			}
			for i := 1; i < len(after); i++ {
				if after[i] != after[i-1]+1 {
					t.Fatalf("counts not consecutive after restore: %v", after)
				}
			}

			// brk still grows in place.
			unix.Kill(res.Pid, unix.SIGUSR1)
			m := p.WaitLine(t, `^brk (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+)$`, 5*time.Second)
			a, _ := strconv.ParseUint(m[1][2:], 16, 64)
			b, _ := strconv.ParseUint(m[2][2:], 16, 64)
			c, _ := strconv.ParseUint(m[3][2:], 16, 64)
			if a != b || c != a+1<<20 {
				t.Errorf("brk did not grow in place: sbrk(0)=%#x sbrk(1M)=%#x then %#x", a, b, c)
			}

			// sched_getcpu follows a migration (rseq registered again).
			unix.Kill(res.Pid, unix.SIGUSR2)
			p.WaitLine(t, `^cpu done$`, 5*time.Second)
			for _, l := range p.Lines() {
				var want, got int
				if n, _ := fmt.Sscanf(l, "cpu %d %d", &want, &got); n == 2 && want != got {
					t.Errorf("sched_getcpu() = %d on a task pinned to CPU %d", got, want)
				}
			}
		})
	}
}

func join(ls []string) string {
	s := ""
	for _, l := range ls {
		s += l + "\n"
	}
	return s
}

func checkPerms(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("image dir mode %v, want 0700", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
}
