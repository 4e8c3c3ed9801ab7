//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
	pb "github.com/crhook/crhook/proto"
)

type taskFd struct{ pid, fd int }

// openFiles partitions every fd of pids into open files, with
// kcmp(KCMP_FILE) against one representative per open file already seen.
func openFiles(t *testing.T, pids []int) map[taskFd]int {
	t.Helper()
	type rep struct {
		taskFd
		class int
	}
	reps := map[string][]rep{}
	out := map[taskFd]int{}
	next := 0
	for _, pid := range pids {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			fd, _ := strconv.Atoi(e.Name())
			var st unix.Stat_t
			if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), &st); err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
			class := -1
			for _, r := range reps[key] {
				v, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(r.pid), uintptr(pid), 0, uintptr(r.fd), uintptr(fd), 0)
				if errno != 0 {
					t.Fatalf("kcmp: %v", errno)
				}
				if v == 0 {
					class = r.class
					break
				}
			}
			if class < 0 {
				class = next
				next++
				reps[key] = append(reps[key], rep{taskFd{pid, fd}, class})
			}
			out[taskFd{pid, fd}] = class
		}
	}
	return out
}

// TestSharedFilesKcmp: 1000 fds of one open file in ten processes are
// dumped as one file, and after restore two fds share an open file
// exactly when they did at dump time.
func TestSharedFilesKcmp(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "share", false)
	data := filepath.Join(t.TempDir(), "data")
	p := crtest.Start(t, bin, data)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, l := range p.Lines() {
			if len(l) > 5 && l[:5] == "ready" {
				n++
			}
		}
		if n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 10 processes ready", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	pids := append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
	sort.Ints(pids)
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	before := openFiles(t, pids)
	shared := 0
	for k, c := range before {
		if k.fd == 100 && c == before[taskFd{p.Pid, 150}] {
			shared++
		}
	}
	if len(before) < 1000 || shared != 10 {
		t.Fatalf("%d fds, fd 100 shared by %d processes: the program did not set up", len(before), shared)
	}

	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, pids, 5*time.Second)
	_, msgs, err := crcore.DecodeImage(filepath.Join(dir, "files.img"))
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	for _, m := range msgs {
		if f, ok := m.(*pb.FileEntry); ok && f.GetReg().GetName() == data {
			entries++
		}
	}
	// One open file behind the 1000 fds, the root's second open, and one
	// per child: 11 file entries, not 1000.
	if entries != 11 {
		t.Errorf("files.img has %d entries for %s, want 11 (one per open file)", entries, data)
	}

	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	after := openFiles(t, pids)
	if len(after) != len(before) {
		t.Fatalf("%d fds after restore, %d before", len(after), len(before))
	}
	// The partitions must be the same: a bijection between classes.
	fwd, back := map[int]int{}, map[int]int{}
	for k, c := range before {
		a, ok := after[k]
		if !ok {
			t.Fatalf("fd %d of pid %d missing after restore", k.fd, k.pid)
		}
		if x, seen := fwd[c]; seen && x != a {
			t.Fatalf("fd %d of pid %d: fds that shared an open file no longer do", k.fd, k.pid)
		}
		if x, seen := back[a]; seen && x != c {
			t.Fatalf("fd %d of pid %d: fds that did not share an open file now do", k.fd, k.pid)
		}
		fwd[c], back[a] = a, c
	}
	// And the shared offset works: ten one-byte writes through fd 100.
	st0, _ := os.Stat(data)
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGUSR1)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		st, _ := os.Stat(data)
		if st.Size() == st0.Size()+10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("data file is %d bytes, want %d: the shared offset was lost", st.Size(), st0.Size()+10)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
