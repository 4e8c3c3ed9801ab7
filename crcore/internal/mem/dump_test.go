//go:build linux

package mem

import (
	"testing"

	"github.com/crhook/crhook/crcore/internal/procfs"
)

// TestSameFrame: a page is the parent's only when both map the same
// frame as an anonymous page mapped more than once.
func TestSameFrame(t *testing.T) {
	shared := func(pfn uint64) uint64 { return procfs.PMPresent | pfn }
	cases := []struct {
		name  string
		e, pe uint64
		want  bool
	}{
		{"one frame", shared(42), shared(42), true},
		{"other frames", shared(42), shared(43), false},
		{"hidden frame numbers", shared(0), shared(0), false},
		{"the task's own", shared(42) | procfs.PMExclusive, shared(42), false},
		{"the parent's own", shared(42), shared(42) | procfs.PMExclusive, false},
		{"a file page", shared(42) | procfs.PMFileShared, shared(42) | procfs.PMFileShared, false},
		{"not present", 0, 0, false},
	}
	for _, c := range cases {
		if got := sameFrame(c.e, c.pe); got != c.want {
			t.Errorf("%s: sameFrame = %v, want %v", c.name, got, c.want)
		}
	}
}
