//go:build linux && amd64

package crcore_test

import (
	"slices"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

// An epoll at a lower fd than its targets gets every target back with
// its events and data, and reports them ready as before; a target made
// ready after the restore is reported too.
func TestEpollRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "epoll")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 1)
	r := run(p.Lines(), 1)
	// fdinfo lists targets in the kernel's tree order (by file address).
	before, after := tagged(p.Lines(), "before"), tagged(r, "after")
	slices.Sort(before)
	slices.Sort(after)
	if len(before) != 5 || !slices.Equal(before, after) {
		t.Errorf("epoll state differs:\nbefore: %q\nafter:  %q", before, after)
	}
	want := []string{
		"ev1 data=2a events=1",
		"ev1 data=2b events=4",
		"ev1 data=1122334455667788 events=1",
		"ev2 data=2a events=1",
		"ev2 data=2b events=4",
		"ev2 data=2c events=1",
		"ev2 data=1122334455667788 events=1",
	}
	var got []string
	for _, l := range r {
		if len(tagged([]string{l}, "ev1")) > 0 || len(tagged([]string{l}, "ev2")) > 0 {
			got = append(got, l)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("ready events %q, want %q", got, want)
	}
}
