//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

const (
	kcmpFiles = 2 // KCMP_FILES
	kcmpFs    = 3 // KCMP_FS
)

// shares tells whether pids a and b hold the same kernel object of kind.
func shares(t *testing.T, a, b, kind int) bool {
	t.Helper()
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), uintptr(kind), 0, 0, 0)
	if errno != 0 {
		t.Fatalf("kcmp(%d, %d, %d): %v", a, b, kind, errno)
	}
	return r == 0
}

// roundTrip dumps the tree of p (killing it), waits for its pids, and
// restores it; it returns how many log lines predate the restore.
func roundTrip(t *testing.T, p *crtest.Proc, pids ...int) int {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, append([]int{p.Pid}, pids...), 5*time.Second)
	n := len(p.Lines())
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
	return n
}

// lineAfter waits for a log line of p past the first n that matches re.
func lineAfter(t *testing.T, p *crtest.Proc, n int, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range p.Lines()[n:] {
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line %q after restore", re)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSharedFdTableAndFs restores a child that shares its parent's fd
// table (CLONE_FILES) and one that shares its fs info (CLONE_FS): after
// restore the kernel objects are shared again (kcmp), and the sharing
// works: an fd the first child opens shows in the parent's table, the
// directory and umask the second sets are the parent's.
func TestSharedFdTableAndFs(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "sharefd", false)
	p := crtest.Start(t, bin)
	m := p.WaitLine(t, `^ready (\d+) (\d+)$`, 10*time.Second)
	var f, s int
	fmt.Sscan(m[1], &f)
	fmt.Sscan(m[2], &s)
	t.Cleanup(func() { unix.Kill(f, unix.SIGKILL); unix.Kill(s, unix.SIGKILL) })
	check := func(when string) {
		t.Helper()
		if !shares(t, p.Pid, f, kcmpFiles) || shares(t, p.Pid, f, kcmpFs) {
			t.Errorf("%s: F should share the fd table only", when)
		}
		if !shares(t, p.Pid, s, kcmpFs) || shares(t, p.Pid, s, kcmpFiles) {
			t.Errorf("%s: S should share fs info only", when)
		}
	}
	check("before the dump")

	n := roundTrip(t, p, f, s)
	check("after restore")

	unix.Kill(f, unix.SIGUSR1)
	unix.Kill(s, unix.SIGUSR1)
	waitAfter := func(re string) []string { t.Helper(); return lineAfter(t, p, n, re) }
	opened := waitAfter(`^F opened (\d+)$`)[1]
	waitAfter(`^S moved$`)
	unix.Kill(p.Pid, unix.SIGUSR2)
	got := waitAfter(`^P fd (-?\d+) cwd (\S+) umask (\d+)$`)
	if got[1] != opened || got[2] != "/tmp" || got[3] != "027" {
		t.Errorf("parent sees fd %s, cwd %s, umask %s; want fd %s (F's), /tmp and 027 (S's)", got[1], got[2], got[3], opened)
	}
}

// TestChrootedProcess restores a process confined by chroot(2) into the
// same root: it sees the files of its jail, not the host's, and counts on.
func TestChrootedProcess(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "chrooted", true)
	jail := t.TempDir()
	if err := os.WriteFile(filepath.Join(jail, "marker"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := crtest.Start(t, bin, jail)
	p.WaitLine(t, `^count 3$`, 10*time.Second)
	n := roundTrip(t, p)
	if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", p.Pid)); err != nil || root != jail {
		t.Errorf("restored root %q (%v), want %s", root, err, jail)
	}
	unix.Kill(p.Pid, unix.SIGUSR1)
	if v := lineAfter(t, p, n, `^root (ok|lost)$`); v[1] != "ok" {
		t.Fatal("the restored process left its chroot")
	}
}

// TestChrootedSharedFs: a chrooted process and a child that shares its
// fs info (CLONE_FS) come back sharing it, in their root, both working:
// the root is set once for both, after every path of both was opened.
func TestChrootedSharedFs(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "chrooted", true)
	jail := t.TempDir()
	if err := os.WriteFile(filepath.Join(jail, "marker"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := crtest.Start(t, bin, jail, "share")
	m := p.WaitLine(t, `^ready (\d+) (\d+)$`, 10*time.Second)
	p.WaitLine(t, `^child count 3$`, 10*time.Second)
	child, _ := strconv.Atoi(m[2])
	t.Cleanup(func() { crtest.KillAndReap(child) })
	n := roundTrip(t, p, child)
	for _, pid := range []int{p.Pid, child} {
		if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err != nil || root != jail {
			t.Errorf("pid %d: restored root %q (%v), want %s", pid, root, err, jail)
		}
	}
	if !shares(t, p.Pid, child, kcmpFs) {
		t.Error("fs info not shared after restore")
	}
	unix.Kill(p.Pid, unix.SIGUSR1)
	unix.Kill(child, unix.SIGUSR1)
	if v := lineAfter(t, p, n, `^root (ok|lost)$`); v[1] != "ok" {
		t.Error("the restored process left its chroot")
	}
	if v := lineAfter(t, p, n, `^child root (ok|lost)$`); v[1] != "ok" {
		t.Error("the restored child left its chroot")
	}
	lineAfter(t, p, n, `^child count \d+$`)
}

// TestSysvMarkedForRemoval restores a SysV segment that was marked for
// removal while attached: it comes back with its contents, attached, and
// marked again (SHM_DEST), so it still goes away at the last detach. The
// tree's own IPC namespace also keeps the limit it set (kernel.msgmnb).
func TestSysvMarkedForRemoval(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "shmrm", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^ready \d+$`, 10*time.Second)
	unix.Kill(p.Pid, unix.SIGUSR1)
	before := p.WaitLine(t, `^shm (\d+) (.*)$`, 10*time.Second)
	if before[1] != "1600" || before[2] != "marked-1" {
		t.Fatalf("before the dump: mode %s text %q, want 1600 (SHM_DEST|0600) and marked-1", before[1], before[2])
	}
	n := roundTrip(t, p)
	unix.Kill(p.Pid, unix.SIGUSR1)
	if mnb := lineAfter(t, p, n, `^msgmnb (\S+)$`); mnb[1] != "23456" {
		t.Errorf("the restored IPC namespace has msgmnb %s, want 23456", mnb[1])
	}
	if got := lineAfter(t, p, n, `^shm (\d+) (.*)$|^shm gone$`); got[1] != "1600" || got[2] != "marked-1" {
		t.Errorf("after restore: %q, want mode 1600 (marked for removal) and marked-1", got[0])
	}
}

// TestSiblingSharing restores siblings that share an fd table or fs
// info their parent does not hold (made with CLONE_PARENT | CLONE_FILES
// and CLONE_PARENT | CLONE_FS; one of them then starts a session): the
// restore clones each from the sibling it shares with, so that parents,
// sessions and groups are as dumped, the objects are shared again (kcmp)
// and the sharing works, with no helper task left.
func TestSiblingSharing(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "sibshare", false)
	p := crtest.Start(t, bin)
	m := p.WaitLine(t, `^ready (\d+) (\d+) (\d+)$`, 10*time.Second)
	var a, b, c int
	fmt.Sscan(m[1], &a)
	fmt.Sscan(m[2], &b)
	fmt.Sscan(m[3], &c)
	if a <= 0 || b <= 0 || c <= 0 {
		t.Fatalf("bad pids %v", m)
	}
	all := []int{p.Pid, a, b, c}
	t.Cleanup(func() { crtest.KillAll(t, all[1:]) })
	check := func(when string) {
		t.Helper()
		if !shares(t, a, b, kcmpFiles) || shares(t, p.Pid, a, kcmpFiles) || shares(t, a, c, kcmpFiles) {
			t.Errorf("%s: B should share A's fd table, which the root and C do not hold", when)
		}
		if !shares(t, a, c, kcmpFs) || shares(t, p.Pid, a, kcmpFs) || shares(t, a, b, kcmpFs) {
			t.Errorf("%s: C should share A's fs info, which the root and B do not hold", when)
		}
	}
	check("before the dump")
	before := nsIDs(t, p.Pid)
	if len(before) != 4 || !strings.Contains(before[b], fmt.Sprintf("ppid %d pgid %d sid %d", p.Pid, b, b)) {
		t.Fatalf("tree %v: want the root, A, B, C, with B a child of the root in a session of its own", before)
	}

	n := roundTrip(t, p, a, b, c)
	check("after restore")
	if after := nsIDs(t, p.Pid); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after restore (pid: ppid pgid sid) %v, before %v", after, before)
	}

	unix.Kill(b, unix.SIGUSR1)
	unix.Kill(c, unix.SIGUSR1)
	lineAfter(t, p, n, `^B opened 77$`)
	lineAfter(t, p, n, `^C moved$`)
	unix.Kill(a, unix.SIGUSR2)
	if got := lineAfter(t, p, n, `^A fd77 (\d) cwd (\S+) umask (\d+)$`); got[1] != "1" || got[2] != "/tmp" || got[3] != "027" {
		t.Errorf("A sees %q; want fd 77 open (B's), cwd /tmp and umask 027 (C's)", got[0])
	}
}

// TestSysvPartialAttach restores an attachment of the middle of a SysV
// segment (its first and last pages unmapped before the dump): the same
// two pages at the same address, with their contents.
func TestSysvPartialAttach(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "shmpart", false)
	p := crtest.Start(t, bin)
	addr := p.WaitLine(t, `^ready ([0-9a-f]+)$`, 10*time.Second)[1]
	sysvMaps := func() []string {
		var out []string
		for _, l := range crtest.Maps(t, p.Pid) {
			if strings.Contains(l, "/SYSV") {
				out = append(out, strings.Fields(l)[0]+" "+strings.Fields(l)[2])
			}
		}
		return out
	}
	before := sysvMaps()
	if len(before) != 1 || !strings.HasPrefix(before[0], addr+"-") {
		t.Fatalf("before the dump the SysV mappings are %v, want one at %s", before, addr)
	}
	n := roundTrip(t, p)
	if after := sysvMaps(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("SysV mappings %v after restore, %v before (range and offset)", after, before)
	}
	unix.Kill(p.Pid, unix.SIGUSR1)
	if got := lineAfter(t, p, n, `^part (\S+) (\S+)$`); got[1] != "page-1" || got[2] != "page-2" {
		t.Errorf("after restore the attachment holds %q, want page-1 page-2", got[0])
	}
}
