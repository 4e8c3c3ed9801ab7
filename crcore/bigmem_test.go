//go:build linux && amd64

package crcore_test

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// TestLargeMemoryRoundTrip dumps and restores a process with more memory
// than one worker copies (the dump splits the pages file in shares, each
// checksummed apart and combined; the restore fills in parallel): every
// byte comes back (memhog rehashes its memory on SIGUSR1), and the
// checksums written without reading back agree with the files (restore
// verifies them first).
func TestLargeMemoryRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "memhog", true)
	p := crtest.Start(t, bin, "96")
	p.WaitLine(t, `^ready$`, 60*time.Second)
	n := roundTrip(t, p)
	unix.Kill(p.Pid, unix.SIGUSR1)
	if got := lineAfter(t, p, n, `^check (ok|bad)$`); got[1] != "ok" {
		t.Fatal("restored memory differs from the dumped memory")
	}
}
