// Package crtest helps tests drive real processes through checkpoint and
// restore: it builds the C test programs of crcore/testdata, starts them,
// follows their logs, waits for process states and hashes their memory.
// Like net/http/httptest, it is for tests only.
//
//go:build linux

package crtest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips a test that needs root, saying so.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (checkpoint/restore uses ptrace, clone3 set_tid and PR_SET_MM)")
	}
}

// BecomeSubreaper makes the test process reap orphans at once; PID 1 on
// this machine kind reaps late, which keeps pids taken.
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

// TestdataDir is crcore/testdata, found from this source file.
func TestdataDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

// BuildC compiles crcore/testdata/NAME.c once per test binary run, static
// or dynamic, and returns the executable's path.
func BuildC(tb testing.TB, name string, static bool) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := fmt.Sprintf("%s-%v", name, static)
	if p, ok := built[key]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "crtest-bin-")
		if err != nil {
			tb.Fatal(err)
		}
		buildDir = d
	}
	suffix := "-dyn"
	args := []string{"-O2", "-Wall", "-Werror"}
	if static {
		suffix = "-static"
		args = append(args, "-static")
	}
	out := filepath.Join(buildDir, name+suffix)
	args = append(args, "-o", out, filepath.Join(TestdataDir(), name+".c"))
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		tb.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	built[key] = out
	return out
}

// Cleanup removes what BuildC made; call it from TestMain.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Proc is a started test program.
type Proc struct {
	Pid int
	Log string
	Cmd *exec.Cmd
}

// Start runs argv with LOG as its first argument (a file in a temp dir)
// and returns once it has started. The process is killed at test end.
func Start(tb testing.TB, argv ...string) *Proc {
	tb.Helper()
	log := filepath.Join(tb.TempDir(), "log")
	args := append([]string{log}, argv[1:]...)
	cmd := exec.Command(argv[0], args...)
	cmd.Stdin = nil
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &Proc{Pid: cmd.Process.Pid, Log: log, Cmd: cmd}
	// Tests reap by pid (the process may be restored as another
	// incarnation); drop os.Process's pidfd so that it does not leak.
	cmd.Process.Release()
	tb.Cleanup(func() { KillAndReap(p.Pid) })
	return p
}

