//go:build linux && amd64

package crcore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// sharedKiB is Shared_Clean + Shared_Dirty of pid's mapping at addr.
func sharedKiB(t *testing.T, pid int, addr uint64) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, kib := false, 0
	for sc.Scan() {
		l := sc.Text()
		if fs := strings.Fields(l); len(fs) > 0 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			start, _ := strconv.ParseUint(strings.SplitN(fs[0], "-", 2)[0], 16, 64)
			in = start == addr
			continue
		}
		if in && (strings.HasPrefix(l, "Shared_Clean:") || strings.HasPrefix(l, "Shared_Dirty:")) {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			kib += n
		}
	}
	return kib
}

// startCow starts cow.c and waits for its parent and child: it returns
// them and the address of their shared region. Both are killed when the
// test ends.
func startCow(t *testing.T) (p *crtest.Proc, ppid, cpid int, addr uint64) {
	t.Helper()
	bin := crtest.BuildC(t, "cow", false)
	p = crtest.Start(t, bin)
	p.WaitLine(t, `^parent ready`, 10*time.Second)
	p.WaitLine(t, `^child ready`, 10*time.Second)
	for _, l := range p.Lines() {
		var name string
		var pid int
		var a uint64
		if n, _ := fmt.Sscanf(l, "%s ready %d %x", &name, &pid, &a); n == 3 {
			if name == "parent" {
				ppid = pid
			} else {
				cpid = pid
			}
			addr = a
		}
	}
	if ppid == 0 || cpid == 0 {
		t.Fatalf("want a parent and a child, got %d and %d", ppid, cpid)
	}
	t.Cleanup(func() { unix.Kill(cpid, unix.SIGKILL); unix.Kill(ppid, unix.SIGKILL) })
	return p, ppid, cpid, addr
}

// TestCopyOnWriteInherited restores a parent and its forked child whose
// memory is mostly shared: the child keeps what it had of the parent's
// pages shared (not one private copy per task), its own changes, and
// the zeros of the pages it dropped; the parent keeps its changes
// unseen by the child.
func TestCopyOnWriteInherited(t *testing.T) {
	crtest.RequireRoot(t)
	p, ppid, cpid, addr := startCow(t)
	// 16 MiB, of which the child wrote 1, dropped 1, and the parent
	// wrote 1 after the fork: 13 MiB shared.
	const wantShared = 12 << 10
	if got := sharedKiB(t, cpid, addr); got < wantShared {
		t.Fatalf("before the dump the child shares %d KiB, want >= %d: the program did not set up", got, wantShared)
	}

	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: ppid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, []int{ppid, cpid}, 5*time.Second)
	n := len(p.Lines())
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
	if got := sharedKiB(t, cpid, addr); got < wantShared {
		t.Errorf("after restore the child shares %d KiB of the region with its parent, want >= %d", got, wantShared)
	}
	unix.Kill(ppid, unix.SIGUSR1)
	unix.Kill(cpid, unix.SIGUSR1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok, bad []string
		for _, l := range p.Lines()[n:] {
			if strings.HasSuffix(l, " ok") {
				ok = append(ok, l)
			}
			if strings.Contains(l, " bad ") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			t.Fatalf("restored memory differs: %v", bad)
		}
		if len(ok) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restore only %v checked their memory", ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDumpKeepsCopyOnWriteShared dumps, leaving it running, a parent and
// its forked child that share most of a region copy-on-write: after the
// dump the child still shares it (process_vm_readv would have made the
// kernel give it a private copy of every shared page it read), and both
// still hold exactly what they held.
func TestDumpKeepsCopyOnWriteShared(t *testing.T) {
	crtest.RequireRoot(t)
	p, ppid, cpid, addr := startCow(t)
	const wantShared = 12 << 10 // KiB: see TestCopyOnWriteInherited
	if got := sharedKiB(t, cpid, addr); got < wantShared {
		t.Fatalf("before the dump the child shares %d KiB, want >= %d: the program did not set up", got, wantShared)
	}
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: ppid, ImageDir: dir, LeaveRunning: true}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if got := sharedKiB(t, cpid, addr); got < wantShared {
		t.Errorf("after the dump the child shares %d KiB of the region, want >= %d: the dump unshared its pages", got, wantShared)
	}
	n := len(p.Lines())
	unix.Kill(ppid, unix.SIGUSR1)
	unix.Kill(cpid, unix.SIGUSR1)
	p.WaitLine(t, `^parent (ok|bad)`, 10*time.Second)
	p.WaitLine(t, `^child (ok|bad)`, 10*time.Second)
	for _, l := range p.Lines()[n:] {
		if strings.Contains(l, " bad ") {
			t.Errorf("after the dump: %s", l)
		}
	}
}
