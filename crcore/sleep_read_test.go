//go:build linux && amd64

package crcore_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// A task dumped inside nanosleep sits in the kernel with
// -ERESTART_RESTARTBLOCK in rax and a restart block that does not survive
// the dump. The restore must reissue the sleep: the program, which does
// not retry on EINTR, sees its nanosleep return 0, and not before the
// time it asked for has passed.
func TestSleeperResumesSleep(t *testing.T) {
	crtest.RequireRoot(t)
	const sleepMs = 1500
	for _, static := range []bool{true, false} {
		name := "dynamic"
		if static {
			name = "static"
		}
		t.Run(name, func(t *testing.T) {
			bin := crtest.BuildC(t, "sleeper", static)
			start := time.Now()
			p := crtest.Start(t, bin, "1500")
			p.WaitLine(t, `^sleeping$`, 5*time.Second)
			// glibc's nanosleep is clock_nanosleep; accept either.
			crtest.WaitSyscall(t, p.Pid, time.Second, unix.SYS_CLOCK_NANOSLEEP, unix.SYS_NANOSLEEP)

			dir := filepath.Join(t.TempDir(), "img")
			if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
				t.Fatalf("dump: %v", err)
			}
			ws, err := crtest.Reap(p.Pid)
			if err != nil || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
				t.Fatalf("the dump should have killed the sleeper in its sleep: status %v, %v (dumped too late?)", ws, err)
			}
			if l := p.Lines(); !slices.Equal(l, []string{"sleeping"}) {
				t.Fatalf("log at dump time: %q, want only \"sleeping\"", l)
			}

			res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			t.Cleanup(func() { crtest.KillAndReap(res.Pid) })

			m := p.WaitLine(t, `^slept rc=(-?[0-9]+) errno=([0-9]+)$`, 10*time.Second)
			if m[1] != "0" || m[2] != "0" {
				t.Errorf("restored nanosleep ended with rc=%s errno=%s, want rc=0 errno=0 (errno 4 is a stray EINTR)", m[1], m[2])
			}
			ws, err = crtest.Reap(res.Pid)
			if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
				t.Errorf("restored sleeper: status %v, %v; want exit 0", ws, err)
			}
			if l := p.Lines(); len(l) != 2 || l[0] != "sleeping" {
				t.Errorf("log %q: want \"sleeping\" once, then the result (a second \"sleeping\" means the program restarted)", l)
			}
			// The log's mtime is when "slept" was written: a sleep cut
			// short (rax set to 0 instead of reissuing the call) ends
			// before the 1.5 s it asked for. 20 ms covers the coarse
			// clock of file timestamps.
			fi, err := os.Stat(p.Log)
			if err != nil {
				t.Fatal(err)
			}
			if d := fi.ModTime().Sub(start); d < sleepMs*time.Millisecond-20*time.Millisecond {
				t.Errorf("nanosleep(%d ms) returned %v after the program started: the sleep was cut short", sleepMs, d)
			}
		})
	}
}

// A task dumped blocked in read(2) on a pipe reads on after the restore,
// without an error and without losing the bytes written after it. The
// pipe is its standard input and leads outside the dumped tree, so the
// image records it as external and the restorer's own stdin
// (RestoreOptions.Stdin) takes its place.
func TestReaderResumesRead(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "reader", false)

	t.Run("blocked", func(t *testing.T) {
		old := newPipe(t)
		p := crtest.StartStdin(t, old.r, bin)
		old.closeRead()
		p.WaitLine(t, `^reading$`, 5*time.Second)
		// The program does read from this pipe.
		old.write(t, "early")
		p.WaitLine(t, `^got 5 early$`, 5*time.Second)
		crtest.WaitSyscall(t, p.Pid, 5*time.Second, unix.SYS_READ)

		dir := dumpKill(t, p.Pid)
		res, fresh := restoreWithStdin(t, dir)
		fresh.write(t, "hello")
		p.WaitLine(t, `^got 5 hello$`, 5*time.Second)
		// End of input: the restored reader sees EOF on its new stdin
		// and exits 0, which proves it reads that pipe and nothing else.
		fresh.closeWrite()
		ws, err := crtest.Reap(res.Pid)
		if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
			t.Errorf("restored reader: status %v, %v; want exit 0 at EOF", ws, err)
		}
		want := []string{"reading", "got 5 early", "got 5 hello", "eof"}
		if l := p.Lines(); !slices.Equal(l, want) {
			t.Errorf("log %q, want %q", l, want)
		}
	})

	// Bytes waiting unread in the old pipe at dump time stay there: the
	// pipe is outside the tree, crhook does not carry external pipe
	// contents, and the restored task reads the restorer's stdin
	// instead. Only the new pipe's data may show up.
	t.Run("stopped-with-unread-data", func(t *testing.T) {
		old := newPipe(t)
		p := crtest.StartStdin(t, old.r, bin)
		old.closeRead()
		p.WaitLine(t, `^reading$`, 5*time.Second)
		crtest.WaitSyscall(t, p.Pid, 5*time.Second, unix.SYS_READ)
		crtest.Stop(t, p.Pid)
		old.write(t, "stale")

		dir := dumpKill(t, p.Pid)
		res, fresh := restoreWithStdin(t, dir)
		// Dumped stopped, restored stopped.
		crtest.WaitState(t, res.Pid, 'T', 5*time.Second)
		fresh.write(t, "hello")
		if err := unix.Kill(res.Pid, unix.SIGCONT); err != nil {
			t.Fatal(err)
		}
		p.WaitLine(t, `^got 5 hello$`, 5*time.Second)
		fresh.closeWrite()
		ws, err := crtest.Reap(res.Pid)
		if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
			t.Errorf("restored reader: status %v, %v; want exit 0 at EOF", ws, err)
		}
		want := []string{"reading", "got 5 hello", "eof"}
		if l := p.Lines(); !slices.Equal(l, want) {
			t.Errorf("log %q, want %q", l, want)
		}
	})
}

type testPipe struct{ r, w *os.File }

func newPipe(t *testing.T) *testPipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &testPipe{r: r, w: w}
	t.Cleanup(func() { p.closeRead(); p.closeWrite() })
	return p
}

func (p *testPipe) closeRead() {
	if p.r != nil {
		p.r.Close()
		p.r = nil
	}
}

func (p *testPipe) closeWrite() {
	if p.w != nil {
		p.w.Close()
		p.w = nil
	}
}

func (p *testPipe) write(t *testing.T, s string) {
	t.Helper()
	if _, err := p.w.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// dumpKill dumps pid into a new image directory, checks that the dump
// killed it and reaps it.
func dumpKill(t *testing.T, pid int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	ws, err := crtest.Reap(pid)
	if err != nil || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Fatalf("dumped process should be killed: %v %v", ws, err)
	}
	return dir
}

// restoreWithStdin restores dir with the read end of a new pipe as
// stdin, and returns the pipe with only its write end open.
func restoreWithStdin(t *testing.T, dir string) (*crcore.Restored, *testPipe) {
	t.Helper()
	fresh := newPipe(t)
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir, Stdin: fresh.r})
	fresh.closeRead()
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	return res, fresh
}