// Lines returns the log's lines.
func (p *Proc) Lines() []string {
	b, _ := os.ReadFile(p.Log)
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// WaitLine waits until a log line matches re and returns its submatches.
func (p *Proc) WaitLine(tb testing.TB, re string, timeout time.Duration) []string {
	tb.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range p.Lines() {
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		}
		if time.Now().After(deadline) {
			lines := p.Lines()
			if len(lines) > 10 {
				lines = lines[len(lines)-10:]
			}
			tb.Fatalf("pid %d: no log line matching %q within %v; last lines:\n%s", p.Pid, re, timeout, strings.Join(lines, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Counts returns the numbers of every "count N" line, in order.
func (p *Proc) Counts() []uint64 {
	var out []uint64
	for _, l := range p.Lines() {
		if v, ok := strings.CutPrefix(l, "count "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// State returns the state letter of /proc/PID/stat.
func State(pid int) (byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, errors.New("bad stat")
	}
	return b[i+2], nil
}

// WaitState waits until pid is in state st ('T' stopped, 'S' sleeping...).
func WaitState(tb testing.TB, pid int, st byte, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := State(pid)
		if err == nil && s == st {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pid %d: state %c (%v), want %c", pid, s, err, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Stop sends SIGSTOP and waits for the stop.
func Stop(tb testing.TB, pid int) {
	tb.Helper()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		tb.Fatal(err)
	}
	WaitState(tb, pid, 'T', 5*time.Second)
}

// KillAndReap kills pid and reaps it if it is our child.
func KillAndReap(pid int) {
	if unix.Kill(pid, unix.SIGKILL) != nil {
		return
	}
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
}

// Reap waits for our child pid to end and returns its status.
func Reap(pid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return ws, err
	}
}

// Maps returns /proc/PID/maps lines.
func Maps(tb testing.TB, pid int) []string {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// Mask is a byte range to leave out of a memory hash (kernel-written
// fields such as the rseq cpu id).
type Mask struct{ Addr, Len uint64 }

// HashVMAs returns sha256 of every mapping's contents by maps line, read
// through /proc/PID/mem; the kernel's [vvar] pages and [vsyscall] are left
// out, and so are the masked ranges. The process should be stopped.
func HashVMAs(tb testing.TB, pid int, masks ...Mask) map[string]string {
	tb.Helper()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer mem.Close()
	out := map[string]string{}
	for _, line := range Maps(tb, pid) {
		f := strings.Fields(line)
		if strings.HasPrefix(f[len(f)-1], "[vvar") || f[len(f)-1] == "[vsyscall]" {
			continue
		}
		se := strings.SplitN(f[0], "-", 2)
		start, _ := strconv.ParseUint(se[0], 16, 64)
		end, _ := strconv.ParseUint(se[1], 16, 64)
		buf := make([]byte, end-start)
		if _, err := mem.ReadAt(buf, int64(start)); err != nil {
			tb.Fatalf("read %s: %v", line, err)
		}
		for _, m := range masks {
			for a := m.Addr; a < m.Addr+m.Len; a++ {
				if a >= start && a < end {
					buf[a-start] = 0
				}
			}
		}
		h := sha256.Sum256(buf)
		out[line] = hex.EncodeToString(h[:])
	}
	return out
}

// OpenFds counts the fds of the calling process (for leak checks).
func OpenFds() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// CloexecInherited marks every fd above 2 that the test process inherited
// close-on-exec, so that test programs start with only their stdio (a
// stray inherited fd, such as a CI runner's pipe, would be dumped too).
func CloexecInherited() error {
	return unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}

// FdList describes the open fds of the calling process, for leak reports.
func FdList() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+" -> "+l)
	}
	return out
}

// StartStdin is Start with the program's standard input connected to
// stdin (a pipe end the test holds, say). The caller keeps stdin and
// closes it.
func StartStdin(tb testing.TB, stdin *os.File, argv ...string) *Proc {
	tb.Helper()
	log := filepath.Join(tb.TempDir(), "log")
	args := append([]string{log}, argv[1:]...)
	cmd := exec.Command(argv[0], args...)
	cmd.Stdin = stdin
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &Proc{Pid: cmd.Process.Pid, Log: log, Cmd: cmd}
	cmd.Process.Release()
	tb.Cleanup(func() { KillAndReap(p.Pid) })
	return p
}

// SyscallInfo is /proc/PID/syscall of a blocked task: the syscall it is
// in (Nr -1 when it is blocked outside any), its arguments, and the user
// stack pointer and instruction pointer the kernel saved.
type SyscallInfo struct {
	Nr     int64
	Args   [6]uint64
	SP, PC uint64
}

// ReadSyscall parses /proc/PID/syscall. It fails while the task runs.
func ReadSyscall(pid int) (SyscallInfo, error) {
	var si SyscallInfo
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	if err != nil {
		return si, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || f[0] == "running" {
		return si, errors.New("task is running")
	}
	if si.Nr, err = strconv.ParseInt(f[0], 10, 64); err != nil {
		return si, fmt.Errorf("syscall file %q: %w", b, err)
	}
	hex := func(s string) uint64 {
		v, e := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("syscall file %q: %w", b, e)
		}
		return v
	}
	switch {
	case si.Nr < 0 && len(f) == 3:
	case si.Nr >= 0 && len(f) == 9:
		for i := range si.Args {
			si.Args[i] = hex(f[1+i])
		}
	default:
		return si, fmt.Errorf("syscall file %q: unexpected layout", b)
	}
	si.SP, si.PC = hex(f[len(f)-2]), hex(f[len(f)-1])
	return si, err
}

// WaitSyscall waits until pid sleeps ('S') inside one of the syscalls
// nrs and returns what /proc/PID/syscall says.
func WaitSyscall(tb testing.TB, pid int, timeout time.Duration, nrs ...int64) SyscallInfo {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, _ := State(pid)
		si, err := ReadSyscall(pid)
		if st == 'S' && err == nil {
			for _, nr := range nrs {
				if si.Nr == nr {
					return si
				}
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pid %d: not asleep in syscall %v within %v (state %c, syscall %+v, %v)", pid, nrs, timeout, st, si, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// OpenFile is what procfs shows of one fd of a process.
type OpenFile struct {
	Fd    int
	Link  string // readlink /proc/PID/fd/N
	Pos   int64  // fdinfo pos
	Flags uint32 // fdinfo flags: file status flags, O_CLOEXEC for the fd
	Dev   uint64 // stat of the file
	Ino   uint64
}

// Files returns every fd of pid.
func Files(tb testing.TB, pid int) map[int]OpenFile {
	tb.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[int]OpenFile{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		of := OpenFile{Fd: fd}
		if of.Link, err = os.Readlink(filepath.Join(dir, e.Name())); err != nil {
			tb.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, e.Name()), &st); err != nil {
			tb.Fatalf("stat fd %d of pid %d: %v", fd, pid, err)
		}
		of.Dev, of.Ino = st.Dev, st.Ino
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			tb.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "pos":
				of.Pos, err = strconv.ParseInt(v, 10, 64)
			case "flags":
				var f uint64
				f, err = strconv.ParseUint(v, 8, 32)
				of.Flags = uint32(f)
			}
			if err != nil {
				tb.Fatalf("fdinfo %d of pid %d: %q: %v", fd, pid, line, err)
			}
		}
		out[fd] = of
	}
	return out
}

// ChildrenOf lists the processes whose parent is pid (from /proc, so
// that orphans reparented to a subreaper count too).
func ChildrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// WaitGone waits until pid no longer exists (reaped, not a zombie).
func WaitGone(tb testing.TB, pid int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			st, _ := State(pid)
			tb.Fatalf("pid %d still exists after %v (state %c)", pid, timeout, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Descendants lists every descendant of pid, children before their own
// children.
func Descendants(pid int) []int {
	var out []int
	queue := ChildrenOf(pid)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, ChildrenOf(p)...)
	}
	return out
}

// KillAll kills every pid of pids (0 and below skipped) and waits until
// they are gone (ReapGone): a test's cleanup of the trees it started.
func KillAll(tb testing.TB, pids []int) {
	tb.Helper()
	for _, pid := range pids {
		if pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	ReapGone(tb, pids, 5*time.Second)
}

// ReapGone waits until every pid is gone, reaping those that are (or
// become, as orphans of a subreaper) our children.
func ReapGone(tb testing.TB, pids []int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, pid := range pids {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %v still exist after %v", left, pids, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
