//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
