//go:build linux && amd64

package crcore_test

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// A signalfd keeps its mask and flags, and still receives the blocked
// signal sent after the restore.
func TestSignalfdRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "signalfd")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	if err := unix.Kill(pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	goAndWait(t, p, pid, 1)
	sameState(t, p.Lines(), run(p.Lines(), 1))
	p.WaitLine(t, `^signal 12$`, time.Second)
}
