//go:build linux && amd64

package crcore_test

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
)

// timerRemaining reads it_value of a timerfd from fdinfo.
func timerRemaining(t *testing.T, pid, fd int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`it_value: \((\d+), (\d+)\)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("fdinfo %d of pid %d: no it_value:\n%s", fd, pid, b)
	}
	s, _ := strconv.ParseInt(string(m[1]), 10, 64)
	ns, _ := strconv.ParseInt(string(m[2]), 10, 64)
	return time.Duration(s)*time.Second + time.Duration(ns)
}

// A timerfd keeps its clock, flags, interval and pending expirations;
// the time between dump and restore does not count against the time
// remaining; after the restore it fires when that time is up, then at its
// interval.
func TestTimerfdRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "timerfd")
	m := p.WaitLine(t, `^fds (\d+) (\d+) (\d+)$`, time.Second)
	t1, _ := strconv.Atoi(m[1])

	v0 := timerRemaining(t, p.Pid, t1)
	dir := dumpKind(t, p.Pid, false)
	const away = 800 * time.Millisecond
	time.Sleep(away)
	pid := restoreKind(t, dir)
	v1 := timerRemaining(t, pid, t1)
	// Frozen while checkpointed: the restored timer lost at most the
	// dump and restore themselves, not the time away.
	if v1 > v0 || v1 < v0-away/2 {
		t.Errorf("remaining %v before dump, %v after restore (%v away)", v0, v1, away)
	}
	goAndWait(t, p, pid, 1)
	r := run(p.Lines(), 1)
	sameState(t, p.Lines(), r)
	p.WaitLine(t, `^t2 ticks 1$`, time.Second)
	first := p.WaitLine(t, `^t1 first (\d+) after (\d+)$`, time.Second)
	second := p.WaitLine(t, `^t1 second (\d+) after (\d+)$`, time.Second)
	ms1, _ := strconv.Atoi(first[2])
	ms2, _ := strconv.Atoi(second[2])
	if first[1] != "1" || second[1] != "1" {
		t.Errorf("expirations %s and %s, want 1 each", first[1], second[1])
	}
	if d := time.Duration(ms1) * time.Millisecond; d > v1+300*time.Millisecond || d < v1-500*time.Millisecond {
		t.Errorf("first expiration %v after go, remaining at restore %v", d, v1)
	}
	if ms2 < 600 || ms2 > 900 {
		t.Errorf("second expiration %d ms after the first, interval 700 ms", ms2)
	}
	rem := p.WaitLine(t, `^t3 remaining (\d+)$`, time.Second)
	if s, _ := strconv.Atoi(rem[1]); s < 50 || s > 60 {
		t.Errorf("absolute timer: %s s remaining, want about a minute", rem[1])
	}
}
