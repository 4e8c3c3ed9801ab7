//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// nsIDs describes the processes of the tree rooted at host pid root (all
// its descendants) as
// its pid namespace sees them: ns pid -> "ppid P pgid G sid S" (0 for a
// process outside the namespace), from /proc/PID/status.
func nsIDs(t *testing.T, root int) map[int]string {
	t.Helper()
	depth := 0
	nsPid := func(host int) int {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", host))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
				f := strings.Fields(v)
				if depth == 0 {
					depth = len(f)
				}
				if len(f) != depth {
					return 0
				}
				var n int
				fmt.Sscan(f[len(f)-1], &n)
				return n
			}
		}
		t.Fatalf("pid %d: no NSpid", host)
		return 0
	}
	field := func(host int, key string) int {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", host))
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, key+":"); ok {
				f := strings.Fields(v)
				var n int
				fmt.Sscan(f[len(f)-1], &n)
				return n
			}
		}
		t.Fatalf("pid %d: no %s", host, key)
		return 0
	}
	out := map[int]string{}
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		host := queue[0]
		queue = append(queue, kernelChildren(t, host)...)
		pid := nsPid(host)
		out[pid] = fmt.Sprintf("ppid %d pgid %d sid %d", nsPid(field(host, "PPid")), field(host, "NSpgid"), field(host, "NSsid"))
	}
	return out
}

// linesWith counts the log lines that start with prefix.
func linesWith(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// Orphans in sessions and process groups whose leaders have exited come
// back with their pids, parents, groups and sessions, and go on: the
// restore stands helpers in for the leaders, then lets them go. The
// orphans' reaper is a child subreaper, or the init of the tree's own
// pid namespace (restored into a new one).
func TestOrphansRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	for _, pidns := range []bool{false, true} {
		t.Run(map[bool]string{false: "subreaper", true: "pidns"}[pidns], func(t *testing.T) {
			orphansRoundTrip(t, pidns)
		})
	}
}

func orphansRoundTrip(t *testing.T, pidns bool) {
	bin := crtest.BuildC(t, "orphans", false)
	log := filepath.Join(t.TempDir(), "log")
	cmd := exec.Command(bin, log)
	if pidns {
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Release sets Pid to -1: take it first (kill(-1) kills everything).
	p := &crtest.Proc{Pid: cmd.Process.Pid, Log: log, Cmd: cmd}
	if p.Pid <= 0 {
		t.Fatalf("bad pid %d", p.Pid)
	}
	cmd.Process.Release()
	t.Cleanup(func() { crtest.KillAndReap(p.Pid) })
	p.WaitLine(t, `^ready$`, 10*time.Second)
	num := func(re string) int {
		var v int
		fmt.Sscan(p.WaitLine(t, re, 10*time.Second)[1], &v)
		return v
	}
	root, a, d := num(`^root (\d+) A`), num(`^root \d+ A (\d+)`), num(`^root \d+ A \d+ D (\d+)$`)
	b, c, e := num(`^B started (\d+)$`), num(`^C started (\d+)$`), num(`^E started (\d+)$`)
	p.WaitLine(t, `^C got t5$`, 10*time.Second)
	p.WaitLine(t, `^E count 5$`, 10*time.Second)
	hosts := append([]int{p.Pid}, kernelChildren(t, p.Pid)...)
	t.Cleanup(func() { crtest.KillAll(t, hosts) }) // the orphans are ours then
	// The shape the test is about.
	outside := os.Getpid()
	if pidns {
		outside = 0
	}
	want := map[int]string{
		root: fmt.Sprintf("ppid %d pgid %d sid %d", outside, root, root),
		b:    fmt.Sprintf("ppid %d pgid %d sid %d", root, b, a),
		c:    fmt.Sprintf("ppid %d pgid %d sid %d", root, a, a),
		e:    fmt.Sprintf("ppid %d pgid %d sid %d", root, d, root),
	}
	before := nsIDs(t, p.Pid)
	if fmt.Sprint(before) != fmt.Sprint(want) {
		t.Fatalf("the tree is %v, want %v", before, want)
	}

	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, hosts, 5*time.Second)
	n := len(p.Lines())

	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir, NewPidNS: pidns})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
	hosts = append([]int{rr.Pid}, kernelChildren(t, rr.Pid)...)
	// Same processes, parents, groups and sessions; the helpers that
	// stood in for A and D are gone (they were the root's children).
	if after := nsIDs(t, rr.Pid); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after restore the tree is %v, before %v", after, before)
	}
	// B and C still talk through A's pipe, E still counts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := p.Lines()[n:]
		if linesWith(after, "C got ") >= 10 && linesWith(after, "E count ") >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphans do not go on after restore:\n%s", strings.Join(after, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range p.Lines()[n:] {
		// The helpers' exits must not reach the root.
		if strings.Contains(l, "errno") || l == "root sigchld" {
			t.Errorf("after restore: %s", l)
		}
	}
}

