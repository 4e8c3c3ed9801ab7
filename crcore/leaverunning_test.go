//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// checkConsecutive fails unless counts go up by one from each to the next:
// the counter logs every value, so a gap means lost state and a smaller
// value means a reset, however long the dump took.
func checkConsecutive(t *testing.T, what string, counts []uint64) {
	t.Helper()
	for i := 1; i < len(counts); i++ {
		if counts[i] != counts[i-1]+1 {
			t.Fatalf("%s: count %d follows %d (counts %v)", what, counts[i], counts[i-1], counts[max(0, i-5):min(len(counts), i+5)])
		}
	}
}

// waitCount waits for "count N" in p's log.
func waitCount(t *testing.T, p *crtest.Proc, n uint64) {
	t.Helper()
	p.WaitLine(t, "^count "+strconv.FormatUint(n, 10)+"$", 10*time.Second)
}

// With LeaveRunning the dumped process goes on as if nothing happened:
// running, it keeps counting; stopped, it stays stopped with its memory
// and mappings untouched by the dump's injected syscalls and gadget; and
// the images still restore once it is gone.
func TestLeaveRunning(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", false)
	p := crtest.Start(t, bin)
	waitCount(t, p, 5)
	mask := rseqMask(t, p)

	// Stopped: the dump must leave it stopped and byte for byte as it
	// was. This comes first, on a process no dump has touched yet.
	crtest.Stop(t, p.Pid)
	stoppedAt := p.Counts()
	mapsBefore := crtest.Maps(t, p.Pid)
	hashBefore := crtest.HashVMAs(t, p.Pid, mask)
	dir := filepath.Join(t.TempDir(), "stopped")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir, LeaveRunning: true}); err != nil {
		t.Fatalf("dump stopped: %v", err)
	}
	crtest.WaitState(t, p.Pid, 'T', time.Second)
	mapsAfter := crtest.Maps(t, p.Pid)
	hashAfter := crtest.HashVMAs(t, p.Pid, mask)
	if fmt.Sprint(mapsBefore) != fmt.Sprint(mapsAfter) {
		t.Errorf("maps changed by the dump\nbefore:\n%s\nafter:\n%s", join(mapsBefore), join(mapsAfter))
	}
	if len(hashAfter) != len(hashBefore) {
		t.Errorf("%d mappings hashed before the dump, %d after", len(hashBefore), len(hashAfter))
	}
	for line, h := range hashBefore {
		if hashAfter[line] != h {
			t.Errorf("contents of %s changed by the dump", line)
		}
	}
	// Still stopped: nothing counted while we looked.
	if st, err := crtest.State(p.Pid); err != nil || st != 'T' {
		t.Fatalf("after the dump: state %c, %v; want it still stopped", st, err)
	}
	if n := len(p.Counts()); n != len(stoppedAt) {
		t.Fatalf("a stopped process counted %d times during its dump", n-len(stoppedAt))
	}
	dumped := stoppedAt[len(stoppedAt)-1]
	if err := unix.Kill(p.Pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitCount(t, p, dumped+20)
	checkConsecutive(t, "original after SIGCONT", p.Counts())

	// Running: dump it as it counts.
	mapsBefore = crtest.Maps(t, p.Pid)
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: filepath.Join(t.TempDir(), "running"), LeaveRunning: true}); err != nil {
		t.Fatalf("dump running: %v", err)
	}
	if st, err := crtest.State(p.Pid); err != nil || (st != 'S' && st != 'R') {
		t.Fatalf("after the dump: state %c, %v; want it running", st, err)
	}
	c := p.Counts()
	waitCount(t, p, c[len(c)-1]+20)
	checkConsecutive(t, "original after a leave-running dump", p.Counts())
	if mapsAfter := crtest.Maps(t, p.Pid); fmt.Sprint(mapsBefore) != fmt.Sprint(mapsAfter) {
		t.Errorf("maps changed by the dump\nbefore:\n%s\nafter:\n%s", join(mapsBefore), join(mapsAfter))
	}

	// The dump ran syscalls through a gadget written over the task's
	// code: the code must be as it was before any dump.
	crtest.Stop(t, p.Pid)
	hashNow := crtest.HashVMAs(t, p.Pid, mask)
	for line, h := range hashBefore {
		if f := strings.Fields(line); f[1][1] != 'w' && hashNow[line] != h {
			t.Errorf("contents of read-only %s changed by the leave-running dump", line)
		}
	}
	if err := unix.Kill(p.Pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}

	// The images stand on their own: kill the original, restore it into
	// the same pid, and it counts on from the dumped value.
	crtest.KillAndReap(p.Pid)
	crtest.WaitGone(t, p.Pid, 5*time.Second)
	seen := len(p.Counts())
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	if res.Pid != p.Pid {
		t.Fatalf("restored pid %d, dumped %d", res.Pid, p.Pid)
	}
	crtest.WaitState(t, res.Pid, 'T', 5*time.Second)
	if hashRestored := crtest.HashVMAs(t, res.Pid, mask); len(hashRestored) != len(hashBefore) {
		t.Errorf("%d mappings restored, %d dumped", len(hashRestored), len(hashBefore))
	} else {
		for line, h := range hashBefore {
			if hashRestored[line] != h {
				t.Errorf("contents of %s differ after restore", line)
			}
		}
	}
	if err := unix.Kill(res.Pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The log now holds the original's later counts, then the restored
	// ones, which start over at the dumped value.
	deadline := time.Now().Add(10 * time.Second)
	for len(p.Counts()) < seen+20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	after := p.Counts()[seen:]
	if len(after) < 20 {
		t.Fatalf("restored process logged %d counts in 10 s", len(after))
	}
	if after[0] != dumped+1 {
		t.Errorf("first count after restore %d, want %d (dumped at %d)", after[0], dumped+1, dumped)
	}
	checkConsecutive(t, "restored", after)
}
