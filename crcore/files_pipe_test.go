//go:build linux && amd64

package crcore_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// Helpers for the fd-kind tests (files_*_test.go): each program of
// testdata/<kind>.c logs "ready" once its files are set up, waits for
// SIGUSR1, proves its state and logs "done".

// startKind builds and starts testdata/NAME.c and waits until it is ready.
func startKind(t *testing.T, name string, args ...string) *crtest.Proc {
	t.Helper()
	bin := crtest.BuildC(t, name, false)
	p := crtest.Start(t, append([]string{bin}, args...)...)
	p.WaitLine(t, `^ready$`, 5*time.Second)
	return p
}

// dumpKind dumps pid; unless leaveRunning, it checks that the dump
// killed it and reaps it.
func dumpKind(t *testing.T, pid int, leaveRunning bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: dir, LeaveRunning: leaveRunning}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if !leaveRunning {
		ws, err := crtest.Reap(pid)
		if err != nil || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
			t.Fatalf("dumped process should be killed: %v %v", ws, err)
		}
	}
	return dir
}

func restoreKind(t *testing.T, dir string) int {
	t.Helper()
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	return res.Pid
}

// goAndWait sends SIGUSR1 and waits for the n-th "done" of the log.
func goAndWait(t *testing.T, p *crtest.Proc, pid, n int) {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := 0
		for _, l := range p.Lines() {
			if l == "done" {
				c++
			}
			if strings.HasPrefix(l, "fail ") {
				t.Fatalf("program: %s", l)
			}
		}
		if c >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d-th \"done\" in the log:\n%s", n, strings.Join(p.Lines(), "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tagged returns the lines "TAG rest" of lines, as "rest".
func tagged(lines []string, tag string) []string {
	var out []string
	for _, l := range lines {
		if r, ok := strings.CutPrefix(l, tag+" "); ok {
			out = append(out, r)
		}
	}
	return out
}

// run returns the lines of the n-th run (1-based) after "ready": a run
// ends with "done".
func run(lines []string, n int) []string {
	var cur []string
	k := 0
	started := false
	for _, l := range lines {
		switch {
		case l == "ready":
			started = true
		case !started:
		case l == "done":
			k++
			if k == n {
				return cur
			}
			cur = nil
		default:
			cur = append(cur, l)
		}
	}
	return nil
}

// sameState checks that the "before" lines logged at setup equal the
// "after" lines of one run.
func sameState(t *testing.T, lines, runLines []string) {
	t.Helper()
	before, after := tagged(lines, "before"), tagged(runLines, "after")
	if len(before) == 0 || !slices.Equal(before, after) {
		t.Errorf("state after restore differs:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
}

// Pipes with queued data come back byte-exact with their size, flags and
// close-on-exec; the dump does not consume the data (the original, left
// running, reads the same bytes); a pipe at fd 0 whose write end the task
// holds is restored, not taken for an external stream.
func TestPipeRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "pipe")
	dir := dumpKind(t, p.Pid, true)

	want := []string{
		"a len=100000 hash=", // hash checked equal between the runs
		"stdin 10 stdin-data",
		"d 6 orphan then 0",
		"b 4 ping",
		"e 2 xy",
	}
	check := func(r []string) {
		t.Helper()
		var got []string
		for _, l := range r {
			if !strings.HasPrefix(l, "after ") {
				got = append(got, l)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("run lines %q", got)
		}
		if !strings.HasPrefix(got[0], want[0]) || !strings.HasSuffix(got[0], "exact=1") {
			t.Errorf("pipe a: %q, want 100000 exact bytes", got[0])
		}
		if !slices.Equal(got[1:], want[1:]) {
			t.Errorf("got %q, want %q", got[1:], want[1:])
		}
	}

	// The original reads its pipes after the dump: nothing was consumed.
	goAndWait(t, p, p.Pid, 1)
	first := run(p.Lines(), 1)
	check(first)
	sameState(t, p.Lines(), first)
	crtest.KillAndReap(p.Pid)

	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 2)
	second := run(p.Lines(), 2)
	check(second)
	sameState(t, p.Lines(), second)
	if first[len(first)-5] != second[len(second)-5] {
		t.Errorf("pipe data differs: original read %q, restored %q", first[len(first)-5], second[len(second)-5])
	}
}