// kernelChildren lists the children of pid from /proc/PID/task/*/children
// (cheaper than a walk of /proc on a busy machine).
func kernelChildren(t *testing.T, pid int) []int {
	t.Helper()
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tid.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(b)) {
			var c int
			fmt.Sscan(f, &c)
			out = append(out, c)
		}
	}
	return out
}

// An orphan in a session whose leader lives on elsewhere in the tree
// (not its sibling: a cousin) comes back an orphan of the subreaper, in
// the leader's session, with no helper left behind.
func TestOrphanOfLiveSession(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "orphans", false)
	p := crtest.Start(t, bin, "alive-leader")
	p.WaitLine(t, `^ready$`, 10*time.Second)
	var m int
	fmt.Sscan(p.WaitLine(t, `^M started (\d+)$`, time.Second)[1], &m)
	all := append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
	t.Cleanup(func() { crtest.KillAll(t, all) })
	before := nsIDs(t, p.Pid)
	if len(all) != 4 || !strings.Contains(before[m], fmt.Sprintf("ppid %d ", p.Pid)) {
		t.Fatalf("tree %v, M (%d) should be an orphan of the root: %v", all, m, before)
	}
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, all, 5*time.Second)
	n := len(p.Lines())
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
	after := nsIDs(t, p.Pid)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("ids after restore (pid: ppid pgid sid):\n%v\nbefore:\n%v", after, before)
	}
	for _, l := range p.Lines()[n:] {
		if l == "root sigchld" {
			t.Errorf("the restored root got a SIGCHLD (a helper's?)")
		}
	}
	if st, err := crtest.State(m); err != nil || st == 'Z' {
		t.Errorf("M after restore: state %c, %v", st, err)
	}
}

// startShape starts orphans in mode, waits for its "ready" and its line
// matching re, and returns it with the matched line; the tree is killed
// and reaped at the end of the test.
func startShape(t *testing.T, mode, re string) (*crtest.Proc, []string, []int) {
	t.Helper()
	bin := crtest.BuildC(t, "orphans", false)
	p := crtest.Start(t, bin, mode)
	var all []int
	t.Cleanup(func() {
		// The tree as it is now, also when the test failed before
		// it was ready.
		if all == nil {
			all = append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
		}
		crtest.KillAll(t, all)
	})
	p.WaitLine(t, `^ready$`, 10*time.Second)
	m := p.WaitLine(t, re, time.Second)
	all = append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
	return p, m, all
}

// restoreShape dumps p's tree, restores it, and checks that every pid,
// parent, group and session is as dumped, that no helper is left, and
// that the root got no SIGCHLD; it returns how many log lines predate
// the restore.
func restoreShape(t *testing.T, p *crtest.Proc, all []int) int {
	t.Helper()
	before := nsIDs(t, p.Pid)
	if len(before) != len(all) {
		t.Fatalf("tree %v, descendants %v", before, all)
	}
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, all, 5*time.Second)
	n := len(p.Lines())
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
	// The same processes (no helper among them), parents, groups and
	// sessions.
	if after := nsIDs(t, p.Pid); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after restore (pid: ppid pgid sid):\n%v\nbefore:\n%v", after, before)
	}
	if got := append([]int{p.Pid}, crtest.Descendants(p.Pid)...); len(got) != len(all) {
		t.Errorf("after restore the tree holds %v, before %v", got, all)
	}
	return n
}

