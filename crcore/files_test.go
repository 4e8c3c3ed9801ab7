//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// kcmpFile reports whether fd1 of pid1 and fd2 of pid2 are the same open
// file description (kcmp(KCMP_FILE) == 0).
func kcmpFile(t *testing.T, pid1, fd1, pid2, fd2 int) bool {
	t.Helper()
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), 0 /* KCMP_FILE */, uintptr(fd1), uintptr(fd2), 0)
	if errno != 0 {
		t.Fatalf("kcmp(%d:%d, %d:%d): %v", pid1, fd1, pid2, fd2, errno)
	}
	return r == 0
}

// The regular files, directory and devices a process holds come back at
// the same fd numbers, naming the same files, at the same positions, with
// the same status flags and close-on-exec; two fds that shared an open
// file share it again; and the program can go on using them.
func TestFilesRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "files", false)
	dir := filepath.Join(t.TempDir(), "files")
	const data = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	const high = "high:vwxyz-0123"
	contents := map[string]string{
		"data": data, "append": "start\n", "rw": "read-write file",
		"shared": "shared between two fds, positioned twice", "high": high,
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, c := range contents {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	p := crtest.Start(t, bin, dir)
	p.WaitLine(t, `^ready$`, 5*time.Second)
	m := p.WaitLine(t, `^fds (.*)$`, time.Second)
	fd := map[string]int{}
	for _, kv := range regexp.MustCompile(`(\w+)=(\d+)`).FindAllStringSubmatch(m[1], -1) {
		fd[kv[1]], _ = strconv.Atoi(kv[2])
	}
	if len(fd) != 9 || fd["high"] != 1000 {
		t.Fatalf("fds line %q", m[0])
	}

	before := crtest.Files(t, p.Pid)
	// What the program set up, as the kernel shows it: the test checks
	// its own premises before it checks crhook.
	want := []struct {
		name  string
		path  string
		pos   int64
		flags uint32 // must be set
		not   uint32 // must be clear
	}{
		{"ro", filepath.Join(dir, "data"), 10, 0, unix.O_ACCMODE | unix.O_CLOEXEC},
		{"app", filepath.Join(dir, "append"), 0, unix.O_WRONLY | unix.O_APPEND, unix.O_CLOEXEC},
		{"rw", filepath.Join(dir, "rw"), 3, unix.O_RDWR | unix.O_CLOEXEC, 0},
		{"dir", dir, 0, unix.O_DIRECTORY, unix.O_ACCMODE | unix.O_CLOEXEC},
		{"null", "/dev/null", 0, unix.O_WRONLY, unix.O_CLOEXEC},
		{"zero", "/dev/zero", 0, 0, unix.O_ACCMODE | unix.O_CLOEXEC},
		{"sh", filepath.Join(dir, "shared"), 7, unix.O_RDWR, unix.O_CLOEXEC},
		{"shdup", filepath.Join(dir, "shared"), 7, unix.O_RDWR, unix.O_CLOEXEC},
		{"high", filepath.Join(dir, "high"), 5, 0, unix.O_ACCMODE | unix.O_CLOEXEC},
	}
	for _, w := range want {
		f, ok := before[fd[w.name]]
		if !ok || f.Link != w.path || f.Pos != w.pos || f.Flags&w.flags != w.flags || f.Flags&w.not != 0 {
			t.Fatalf("test setup: fd %s=%d is %+v, want %s at %d with flags %#o set and %#o clear", w.name, fd[w.name], f, w.path, w.pos, w.flags, w.not)
		}
	}
	if !kcmpFile(t, p.Pid, fd["sh"], p.Pid, fd["shdup"]) {
		t.Fatal("test setup: dup'ed fds are not one open file")
	}

	imgs := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: imgs}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if ws, err := crtest.Reap(p.Pid); err != nil || !ws.Signaled() {
		t.Fatalf("dumped process should be killed: %v %v", ws, err)
	}
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: imgs})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })

	after := crtest.Files(t, res.Pid)
	var nums []int
	for n := range before {
		nums = append(nums, n)
	}
	for n := range after {
		if _, ok := before[n]; !ok {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	for _, n := range nums {
		b, a := before[n], after[n]
		if b != a {
			t.Errorf("fd %d: dumped %s, restored %s", n, describe(b), describe(a))
		}
	}
	if !kcmpFile(t, res.Pid, fd["sh"], res.Pid, fd["shdup"]) {
		t.Errorf("fds %d and %d shared one open file before the dump, two after the restore", fd["sh"], fd["shdup"])
	}
	if kcmpFile(t, res.Pid, fd["ro"], res.Pid, fd["high"]) {
		t.Errorf("fds %d and %d are distinct open files, restored as one", fd["ro"], fd["high"])
	}

	// The program uses them: reads continue at the dumped positions, an
	// O_APPEND write lands at the end, the devices work.
	if err := unix.Kill(res.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ioLine := p.WaitLine(t, `^io (.*)$`, 5*time.Second)
	wantIO := fmt.Sprintf("ro=%s high=%s zero=00000000 app=4 null=2", data[10:18], high[5:9])
	if ioLine[1] != wantIO {
		t.Errorf("restored program's I/O: %q, want %q", ioLine[1], wantIO)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "append")); string(b) != "start\ntail" {
		t.Errorf("append file holds %q, want %q", b, "start\ntail")
	}
	// A seek through one of the shared fds moves the other.
	if err := unix.Kill(res.Pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	p.WaitLine(t, `^seeked$`, 5*time.Second)
	now := crtest.Files(t, res.Pid)
	if got := now[fd["shdup"]].Pos; got != 20 {
		t.Errorf("lseek(%d, 20) left its dup %d at %d, want 20 (one shared offset)", fd["sh"], fd["shdup"], got)
	}
	if got := now[fd["ro"]].Pos; got != 18 {
		t.Errorf("fd %d at %d after reading 8 bytes from 10, want 18", fd["ro"], got)
	}
	for _, l := range p.Lines() {
		if len(l) >= 3 && l[:3] == "err" {
			t.Errorf("program logged %q", l)
		}
	}
}

func describe(f crtest.OpenFile) string {
	if f.Link == "" {
		return "nothing"
	}
	return fmt.Sprintf("%s (dev %d ino %d) pos %d flags %#o", f.Link, f.Dev, f.Ino, f.Pos, f.Flags)
}
