//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// openPty opens a pseudo-terminal pair; the test plays the terminal on
// the master side.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	master = os.NewFile(uintptr(m), "ptmx")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// readUntil reads the master side until it holds want.
func readUntil(t *testing.T, master *os.File, want string) {
	t.Helper()
	var got []byte
	buf := make([]byte, 1024)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(string(got), want) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal shows %q, want %q", got, want)
		}
		n, err := unix.Read(int(master.Fd()), buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("read terminal: %v", err)
		}
		got = append(got, buf[:n]...)
	}
}

// A shell job, whose standard streams are a terminal, is restored onto
// the terminal the restorer runs on (what crhook restore --shell-job
// does with its own): it reads that terminal's input and writes to it.
func TestShellJobRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "tty", false)
	oldM, oldS := openPty(t)
	log := filepath.Join(t.TempDir(), "log")
	cmd := exec.Command(bin, log)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = oldS, oldS, oldS
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &crtest.Proc{Pid: cmd.Process.Pid, Log: log, Cmd: cmd}
	cmd.Process.Release()
	t.Cleanup(func() { crtest.KillAndReap(p.Pid) })
	p.WaitLine(t, `^isatty 1 1 1$`, 5*time.Second)
	p.WaitLine(t, `^ready$`, time.Second)
	if _, err := unix.Write(int(oldM.Fd()), []byte("before\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, oldM, "echo: before")
	crtest.WaitSyscall(t, p.Pid, 5*time.Second, unix.SYS_READ)

	dir := dumpKind(t, p.Pid, false)
	newM, newS := openPty(t)
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir, Stdin: newS, Stdout: newS, Stderr: newS})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	for fd := 0; fd <= 2; fd++ {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", res.Pid, fd))
		if l != newS.Name() {
			t.Errorf("restored fd %d is %q, want the new terminal %s", fd, l, newS.Name())
		}
	}
	if _, err := unix.Write(int(newM.Fd()), []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, newM, "echo: after")
	p.WaitLine(t, `^got after$`, time.Second)
}
