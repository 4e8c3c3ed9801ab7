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
