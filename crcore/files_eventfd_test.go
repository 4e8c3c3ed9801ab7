//go:build linux && amd64

package crcore_test

import (
	"slices"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

// eventfd counters (one above 32 bits), the semaphore mode, flags and
// close-on-exec survive; the semaphore still hands out one at a time.
func TestEventfdRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "eventfd")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 1)
	r := run(p.Lines(), 1)
	sameState(t, p.Lines(), r)
	var got []string
	for _, l := range r {
		if len(tagged([]string{l}, "after")) == 0 {
			got = append(got, l)
		}
	}
	want := []string{"e1 0x100000007", "e2 1", "e2 1", "e2 1", "e2 ready after 3 reads: 0", "e3 -1 errno 11"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
