//go:build linux && amd64

package crcore_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

// Credentials, capability sets, securebits, no_new_privs, parent-death
// signal, child subreaper, dumpable and rlimits come back, and act.
func TestCredsRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "creds")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 1)
	sameState(t, p.Lines(), run(p.Lines(), 1))
	for _, want := range []string{
		"before Uid:\t1001\t1002\t1003\t1002", "before CapAmb:\t0000000000000020", "before NoNewPrivs:\t1",
		"before securebits 0x50 pdeathsig 28 subreaper 1 dumpable 1", "before nofile 512 1024",
		"bind80 0", "setuid0 1",
	} {
		if !slices.Contains(p.Lines(), want) {
			t.Errorf("no %q in the log:\n%s", want, strings.Join(p.Lines(), "\n"))
		}
	}
}
