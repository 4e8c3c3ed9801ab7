//go:build linux

package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A frozen cgroup stays frozen when whoever froze it dies: a crhook
// killed (SIGKILL, OOM) between Freeze and Thaw would leave the
// container stopped for good. The thaw guard is a small process started
// before the freeze that holds the read end of a pipe whose only write
// end is crhook's. The kernel closes that end when crhook dies, however
// it dies; the guard then reads EOF and, unless crhook said "done"
// first, thaws the cgroup itself.

// guardDone is the byte crhook writes once the cgroup is thawed (or was
// never frozen) and the guard has nothing left to do.
const guardDone = 'd'

// guardReady is the byte the guard writes once it is waiting on the pipe.
const guardReady = 'r'

// freezerSpec names a freezer in the guard's command line.
func freezerSpec(fr Freezer) (kind, dir string, err error) {
	switch f := fr.(type) {
	case *v1Freezer:
		return "v1", f.dir, nil
	case *v2Freezer:
		return "v2", f.dir, nil
	}
	return "", "", fmt.Errorf("thaw guard: unknown freezer %T", fr)
}

// ThawGuard is a running guard process.
type ThawGuard struct {
	w    *os.File
	cmd  *exec.Cmd
	done chan struct{}
}

// StartThawGuard starts the guard of fr, running exe with args followed
// by the freezer's kind ("v1" or "v2") and directory; that command must
// call RunThawGuard. It returns once the guard waits on its pipe. The
// guard runs in its own session, so that signals meant for crhook's
// terminal or process group do not end it with crhook.
func StartThawGuard(exe string, args []string, fr Freezer) (*ThawGuard, error) {
	kind, dir, err := freezerSpec(fr)
	if err != nil {
		return nil, err
	}
	// Both pipes are O_CLOEXEC: only the guard gets (as its stdio) the
	// read end of one and the write end of the other.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("thaw guard: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		_ = inR.Close()
		_ = inW.Close()
		return nil, fmt.Errorf("thaw guard: %w", err)
	}
	defer readyR.Close()
	cmd := exec.Command(exe, append(append([]string{}, args...), kind, dir)...)
	cmd.Args[0] = "crhook-thaw-guard"
	cmd.Stdin, cmd.Stdout = inR, readyW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = inR.Close()
	_ = readyW.Close()
	if err != nil {
		_ = inW.Close()
		return nil, fmt.Errorf("thaw guard: start %s: %w", exe, err)
	}
	g := &ThawGuard{w: inW, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the guard reports on its pipes; done only bounds our waits
		close(g.done)
	}()
	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := io.ReadFull(readyR, b[:])
		if err == nil && b[0] != guardReady {
			err = fmt.Errorf("unexpected byte %q", b[0]) //nolint:gosec // b is a [1]byte: a constant index, checked by the compiler
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(10 * time.Second):
		err = errors.New("not ready after 10s")
	}
	if err != nil {
		g.Abort()
		_ = cmd.Process.Kill() // best effort: it may have exited on the closed pipe
		return nil, fmt.Errorf("thaw guard: %w", err)
	}
	return g, nil
}

// Pid is the guard's pid.
func (g *ThawGuard) Pid() int { return g.cmd.Process.Pid }

// Release tells the guard that the cgroup is thawed and waits (bounded)
// for it to exit. Call it after a successful Thaw.
func (g *ThawGuard) Release() {
	if g.w == nil {
		return
	}
	// Should "done" not arrive, the guard thaws the thawed cgroup on EOF:
	// harmless.
	_, _ = g.w.Write([]byte{guardDone})
	_ = g.w.Close()
	g.w = nil
	g.wait()
}

// Abort closes the pipe without "done": the guard thaws the cgroup, as if
// crhook had died, and exits.
func (g *ThawGuard) Abort() {
	if g.w == nil {
		return
	}
	_ = g.w.Close()
	g.w = nil
	g.wait()
}

func (g *ThawGuard) wait() {
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
	}
}

// RunThawGuard is the guard's body: it says it is ready on ready, reads
// in until EOF and, unless it read "done", thaws the cgroup named by kind
// and dir. Signals that would end it early (a terminal's, a pipe's) are
// ignored: only SIGKILL stops it.
func RunThawGuard(in io.Reader, ready io.Writer, kind, dir string) error {
	var fr Freezer
	switch kind {
	case "v1":
		fr = NewV1Freezer(dir)
	case "v2":
		fr = NewV2Freezer(dir)
	default:
		return fmt.Errorf("thaw guard: unknown freezer kind %q", kind)
	}
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGPIPE, unix.SIGTSTP)
	if _, err := ready.Write([]byte{guardReady}); err != nil {
		return fmt.Errorf("thaw guard: %w", err)
	}
	if c, ok := ready.(io.Closer); ok {
		_ = c.Close() // ready was said; crhook reads up to it only
	}
	done := false
	r := bufio.NewReader(in)
	for {
		b, err := r.ReadByte()
		if err != nil {
			break // EOF: crhook is gone or finished
		}
		if b == guardDone {
			done = true
		}
	}
	if done {
		return nil
	}
	if err := fr.Thaw(); err != nil {
		return fmt.Errorf("thaw guard: %w", err)
	}
	return nil
}
