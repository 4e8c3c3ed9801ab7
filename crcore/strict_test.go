//go:build linux && amd64

package crcore_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// seccompMode is the Seccomp line of /proc/PID/status.
func seccompMode(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Seccomp:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// A task in seccomp strict mode is dumped (PTRACE_O_SUSPEND_SECCOMP lets
// the injected syscalls through) and restored in strict mode, set by its
// last injected syscall: it goes on reading, and a syscall strict mode
// forbids would kill it.
func TestSeccompStrictRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startKind(t, "strict", fifo)
	if m := seccompMode(t, p.Pid); m != "1" {
		t.Fatalf("Seccomp: %s before the dump, want 1 (strict)", m)
	}
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	if m := seccompMode(t, pid); m != "1" {
		t.Errorf("Seccomp: %s after restore, want 1 (strict)", m)
	}
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("abq"); err != nil {
		t.Fatal(err)
	}
	p.WaitLine(t, `^done$`, 10*time.Second)
	ws, err := crtest.Reap(pid)
	if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("restored strict-mode task ended with %v (%v), want exit 0:\n%s", ws, err, strings.Join(p.Lines(), "\n"))
	}
	if got := strings.Join(p.Lines(), ","); got != "ready,got a,got b,done" {
		t.Errorf("log %q", got)
	}
}
