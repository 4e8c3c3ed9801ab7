//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// TestSysvIPC: a tree in an IPC namespace of its own comes back in a new
// one holding its segment (contents, attached in both processes and
// shared again), semaphore values and queued messages, each with its id.
func TestSysvIPC(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "sysv", false)
	p := crtest.Start(t, bin)
	m := p.WaitLine(t, `^ready shm (\d+) sem (\d+) msg (\d+)$`, 10*time.Second)
	p.WaitLine(t, `^ready child$`, 10*time.Second)
	kids := crtest.ChildrenOf(p.Pid)
	if len(kids) != 1 {
		t.Fatalf("children %v", kids)
	}
	kid := kids[0]
	dir := filepath.Join(t.TempDir(), "img")
	res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, res.Pids, 5*time.Second)
	for _, f := range []string{"ipcns-shm-1.img", "ipcns-sem-1.img", "crhook-ipc.img"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("image %s: %v", f, err)
		}
	}
	r, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(kid); crtest.KillAndReap(r.Pid) })
	var a, b unix.Stat_t
	unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", r.Pid), &a)
	unix.Stat("/proc/self/ns/ipc", &b)
	if a.Ino == b.Ino {
		t.Errorf("the restored tree is in our IPC namespace, not one of its own")
	}
	unix.Kill(kid, unix.SIGUSR1)
	p.WaitLine(t, `^child wrote$`, 5*time.Second)
	unix.Kill(r.Pid, unix.SIGUSR1)
	p.WaitLine(t, fmt.Sprintf(`^parent shm sysv-1 child-2 sem 1 2 3 msg 1:hello,2:world ids %s %s %s$`, m[1], m[2], m[3]), 5*time.Second)
}
