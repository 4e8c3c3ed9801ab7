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

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
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
	p, pids, addr := startCowArgs(t, []string{"parent", "child"})
	return p, pids[0], pids[1], addr
}

// dumpCow starts cow.c, dumps it (killing it) and returns the image
// directory, and the pids of its parent and child.
func dumpCow(t *testing.T) (dir string, ppid, cpid int) {
	t.Helper()
	_, ppid, cpid, _ = startCow(t)
	dir = filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: ppid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, []int{ppid, cpid}, 5*time.Second)
	return dir, ppid, cpid
}

// startCowArgs starts cow.c with args and waits until each of names is
// ready: it returns their pids, in the order of names, and the address of
// their shared region. All are killed when the test ends.
func startCowArgs(t *testing.T, names []string, args ...string) (p *crtest.Proc, pids []int, addr uint64) {
	t.Helper()
	bin := crtest.BuildC(t, "cow", false)
	p = crtest.Start(t, append([]string{bin}, args...)...)
	for _, n := range names {
		p.WaitLine(t, `^`+n+` ready`, 10*time.Second)
	}
	byName := map[string]int{}
	for _, l := range p.Lines() {
		var name string
		var pid int
		var a uint64
		if n, _ := fmt.Sscanf(l, "%s ready %d %x", &name, &pid, &a); n == 3 {
			byName[name] = pid
			addr = a
		}
	}
	for _, n := range names {
		pids = append(pids, byName[n])
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			if pid > 0 {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	})
	for i, n := range names {
		if pids[i] == 0 {
			t.Fatalf("no %s among %v", n, p.Lines())
		}
	}
	return p, pids, addr
}

// checkCow has each of pids check its region (cow.c, SIGUSR1) and fails
// unless each reports it holds what it should; p's lines from n on are
// read.
func checkCow(t *testing.T, p *crtest.Proc, n int, pids []int) {
	t.Helper()
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGUSR1)
	}
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
		if len(ok) == len(pids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restore only %v checked their memory", ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
	res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: ppid, ImageDir: dir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	// The child's shared pages are the parent's, in the parent's image.
	if got, want := res.Stats.PagesParent, uint64(wantShared<<10/os.Getpagesize()); got < want {
		t.Errorf("dump recorded %d pages as the parent's, want >= %d", got, want)
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
	checkCow(t, p, n, []int{ppid, cpid})
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

// TestCopyOnWriteChain restores three generations sharing one region
// copy-on-write (cow.c chain). The dump writes each shared page once, in
// the image of the oldest task holding it, and records the others' as
// their parent's; the restore either inherits those through its clones,
// so that the grandchild shares with the child again, or, with
// inheritance off, copies them from the images up the line. Either way
// each task holds exactly what it held.
func TestCopyOnWriteChain(t *testing.T) {
	crtest.RequireRoot(t)
	ps := uint64(os.Getpagesize())
	for _, inherit := range []bool{true, false} {
		t.Run(map[bool]string{true: "inherited", false: "copied"}[inherit], func(t *testing.T) {
			defer crcore.SetInheritCopyOnWrite(inherit)()
			p, pids, addr := startCowArgs(t, []string{"parent", "child", "grandchild"}, "chain")
			dir := filepath.Join(t.TempDir(), "img")
			res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pids[0], ImageDir: dir})
			if err != nil {
				t.Fatalf("dump: %v", err)
			}
			// The child shares MiB 1, 3 and 5-15 of the region with the
			// parent; the grandchild all but MiB 6 (and the dropped 2)
			// with the child: 27 MiB in all.
			if got, want := res.Stats.PagesParent, uint64(27<<20)/ps; got < want {
				t.Errorf("dump recorded %d pages as the parent's, want >= %d", got, want)
			}
			crtest.ReapGone(t, pids, 5*time.Second)
			n := len(p.Lines())
			rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
			if inherit {
				if got := sharedKiB(t, pids[2], addr); got < 14<<10 {
					t.Errorf("after restore the grandchild shares %d KiB of the region, want >= %d", got, 14<<10)
				}
			} else if got, want := rr.Stats.PagesRestored, uint64(16<<20+27<<20)/ps; got < want {
				t.Errorf("restore wrote %d pages, want >= %d (the parent's region and the 27 MiB its children shared)", got, want)
			}
			checkCow(t, p, n, pids)
		})
	}
}

// TestCritReadsParentPages: CRIU's own decoder (go-criu's crit) reads
// the pagemap of a child whose shared pages are its parent's, and the
// entries add up: the pages marked present fill the child's pages file
// exactly, and the ones marked as the parent's (crhook's flag 1<<16)
// are all in the parent's pagemap.
func TestCritReadsParentPages(t *testing.T) {
	crtest.RequireRoot(t)
	dir, ppid, cpid := dumpCow(t)
	ps := uint64(os.Getpagesize())
	runs := func(pid int) (present, parent [][2]uint64) {
		img, err := critDecodeFile(filepath.Join(dir, fmt.Sprintf("pagemap-%d.img", pid)))
		if err != nil {
			t.Fatalf("crit: pagemap of %d: %v", pid, err)
		}
		for _, e := range img.Entries[1:] {
			pe, ok := e.Message.(*pagemap.PagemapEntry)
			if !ok {
				t.Fatalf("pagemap of %d holds a %T", pid, e.Message)
			}
			r := [2]uint64{pe.GetVaddr(), pe.GetVaddr() + uint64(pe.GetNrPages())*ps}
			switch pe.GetFlags() {
			case 4: // PE_PRESENT
				present = append(present, r)
			case 1 << 16:
				parent = append(parent, r)
			default:
				t.Errorf("pagemap of %d: flags %#x", pid, pe.GetFlags())
			}
		}
		return present, parent
	}
	pPresent, pParent := runs(ppid)
	cPresent, cParent := runs(cpid)
	if len(pParent) != 0 {
		t.Errorf("the root's pagemap marks %v as its parent's", pParent)
	}
	if len(cParent) == 0 {
		t.Fatal("the child's pagemap marks no pages as its parent's")
	}
	var own uint64
	for _, r := range cPresent {
		own += r[1] - r[0]
	}
	fi, err := os.Stat(filepath.Join(dir, fmt.Sprintf("pages-%d.img", cpid)))
	if err != nil || uint64(fi.Size()) != own {
		t.Errorf("child's pages file: %v, %v; its present runs hold %d bytes", fi, err, own)
	}
	for _, r := range cParent {
		for a := r[0]; a < r[1]; a += ps {
			in := false
			for _, p := range pPresent {
				if p[0] <= a && a < p[1] {
					in = true
					break
				}
			}
			if !in {
				t.Fatalf("child's page %#x is marked as its parent's, but the parent's pagemap lacks it", a)
			}
		}
	}
}
