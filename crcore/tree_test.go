//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// treeIDs collects the last "NAME pid P ppid Q pgid G sid S" line of each
// process of the tree program.
func treeIDs(p *crtest.Proc) map[string]string {
	rx := regexp.MustCompile(`^(root|A|B|C) (pid .*)$`)
	out := map[string]string{}
	for _, l := range p.Lines() {
		if m := rx.FindStringSubmatch(l); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}

func zombieStatus(t *testing.T, pid int) (byte, string, int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	comm := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var code int
	fmt.Sscan(f[len(f)-1], &code)
	return f[0][0], comm, code
}

func TestTreeRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "tree", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^C got t5$`, 10*time.Second)
	before := treeIDs(p)
	if len(before) != 4 {
		t.Fatalf("tree did not start: %v", before)
	}
	kids := crtest.ChildrenOf(p.Pid)
	sort.Ints(kids)
	if len(kids) != 3 {
		t.Fatalf("root has children %v, want 3", kids)
	}
	zombie := kids[2]
	zst, zcomm, zcode := zombieStatus(t, zombie)
	if zst != 'Z' || zcode != 7<<8 {
		t.Fatalf("pid %d should be a zombie of status 7, state %c code %#x", zombie, zst, zcode)
	}
	all := append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
	t.Cleanup(func() {
		for _, pid := range all {
			unix.Kill(pid, unix.SIGKILL)
		}
	})

	dir := filepath.Join(t.TempDir(), "img")
	res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if len(res.Pids) != len(all) {
		t.Errorf("dumped pids %v, the tree has %v", res.Pids, all)
	}
	crtest.ReapGone(t, all, 5*time.Second)
	gotBefore := len(p.Lines())

	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
	after := append([]int{rr.Pid}, crtest.Descendants(rr.Pid)...)
	sort.Ints(after)
	sort.Ints(all)
	if fmt.Sprint(after) != fmt.Sprint(all) {
		t.Errorf("restored tree %v, dumped %v", after, all)
	}
	st, comm, code := zombieStatus(t, zombie)
	if st != 'Z' || comm != zcomm || code != zcode {
		t.Errorf("zombie %d restored as state %c comm %q exit code %#x, want Z %q %#x", zombie, st, comm, code, zcomm, zcode)
	}

	// Everyone goes on: the pipe from B to C carries new tokens, and
	// the ids each process reports are those it had.
	p.WaitLine(t, `^C got t`+fmt.Sprint(countTokens(p.Lines()[:gotBefore])+10)+`$`, 10*time.Second)
	checkTreeIDs(t, p, gotBefore, after, before)
	for _, l := range p.Lines()[gotBefore:] {
		if strings.HasPrefix(l, "C read") {
			t.Errorf("C lost its pipe: %s", l)
		}
	}
}

// checkTreeIDs asks every process of a restored tree program (pids) for
// its ids and checks they are those of before; the log's first n lines
// predate the restore.
func checkTreeIDs(t *testing.T, p *crtest.Proc, n int, pids []int, before map[string]string) {
	t.Helper()
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGUSR1)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := 0
		for _, l := range p.Lines()[n:] {
			if strings.Contains(l, " pid ") {
				got++
			}
		}
		if got >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d processes reported their ids after restore", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	after := treeIDs(p)
	for name, ids := range before {
		if after[name] != ids {
			t.Errorf("%s: %q after restore, %q before", name, after[name], ids)
		}
	}
}

func countTokens(lines []string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "C got ") {
			n++
		}
	}
	return n
}

func TestThreadsRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "threads", false)
	p := crtest.Start(t, bin, "4")
	p.WaitLine(t, `^thread 3 count 5 `, 10*time.Second)
	tasks := func(pid int) map[string]string {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		out := map[string]string{}
		for _, e := range ents {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, e.Name()))
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
			// The CPUs too: the restore runs the threads on
			// its tracer's CPU until it lets them go.
			var blk, cpus string
			for _, l := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(l, "SigBlk:") {
					blk = l
				}
				if strings.HasPrefix(l, "Cpus_allowed_list:") {
					cpus = strings.Join(strings.Fields(l), " ")
				}
			}
			out[e.Name()] = strings.TrimSpace(string(comm)) + " " + blk + " " + cpus
		}
		return out
	}
	before := tasks(p.Pid)
	if len(before) != 5 {
		t.Fatalf("threads: %v", before)
	}
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.Reap(p.Pid)
	last := map[string]int{}
	rx := regexp.MustCompile(`^thread (\d) count (\d+) tid (\d+)$`)
	n := len(p.Lines())
	for _, l := range p.Lines() {
		if m := rx.FindStringSubmatch(l); m != nil {
			var c int
			fmt.Sscan(m[2], &c)
			last[m[1]] = c
		}
	}
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	after := tasks(res.Pid)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("threads (tid: name mask cpus) after restore %v, before %v", after, before)
	}
	p.WaitLine(t, fmt.Sprintf(`^thread 0 count %d `, last["0"]+20), 10*time.Second)
	first := map[string]bool{}
	for _, l := range p.Lines()[n:] {
		m := rx.FindStringSubmatch(l)
		if m == nil || first[m[1]] {
			continue
		}
		first[m[1]] = true
		var c int
		fmt.Sscan(m[2], &c)
		if c != last[m[1]]+1 {
			t.Errorf("thread %s: first count after restore %d, dumped at %d", m[1], c, last[m[1]])
		}
	}
	if len(first) != 4 {
		t.Errorf("only threads %v counted after restore", first)
	}
}
