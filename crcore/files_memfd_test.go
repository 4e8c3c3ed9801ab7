//go:build linux && amd64

package crcore_test

import (
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
)

// memfds come back with their names, contents (a sparse one too), size,
// seals, positions and flags; a second open file of a memfd shares its
// inode again; the seals still hold.
func TestMemfdRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "memfd")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 1)
	sameState(t, p.Lines(), run(p.Lines(), 1))
	p.WaitLine(t, `^shrink -1 errno 1$`, time.Second) // EPERM: F_SEAL_SHRINK
	p.WaitLine(t, `^shared Z$`, time.Second)
}
