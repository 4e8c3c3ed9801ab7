//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// TestSocketpairAcrossTasks: a socketpair whose ends are held by a parent
// and its child (a master and its worker) is restored as one pair.
func TestSocketpairAcrossTasks(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "sockfork", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^got pong 5$`, 10*time.Second)
	pids := append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, pids, 5*time.Second)
	n := len(p.Lines())
	last := strings.TrimPrefix(p.Lines()[n-1], "got pong ")
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() {
		for _, pid := range append([]int{res.Pid}, crtest.Descendants(res.Pid)...) {
			crtest.KillAndReap(pid)
		}
	})
	var k int
	fmt.Sscan(last, &k)
	p.WaitLine(t, fmt.Sprintf(`^got pong %d$`, k+10), 10*time.Second)
	for _, l := range p.Lines()[n:] {
		if strings.HasPrefix(l, "lost") {
			t.Fatalf("the pair broke after restore: %s", l)
		}
	}
}
