//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// smallTmpfs mounts a tmpfs of size bytes on a new temp dir, unmounted at
// test end.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("crhook-test", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// A dump onto a full file system fails saying so, leaves nothing of
// itself behind, and leaves the target running, untraced, every count in
// order.
func TestDumpFullDisk(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", false)
	for _, tc := range []struct {
		name   string
		exists bool // the image dir exists (with a file of the user's)
		leave  bool
	}{
		{"new dir", false, false},
		{"existing dir", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := smallTmpfs(t, "2m")
			p := crtest.Start(t, bin)
			waitCount(t, p, 3)
			before := codeHashes(t, p.Pid)
			dir := filepath.Join(mnt, "img")
			if tc.exists {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "keep.txt"), []byte("mine"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir, LeaveRunning: tc.leave})
			if err == nil {
				t.Fatal("dump of ~5 MiB onto a 2 MiB tmpfs succeeded")
			}
			if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "no space") {
				t.Errorf("dump error %q (%#v); want ENOSPC, saying no space", err, err)
			}
			t.Logf("dump: %v", err)
			// Nothing of the dump's is left.
			if tc.exists {
				ents, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				if len(ents) != 1 || ents[0].Name() != "keep.txt" {
					var names []string
					for _, e := range ents {
						names = append(names, e.Name())
					}
					t.Errorf("image dir after the failed dump holds %v, want only keep.txt", names)
				}
			} else if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the failed dump left %s (%v)", dir, err)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(mnt, &st); err != nil {
				t.Fatal(err)
			}
			if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 64<<10 {
				t.Errorf("%d bytes still used on the tmpfs after the failed dump", used)
			}
			waitUntraced(t, p.Pid)
			checkCounting(t, p)
			after := codeHashes(t, p.Pid)
			for line, h := range before {
				if after[line] != h {
					t.Errorf("code %s changed", line)
				}
			}
		})
	}
}

// A tree whose tasks fork and exit all the time is dumped again and again
// (LeaveRunning). Each dump either fails with an error, the target going
// on untraced, or succeeds; then the original is killed, the images are
// restored, and the restored tree, the next round's target, counts on.
func TestDumpForkingTree(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "forker", false)
	p := crtest.Start(t, bin)
	waitCount(t, p, 3)
	pid := p.Pid
	const rounds = 8
	ok := 0
	for i := 0; i < rounds; i++ {
		seen := p.Counts()
		dir := filepath.Join(t.TempDir(), "img")
		_, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: dir, LeaveRunning: true})
		waitUntraced(t, pid)
		for _, c := range kids(pid) {
			if tp, err := tracerPid(c); err == nil && tp != 0 {
				t.Fatalf("round %d: child %d of the target still traced by %d", i, c, tp)
			}
		}
		if err != nil {
			// A failure must say what went wrong, and change nothing.
			t.Logf("round %d: dump failed: %v", i, err)
			// A task exiting or being born mid-seize is no failure
			// (it is a zombie or not part of the dump); nor may it
			// pass for missing privilege.
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ESRCH) || strings.Contains(err.Error(), "exited") {
				t.Errorf("round %d: the dump lost a race with the tree: %v", i, err)
			}
			if _, serr := os.Stat(dir); serr == nil {
				t.Errorf("round %d: the failed dump left %s", i, dir)
			}
			waitCount(t, p, seen[len(seen)-1]+5)
			continue
		}
		ok++
		// The original goes on...
		waitCount(t, p, seen[len(seen)-1]+3)
		// ...until it is killed; the restore counts on from the dump.
		tree := append([]int{pid}, kids(pid)...)
		crtest.KillAndReap(pid)
		crtest.ReapGone(t, tree, 10*time.Second)
		last := p.Counts()
		res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir, PidWait: 5 * time.Second})
		if err != nil {
			t.Fatalf("round %d: restore: %v", i, err)
		}
		pid = res.Pid
		waitCount(t, p, last[len(last)-1]+5)
		os.RemoveAll(dir)
	}
	for _, l := range p.Lines() {
		if strings.HasPrefix(l, "bad child") || strings.Contains(l, "failed") {
			t.Errorf("the forker logged %q", l)
		}
	}
	t.Logf("%d of %d dumps succeeded", ok, rounds)
	if ok < rounds/2 {
		t.Errorf("only %d of %d dumps of the forking tree succeeded", ok, rounds)
	}
	crtest.KillAndReap(pid)
}

// kids lists the children of the single-threaded process pid (cheaper
// than crtest.Descendants, which scans /proc).
func kids(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
