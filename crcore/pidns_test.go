//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// TestRestoreNewPidns dumps a tree that is its own pid namespace (its
// root is pid 1 there, as a container's init is) and restores it into a
// new pid namespace.
func TestRestoreNewPidns(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "tree", false)
	log := filepath.Join(t.TempDir(), "log")
	cmd := exec.Command(bin, log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &crtest.Proc{Pid: cmd.Process.Pid, Log: log, Cmd: cmd}
	t.Cleanup(func() { crtest.KillAndReap(p.Pid) })
	p.WaitLine(t, `^C got t5$`, 10*time.Second)
	before := treeIDs(p)
	if !strings.HasPrefix(before["root"], "pid 1 ") {
		t.Fatalf("the tree's root should be pid 1 of its namespace: %q", before["root"])
	}
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	cmd.Wait()
	n := len(p.Lines())

	if _, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir}); err == nil || !strings.Contains(err.Error(), "--pidns new") {
		t.Fatalf("restoring a pid 1 without a new namespace: %v, want an error naming --pidns new", err)
	}
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir, NewPidNS: true})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	p.WaitLine(t, fmt.Sprintf(`^C got t%d$`, countTokens(p.Lines()[:n])+10), 10*time.Second)
	checkTreeIDs(t, p, n, append([]int{res.Pid}, crtest.Descendants(res.Pid)...), before)
}
