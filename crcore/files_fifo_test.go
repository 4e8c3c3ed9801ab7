//go:build linux && amd64

package crcore_test

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// A FIFO open for reading and for writing comes back by its path with
// its queued data, size, flags and close-on-exec.
func TestFifoRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startKind(t, "fifo", fifo)
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 1)
	sameState(t, p.Lines(), run(p.Lines(), 1))
	p.WaitLine(t, `^read 16 through the fifo$`, time.Second)
}
