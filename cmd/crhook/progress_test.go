//go:build linux && amd64

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// openPty returns a new pseudo-terminal's master and slave.
func openPty(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// onTerminal runs crhook with stderr on a terminal and returns what the
// terminal showed.
func onTerminal(t *testing.T, args ...string) (int, string) {
	t.Helper()
	m, s := openPty(t)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, crhookBin, args...)
	cmd.Stderr = s
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.WaitDelay = 5 * time.Second
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(m) // EIO once every slave fd is closed
		got <- string(b)
	}()
	err := cmd.Start()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	code := 0
	if err := cmd.Wait(); err != nil {
		code = cmd.ProcessState.ExitCode()
	}
	select {
	case shown := <-got:
		return code, shown
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal was not closed: something still holds it")
		return 0, ""
	}
}

// On a terminal, a dump and a restore show the memory they moved and
// the rate; elsewhere they stay silent (TestDumpShowRestoreDetached).
func TestProgressOnTerminal(t *testing.T) {
	crtest.RequireRoot(t)
	p, _ := startCounter(t)
	d := filepath.Join(t.TempDir(), "img")
	code, shown := onTerminal(t, "--progress-after", "0", "dump", "-t", strconv.Itoa(p.Pid), "-D", d)
	if code != 0 {
		t.Fatalf("dump: exit %d, terminal %q", code, shown)
	}
	if !strings.Contains(shown, "crhook: dump: ") || !strings.Contains(shown, "MiB/s") {
		t.Errorf("dump showed %q, want its progress", shown)
	}
	if _, err := crtest.Reap(p.Pid); err != nil {
		t.Fatal(err)
	}
	last := p.Counts()[len(p.Counts())-1]
	code, shown = onTerminal(t, "--progress-after", "0", "restore", "-D", d, "-d")
	t.Cleanup(func() { crtest.KillAndReap(p.Pid) })
	if code != 0 {
		t.Fatalf("restore: exit %d, terminal %q", code, shown)
	}
	if !strings.Contains(shown, "crhook: restore: ") || !strings.Contains(shown, "(100%)") {
		t.Errorf("restore showed %q, want its progress up to 100%%", shown)
	}
	p.WaitLine(t, "^count "+strconv.FormatUint(last+5, 10)+"$", 10*time.Second)
}
