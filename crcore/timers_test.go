//go:build linux && amd64

package crcore_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

// POSIX timers keep their ids (sparse: two were deleted), clocks,
// sigevents (a SIGEV_THREAD_ID target among them), intervals and the
// time that remained; a periodic one goes on signalling its thread, and
// ITIMER_REAL with an interval goes on firing.
func TestTimersRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "timers")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 1)
	before, after := tagged(p.Lines(), "before"), tagged(run(p.Lines(), 1), "after")
	split := func(ls []string) (same, remain []string) {
		for _, l := range ls {
			if strings.HasPrefix(l, "remain ") {
				remain = append(remain, l)
			} else {
				same = append(same, l)
			}
		}
		slices.Sort(same)
		return same, remain
	}
	sb, rb := split(before)
	sa, ra := split(after)
	if len(sb) == 0 || !slices.Equal(sb, sa) {
		t.Errorf("timers after restore differ:\nbefore:\n%s\nafter:\n%s", strings.Join(sb, "\n"), strings.Join(sa, "\n"))
	}
	// Seconds left: never more than at the dump, and not reset to the
	// initial value either (the long timers lose at most a few seconds).
	want := map[string]string{"remain 0 ": "99", "remain 3 ": "49", "remain 4 ": "9", "remain 6 ": "19"}
	for _, l := range ra {
		for pre, digits := range want {
			if strings.HasPrefix(l, pre) && !strings.HasPrefix(strings.TrimPrefix(l, pre), digits) {
				t.Errorf("after restore %q; before %v", l, rb)
			}
		}
	}
	if !slices.Contains(p.Lines(), "alarms 1 fires 1 bad 0") {
		t.Errorf("timers do not fire right after restore:\n%s", strings.Join(p.Lines(), "\n"))
	}
}
