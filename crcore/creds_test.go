//go:build linux && amd64

package crcore_test

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// Credentials, capability sets, securebits, no_new_privs, parent-death
// signal, child subreaper, dumpable and rlimits come back, and act; the
// rlimits read with prlimit from here, and asked of the task itself (the
// path of a refusal).
func TestCredsRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	for _, inside := range []bool{false, true} {
		t.Run(map[bool]string{false: "rlimits-from-here", true: "rlimits-inside"}[inside], func(t *testing.T) {
			if inside {
				defer crcore.SetRlimitsInside()()
			}
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
		})
	}
}

func TestThreadCredsRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "threadcreds", true)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^ready$`, 10*time.Second)
	creds := func(pid int) map[string]string {
		out := map[string]string{}
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range ents {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				for _, k := range []string{"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"} {
					if strings.HasPrefix(l, k) {
						keep = append(keep, l)
					}
				}
			}
			out[e.Name()] = strings.Join(keep, " ")
		}
		return out
	}
	before := creds(p.Pid)
	distinct := map[string]bool{}
	for _, c := range before {
		distinct[c] = true
	}
	if len(before) != 3 || len(distinct) != 2 {
		t.Fatalf("threads' credentials before the dump: %v", before)
	}
	n := roundTrip(t, p)
	if after := creds(p.Pid); !maps.Equal(after, before) {
		t.Errorf("threads' credentials after restore:\n%v\nbefore:\n%v", after, before)
	}
	for _, who := range []string{"t0", "t1", "t2"} {
		lineAfter(t, p, n, `^`+who+` count \d+ `)
	}
}