// waitCounts waits until each of who has logged count lines after line n.
func waitCounts(t *testing.T, p *crtest.Proc, n int, who ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := p.Lines()[n:]
		ok := true
		for _, w := range who {
			ok = ok && linesWith(after, w+" count ") >= 5
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v do not go on after restore:\n%s", who, strings.Join(after, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range p.Lines()[n:] {
		if l == "root sigchld" {
			t.Errorf("the restored root got a SIGCHLD (a helper's?)")
		}
	}
}

// A session whose leader has exited, with members under two parents:
// B, cloned by the leader with CLONE_PARENT, is the child of the
// leader's parent P (no subreaper), and A, the leader's child, went to
// the root, a subreaper. The restore's helper for the leader is cloned
// from P, B from it with CLONE_PARENT, and A from a spare helper of it,
// orphaned to the root when the spare exits.
func TestOrphansOfGoneLeaderUnderTwoParents(t *testing.T) {
	crtest.RequireRoot(t)
	p, m, all := startShape(t, "split", `^split (\d+) (\d+) (\d+) (\d+)$`)
	var pp, a, b, l int
	fmt.Sscan(m[1]+" "+m[2]+" "+m[3]+" "+m[4], &pp, &a, &b, &l)
	ids := nsIDs(t, p.Pid)
	if ids[a] != fmt.Sprintf("ppid %d pgid %d sid %d", p.Pid, l, l) || ids[b] != fmt.Sprintf("ppid %d pgid %d sid %d", pp, l, l) {
		t.Fatalf("A %d: %s, B %d: %s; want both in session %d, under the root and P %d", a, ids[a], b, ids[b], l, pp)
	}
	n := restoreShape(t, p, all)
	waitCounts(t, p, n, "A", "B")
}

// A child born before its parent left the session: P forked C, then
// called setsid, so C, P's child, is in the root's session. The restore
// clones C from P before P's setsid.
func TestChildBornBeforeSetsid(t *testing.T) {
	crtest.RequireRoot(t)
	p, m, all := startShape(t, "presetsid", `^presetsid (\d+) (\d+)$`)
	var pp, c int
	fmt.Sscan(m[1]+" "+m[2], &pp, &c)
	ids := nsIDs(t, p.Pid)
	if ids[pp] != fmt.Sprintf("ppid %d pgid %d sid %d", p.Pid, pp, pp) || ids[c] != fmt.Sprintf("ppid %d pgid %d sid %d", pp, p.Pid, p.Pid) {
		t.Fatalf("P %d: %s, C %d: %s; want P leading its session, C in the root's", pp, ids[pp], c, ids[c])
	}
	n := restoreShape(t, p, all)
	waitCounts(t, p, n, "P", "C")
}

// An orphan of a live session leader whose parent G is not the subreaper
// the kernel would now reparent it to (G dropped its flag after it got
// the orphan): the restore makes G a subreaper just while the orphan's
// spare helper exits, and G's flag is off again after restore.
func TestOrphanOfUnflaggedParent(t *testing.T) {
	crtest.RequireRoot(t)
	p, m, all := startShape(t, "unflagged", `^unflagged (\d+) (\d+) (\d+)$`)
	var g, o, l int
	fmt.Sscan(m[1]+" "+m[2]+" "+m[3], &g, &o, &l)
	if ids := nsIDs(t, p.Pid); !strings.HasPrefix(ids[o], fmt.Sprintf("ppid %d ", g)) || !strings.HasSuffix(ids[o], fmt.Sprintf(" sid %d", l)) {
		t.Fatalf("M %d: %s; want G %d its parent, L %d its session", o, ids[o], g, l)
	}
	n := restoreShape(t, p, all)
	waitCounts(t, p, n, "M")
	unix.Kill(g, unix.SIGUSR2)
	if got := lineAfter(t, p, n, `^G subreaper (-?\d+)$`); got[1] != "0" {
		t.Errorf("G's subreaper flag is %s after restore, want 0", got[1])
	}
}

