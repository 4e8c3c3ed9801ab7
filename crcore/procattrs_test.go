//go:build linux && amd64

package crcore_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

// oom_score_adj and the login uid of each thread come back. (A lower
// oom_score_adj than the restorer's needs CAP_SYS_RESOURCE, which the
// project's machines do not grant.)
func TestOOMScoreAdjLoginuid(t *testing.T) {
	crtest.RequireRoot(t)
	if _, err := os.Stat("/proc/self/loginuid"); err != nil {
		t.Skipf("no audit login uid in this kernel (CONFIG_AUDIT): %v", err)
	}
	p := startKind(t, "procattrs", "345", "4242")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	read := func(name string) string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := read("oom_score_adj"); got != "345" {
		t.Errorf("oom_score_adj %s after restore, want 345", got)
	}
	if got := read("loginuid"); got != "4242" {
		t.Errorf("loginuid %s after restore, want 4242", got)
	}
	goAndWait(t, p, pid, 1)
	for _, w := range []string{"main oom_score_adj 345 loginuid 4242", "worker loginuid 4242"} {
		if !slices.Contains(p.Lines(), w) {
			t.Errorf("no %q in the log:\n%s", w, strings.Join(p.Lines(), "\n"))
		}
	}
}
