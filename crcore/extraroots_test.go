//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// TestDumpExtraRoots dumps two unrelated counters as one tree, the second
// as an extra root: it is restored as a child of the first, with its pid,
// and both count on.
func TestDumpExtraRoots(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", true)
	a, b := crtest.Start(t, bin), crtest.Start(t, bin)
	a.WaitLine(t, `^count 5$`, 10*time.Second)
	b.WaitLine(t, `^count 5$`, 10*time.Second)

	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: a.Pid, ImageDir: dir, ExtraRoots: []int{a.Pid}}); err == nil || !strings.Contains(err.Error(), "extra root") {
		t.Fatalf("dump with the root as an extra root: %v, want an error naming it", err)
	}
	res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: a.Pid, ImageDir: dir, ExtraRoots: []int{b.Pid}})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if len(res.Pids) != 2 {
		t.Fatalf("dumped pids %v, want both counters", res.Pids)
	}
	crtest.Reap(a.Pid)
	crtest.WaitGone(t, b.Pid, 10*time.Second)
	na, nb := len(a.Lines()), len(b.Lines())
	lastA, lastB := a.Counts()[len(a.Counts())-1], b.Counts()[len(b.Counts())-1]

	r, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(b.Pid); crtest.KillAndReap(r.Pid) })
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.Pid))
	if err != nil {
		t.Fatalf("the extra root was not restored with its pid %d: %v", b.Pid, err)
	}
	s := string(st)
	if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) < 2 || f[1] != strconv.Itoa(a.Pid) {
		t.Errorf("restored extra root %d: stat %q, want parent %d", b.Pid, s, a.Pid)
	}
	a.WaitLine(t, fmt.Sprintf(`^count %d$`, lastA+10), 10*time.Second)
	b.WaitLine(t, fmt.Sprintf(`^count %d$`, lastB+10), 10*time.Second)
	for _, c := range []struct {
		p    *crtest.Proc
		n    int
		last uint64
	}{{a, na, lastA}, {b, nb, lastB}} {
		if first := c.p.Lines()[c.n]; first != fmt.Sprintf("count %d", c.last+1) {
			t.Errorf("pid %d went on with %q, want count %d", c.p.Pid, first, c.last+1)
		}
	}
}