// An orphan whose parent X is no ancestor of its live session leader L
// (L's parent exited after X dropped its subreaper flag, and L went to
// the root past X): the restore has L born under X, from a spare helper,
// orphans M from L to X, then lets L's spare go, and L goes up to the
// root.
func TestOrphanOfMovedLeader(t *testing.T) {
	crtest.RequireRoot(t)
	p, m, all := startShape(t, "moved", `^moved (\d+) (\d+) (\d+)$`)
	var x, o, l int
	fmt.Sscan(m[1]+" "+m[2]+" "+m[3], &x, &o, &l)
	ids := nsIDs(t, p.Pid)
	if !strings.HasPrefix(ids[o], fmt.Sprintf("ppid %d ", x)) || !strings.HasSuffix(ids[o], fmt.Sprintf(" sid %d", l)) ||
		ids[l] != fmt.Sprintf("ppid %d pgid %d sid %d", p.Pid, l, l) {
		t.Fatalf("M %d: %s, L %d: %s; want M under X %d in session L, L under the root", o, ids[o], l, ids[l], x)
	}
	n := restoreShape(t, p, all)
	waitCounts(t, p, n, "M")
}

// Leaders born in the session above: the root forked A, A forked B, B
// forked C, and then B and A started sessions of their own. C is in
// the root's session under B, whose parent A is not in it. The restore
// clones A and B in that session and has each call setsid once its
// children of it exist. With chain-outside the session is the one the
// root was started in, from outside the tree.
func TestLeadersBornInSessionAbove(t *testing.T) {
	crtest.RequireRoot(t)
	for _, mode := range []string{"chain", "chain-outside"} {
		t.Run(mode, func(t *testing.T) {
			p, m, all := startShape(t, mode, `^chain (\d+) (\d+) (\d+)$`)
			var a, b, c int
			fmt.Sscan(m[1]+" "+m[2]+" "+m[3], &a, &b, &c)
			sid, err := unix.Getsid(p.Pid)
			if err != nil {
				t.Fatal(err)
			}
			if mode == "chain" && sid != p.Pid || mode == "chain-outside" && sid == p.Pid {
				t.Fatalf("the root %d is in session %d", p.Pid, sid)
			}
			ids := nsIDs(t, p.Pid)
			if ids[a] != fmt.Sprintf("ppid %d pgid %d sid %d", p.Pid, a, a) || ids[b] != fmt.Sprintf("ppid %d pgid %d sid %d", a, b, b) ||
				!strings.HasPrefix(ids[c], fmt.Sprintf("ppid %d ", b)) || !strings.HasSuffix(ids[c], fmt.Sprintf(" sid %d", sid)) {
				t.Fatalf("A %d: %s, B %d: %s, C %d: %s; want A and B leading sessions, C in %d", a, ids[a], b, ids[b], c, ids[c], sid)
			}
			n := restoreShape(t, p, all)
			waitCounts(t, p, n, "A", "B", "C")
		})
	}
}

// An exited leader's members under two leaders born in its session: L
// forked Q1 and Q2 and exited, each Q forked a child and then started
// a session of its own. C1 and C2 are in session L under Q1 and Q2, not
// on one line of descent. The restore clones Q1 and Q2 from the helper
// standing in for L (CLONE_PARENT), so that they are born in L.
func TestExitedLeaderMembersUnderLeaders(t *testing.T) {
	crtest.RequireRoot(t)
	p, m, all := startShape(t, "gonepre", `^gonepre (\d+) (\d+) (\d+) (\d+) (\d+)$`)
	var l, q1, c1, q2, c2 int
	fmt.Sscan(strings.Join(m[1:], " "), &l, &q1, &c1, &q2, &c2)
	ids := nsIDs(t, p.Pid)
	for _, k := range [][2]int{{q1, c1}, {q2, c2}} {
		if ids[k[0]] != fmt.Sprintf("ppid %d pgid %d sid %d", p.Pid, k[0], k[0]) || ids[k[1]] != fmt.Sprintf("ppid %d pgid %d sid %d", k[0], l, l) {
			t.Fatalf("Q %d: %s, C %d: %s; want Q leading its session under the root, C in session %d", k[0], ids[k[0]], k[1], ids[k[1]], l)
		}
	}
	n := restoreShape(t, p, all)
	waitCounts(t, p, n, "Q1", "C1", "Q2", "C2")
}

