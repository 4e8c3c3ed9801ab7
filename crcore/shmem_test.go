//go:build linux && amd64

package crcore_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// TestSharedMemory: MAP_SHARED|MAP_ANONYMOUS memory inherited across
// fork, a memfd mapped and open, and a memfd only mapped (shared and
// private) come back shared between parent and child: what the restored
// child writes, the restored parent reads; each object's pages are in
// the image once.
func TestSharedMemory(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "shmem", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^ready \d+$`, 10*time.Second)
	m := p.WaitLine(t, `^ready (\d+)$`, 10*time.Second)
	_ = m
	var kid int
	for _, c := range crtest.ChildrenOf(p.Pid) {
		kid = c
	}
	if kid == 0 {
		t.Fatal("no child")
	}
	p.WaitLine(t, `^ready `+strconv.Itoa(kid)+`$`, 10*time.Second)
	p.WaitLine(t, `^ready `+strconv.Itoa(p.Pid)+`$`, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "img")
	res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, res.Pids, 5*time.Second)
	if shm, _ := filepath.Glob(filepath.Join(dir, "pagemap-shmem-*.img")); len(shm) != 1 {
		t.Errorf("pagemap-shmem images: %v, want one (the shared anonymous object, once)", shm)
	}

	r, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(kid); crtest.KillAndReap(r.Pid) })
	unix.Kill(kid, unix.SIGUSR1)
	p.WaitLine(t, `^child wrote$`, 5*time.Second)
	unix.Kill(r.Pid, unix.SIGUSR1)
	p.WaitLine(t, `^parent a=parent-1 child-1 child-2 b=child-b child-b2 c=parent-c child-c2 p=private-p fd=child-b$`, 5*time.Second)
}
