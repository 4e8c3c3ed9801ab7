//go:build linux && amd64

package crcore

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// withInjectable runs f on a locked thread with a stopped sleep(1) and a
// dump-side remote into it (crash-safe gadget plus plain gadget in a
// scratch area).
func withInjectable(tb testing.TB, f func(r *remote, pid int) error) {
	tb.Helper()
	if unix.Geteuid() != 0 {
		tb.Skip("needs root (ptrace)")
	}
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	err := onLockedThread(func() error {
		t, err := ptrace.Seize(pid, unix.PTRACE_O_TRACESYSGOOD)
		if err != nil {
			return err
		}
		defer t.Detach(0)
		if _, err := t.Interrupt(); err != nil {
			return err
		}
		vmas, err := procfs.ReadMapsFast(pid)
		if err != nil {
			return err
		}
		var code uint64
		for _, v := range vmas {
			if v.Exec && v.Path != "[vsyscall]" {
				code = v.Start
				break
			}
		}
		r, undo, err := prepareRemote(t, code)
		if err != nil {
			return err
		}
		defer undo()
		return f(r, pid)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// TestBatch runs batches of real syscalls in a stopped task: results in
// order, the first failure named with its errno, nothing after it run,
// the task's registers untouched.
func TestBatch(t *testing.T) {
	withInjectable(t, func(safe *remote, pid int) error {
		// The restore side's kind of remote: plain gadget, no
		// trampoline.
		r := &remote{t: safe.t, gadget: safe.gadget, scratch: safe.scratch, size: safe.size}
		before, err := r.t.GetRegs()
		if err != nil {
			return err
		}
		b := r.batch()
		b.add("getpid", unix.SYS_GETPID)
		b.add("getppid", unix.SYS_GETPPID)
		b.add("getpid", unix.SYS_GETPID)
		got, err := b.run()
		if err != nil {
			return err
		}
		if len(got) != 3 || got[0] != uint64(pid) || got[1] != uint64(os.Getpid()) || got[2] != uint64(pid) {
			t.Errorf("results %v, want [%d %d %d]", got, pid, os.Getpid(), pid)
		}

		// A failure in the middle: the umask after it must not run.
		b.add("umask", unix.SYS_UMASK, 0o022)
		b.add("close(-1)", unix.SYS_CLOSE, ^uint64(0))
		b.add("umask", unix.SYS_UMASK, 0o077)
		got, err = b.run()
		var se *ptrace.SyscallError
		if !errors.As(err, &se) || se.Name != "close(-1)" || se.Err != unix.EBADF {
			t.Errorf("error %v, want close(-1) EBADF", err)
		}
		if len(got) != 1 {
			t.Errorf("%d results before the failure, want 1", len(got))
		}
		st, err := procfs.ReadStatus(pid)
		if err != nil {
			return err
		}
		if m, _ := st.Uint("Umask", 8); m != 0o022 {
			t.Errorf("umask %#o after the batch, want 022: a call after the failure ran", m)
		}

		// More calls than one program holds in the scratch area.
		n := int(r.size/(batchCallCode+8)) + 10
		for range n {
			b.add("getpid", unix.SYS_GETPID)
		}
		got, err = b.run()
		if err != nil {
			return err
		}
		if len(got) != n {
			t.Errorf("%d results, want %d", len(got), n)
		}
		after, err := r.t.GetRegs()
		if err != nil {
			return err
		}
		if after != before {
			t.Errorf("registers changed by the batches")
		}
		return nil
	})
}

// TestSafeBatch runs crash-safe batches (the dump side's, ending at a
// stop signal) in a stopped task: results in order, the first failure
// named with nothing after it run, and the task's registers, signal
// mask and pending signals as they were, also when the preferred stop
// signal is blocked and already pending.
func TestSafeBatch(t *testing.T) {
	withInjectable(t, func(r *remote, pid int) error {
		sigState := func() (blk, pnd uint64) {
			st, err := procfs.ReadStatus(pid)
			if err != nil {
				t.Fatal(err)
			}
			blk, _ = st.Uint("SigBlk", 16)
			p1, _ := st.Uint("SigPnd", 16)
			p2, _ := st.Uint("ShdPnd", 16)
			return blk, p1 | p2
		}
		check := func(what string, wantSig unix.Signal) {
			stop := r.safe.stopFor(r.t)
			if stop == nil || stop.sig != wantSig {
				t.Fatalf("%s: stop %+v, want %v", what, stop, wantSig)
			}
			regs, err := r.t.GetRegs()
			if err != nil {
				t.Fatal(err)
			}
			blk, pnd := sigState()
			got, err := r.runSafeBatch([]batchCall{
				{name: "getpid", nr: unix.SYS_GETPID},
				{name: "getppid", nr: unix.SYS_GETPPID},
			}, stop)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if len(got) != 2 || got[0] != uint64(pid) || got[1] != uint64(os.Getpid()) {
				t.Errorf("%s: results %v, want [%d %d]", what, got, pid, os.Getpid())
			}
			after, err := r.t.GetRegs()
			if err != nil {
				t.Fatal(err)
			}
			if after != regs {
				t.Errorf("%s: registers changed", what)
			}
			if b, p := sigState(); b != blk || p != pnd {
				t.Errorf("%s: mask %#x pending %#x after, %#x %#x before", what, b, p, blk, pnd)
			}
		}
		check("plain", unix.SIGURG)

		// SIGURG blocked: the batch unblocks it around its stop and
		// blocks it again.
		if err := r.t.SetSigmask(1 << (unix.SIGURG - 1)); err != nil {
			return err
		}
		check("SIGURG blocked", unix.SIGURG)

		// SIGURG blocked and pending: the batch stops at SIGWINCH and
		// leaves both as they were.
		if err := unix.Tgkill(pid, pid, unix.SIGURG); err != nil {
			return err
		}
		check("SIGURG pending", unix.SIGWINCH)

		// A failure in the middle: the umask after it must not run.
		stop := r.safe.stopFor(r.t)
		_, err := r.runSafeBatch([]batchCall{
			{name: "umask", nr: unix.SYS_UMASK, args: [6]uint64{0o022}},
			{name: "close(-1)", nr: unix.SYS_CLOSE, args: [6]uint64{^uint64(0)}},
			{name: "umask", nr: unix.SYS_UMASK, args: [6]uint64{0o077}},
		}, stop)
		var se *ptrace.SyscallError
		if !errors.As(err, &se) || se.Name != "close(-1)" || se.Err != unix.EBADF {
			t.Errorf("error %v, want close(-1) EBADF", err)
		}
		st, err := procfs.ReadStatus(pid)
		if err != nil {
			return err
		}
		if m, _ := st.Uint("Umask", 8); m != 0o022 {
			t.Errorf("umask %#o after the batch, want 022: a call after the failure ran", m)
		}
		if d := r.t.Deferred(); len(d) != 0 {
			t.Errorf("signals deferred: %v", d)
		}
		return nil
	})
}

// TestChooseStopSignal: a stop signal is one without a handler that is
// not pending; none is found when all three are caught.
func TestChooseStopSignal(t *testing.T) {
	bit := func(s ...unix.Signal) (m uint64) {
		for _, x := range s {
			m |= 1 << (x - 1)
		}
		return m
	}
	for _, c := range []struct {
		caught, pending uint64
		want            unix.Signal
	}{
		{0, 0, unix.SIGURG},
		{bit(unix.SIGURG), 0, unix.SIGWINCH},
		{0, bit(unix.SIGURG, unix.SIGWINCH), unix.SIGCHLD},
		{bit(unix.SIGURG, unix.SIGWINCH, unix.SIGCHLD), 0, 0},
		{bit(unix.SIGURG), bit(unix.SIGWINCH, unix.SIGCHLD), 0},
	} {
		got, ok := chooseStopSignal(c.caught, c.pending)
		if got != c.want || ok != (c.want != 0) {
			t.Errorf("caught %#x pending %#x: %v %v, want %v", c.caught, c.pending, got, ok, c.want)
		}
	}
}