// An orphan sharing its session leader's fd table: L cloned K with
// CLONE_FILES, K cloned M the same way and exited, and M went to the
// root. The restore clones M from a spare helper that shares L's table
// (CLONE_FILES all the way), so M and L share one table again. With
// sharedcousin L leads no session: M, in the root's session, shares its
// table only with L, on another branch, and is born under L the same
// way.
func TestOrphanSharingFdTable(t *testing.T) {
	crtest.RequireRoot(t)
	for _, mode := range []string{"sharedorphan", "sharedcousin"} {
		t.Run(mode, func(t *testing.T) {
			p, _, all := startShape(t, mode, `^ready$`)
			got := p.WaitLine(t, `^sharedorphan (\d+) (\d+)$`, time.Second)
			var m, sid int
			fmt.Sscan(got[1]+" "+got[2], &m, &sid)
			ids := nsIDs(t, p.Pid)
			l := 0
			for pid := range ids {
				if pid != m && pid != p.Pid && sameFdTable(t, pid, m) {
					l = pid
				}
			}
			if !strings.HasPrefix(ids[m], fmt.Sprintf("ppid %d ", p.Pid)) || l == 0 || sameFdTable(t, m, p.Pid) ||
				mode == "sharedorphan" && sid != l || mode == "sharedcousin" && sid != p.Pid {
				t.Fatalf("M %d: %s, sharing its fd table with %d; want an orphan of the root sharing L's table only", m, ids[m], l)
			}
			n := restoreShape(t, p, all)
			if !sameFdTable(t, m, l) || sameFdTable(t, m, p.Pid) {
				t.Errorf("after restore M shares L's fd table: %v, the root's: %v; want L's only", sameFdTable(t, m, l), sameFdTable(t, m, p.Pid))
			}
			waitCounts(t, p, n, "M")
		})
	}
}

// sameFdTable says whether pids a and b share one fd table (kcmp).
func sameFdTable(t *testing.T, a, b int) bool {
	t.Helper()
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), 2 /* KCMP_FILES */, 0, 0, 0)
	if errno != 0 {
		t.Fatalf("kcmp %d %d: %v", a, b, errno)
	}
	return r == 0
}

// A member of an exited leader's session sharing its parent's fd table:
// P cloned L with CLONE_FILES, and L, in its own session, cloned B with
// CLONE_PARENT and CLONE_FILES, then exited. The helper standing in for
// L shares P's table, and B is cloned from it with CLONE_FILES.
func TestExitedLeaderMemberSharingParentsFdTable(t *testing.T) {
	crtest.RequireRoot(t)
	p, m, all := startShape(t, "gonefiles", `^gonefiles (\d+) (\d+) (\d+)$`)
	var pp, b, l int
	fmt.Sscan(m[1]+" "+m[2]+" "+m[3], &pp, &b, &l)
	if ids := nsIDs(t, p.Pid); ids[b] != fmt.Sprintf("ppid %d pgid %d sid %d", pp, l, l) || !sameFdTable(t, b, pp) {
		t.Fatalf("B %d: %s, sharing P %d's fd table: %v; want B under P in session %d, sharing it", b, ids[b], pp, sameFdTable(t, b, pp), l)
	}
	n := restoreShape(t, p, all)
	if !sameFdTable(t, b, pp) || sameFdTable(t, b, p.Pid) {
		t.Errorf("after restore B shares P's fd table: %v, the root's: %v; want P's only", sameFdTable(t, b, pp), sameFdTable(t, b, p.Pid))
	}
	waitCounts(t, p, n, "B")
}

// A child sharing its grandparent's fd table, which its parent dropped:
// A cloned B with CLONE_FILES, B cloned C so and unshared its table. The
// restore clones B sharing A's table, C from B, and has B unshare it.
func TestChildSharingDroppedFdTable(t *testing.T) {
	crtest.RequireRoot(t)
	p, _, all := startShape(t, "dropped", `^ready$`)
	got := p.WaitLine(t, `^dropped (\d+) (\d+) (\d+)$`, time.Second)
	var a, b, c int
	fmt.Sscan(got[1]+" "+got[2]+" "+got[3], &a, &b, &c)
	tables := func() string {
		return fmt.Sprintf("C shares A's table: %v, B's: %v; B shares A's: %v", sameFdTable(t, c, a), sameFdTable(t, c, b), sameFdTable(t, b, a))
	}
	const want = "C shares A's table: true, B's: false; B shares A's: false"
	if got := tables(); got != want {
		t.Fatalf("before the dump %s; want %s", got, want)
	}
	n := restoreShape(t, p, all)
	if got := tables(); got != want {
		t.Errorf("after restore %s; want %s", got, want)
	}
	waitCounts(t, p, n, "B", "C")
}

// A process in a shell's job session and group, restored from another
// session and group (as after a reboot): it gets the restorer's, as the
// images say nothing of a group and a session from outside the tree but
// that they were the ones it was started in.
func TestRestoreInAnotherSessionAndGroup(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", false)
	log := filepath.Join(t.TempDir(), "log")
	sh := exec.Command("/bin/sh", "-c", `"$0" "$1" & echo $!; wait`, bin, log)
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatal(err)
	}
	p := &crtest.Proc{Pid: pid, Log: log}
	t.Cleanup(func() { crtest.KillAndReap(pid) })
	p.WaitLine(t, `^count 3$`, 5*time.Second)
	if sid, _ := unix.Getsid(pid); sid != sh.Process.Pid {
		t.Fatalf("the counter is in session %d, want the shell's %d", sid, sh.Process.Pid)
	}
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	n := len(p.Lines())
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
	sid, _ := unix.Getsid(pid)
	pgid, _ := unix.Getpgid(pid)
	mySid, _ := unix.Getsid(0)
	if sid != mySid || pgid != unix.Getpgrp() {
		t.Errorf("restored in session %d and group %d, want the restorer's %d and %d", sid, pgid, mySid, unix.Getpgrp())
	}
	p.WaitLine(t, fmt.Sprintf(`^count %d$`, n+3), 5*time.Second)
}

// An orphan of a session whose leader is a zombie: L started a session,
// its grandchild M went to the root, and L exited unreaped. The restore
// clones M from a spare helper of L while L still lives, and L then
// dies as the zombie it was.
func TestOrphanOfZombieLeader(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "orphans", false)
	p := crtest.Start(t, bin, "zombieleader")
	got := p.WaitLine(t, `^zombieleader (\d+) (\d+)$`, 10*time.Second)
	var m, l int
	fmt.Sscan(got[1]+" "+got[2], &m, &l)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if st, err := crtest.State(l); err == nil && st == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("L %d is no zombie", l)
		}
	}
	all := append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
	t.Cleanup(func() { crtest.KillAll(t, all) })
	if ids := nsIDs(t, p.Pid); !strings.HasPrefix(ids[m], fmt.Sprintf("ppid %d ", p.Pid)) || !strings.HasSuffix(ids[m], fmt.Sprintf(" sid %d", l)) {
		t.Fatalf("M %d: %s; want an orphan of the root in session %d", m, ids[m], l)
	}
	n := restoreShape(t, p, all)
	if st, err := crtest.State(l); err != nil || st != 'Z' {
		t.Errorf("L after restore: state %c, %v; want a zombie", st, err)
	}
	waitCounts(t, p, n, "M")
}
