//go:build linux && amd64

package ptrace

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

// SyscallError is a negative return of an injected syscall.
type SyscallError struct {
	Name string
	Tid  int
	Err  unix.Errno
}

func (e *SyscallError) Error() string {
	return fmt.Sprintf("injected %s in task %d: %v", e.Name, e.Tid, e.Err)
}
func (e *SyscallError) Unwrap() error { return e.Err }

// Call runs syscall nr in the task through the gadget at gadget and
// returns its result; a negative result becomes a *SyscallError naming
// name. The task's registers are put back afterwards.
func (t *Task) Call(gadget uint64, name string, nr uintptr, args ...uint64) (uint64, error) {
	ret, err := t.Syscall(gadget, nr, args...)
	if err != nil {
		return 0, fmt.Errorf("inject %s: %w", name, err)
	}
	if e := int64(ret); e < 0 && e > -4096 {
		return 0, &SyscallError{Name: name, Tid: t.Tid, Err: unix.Errno(-e)}
	}
	return ret, nil
}

func setArgs(r *unix.PtraceRegs, gadget uint64, nr uintptr, args []uint64) error {
	if len(args) > 6 {
		return fmt.Errorf("syscall %d: %d arguments, at most 6", nr, len(args))
	}
	var a [6]uint64
	copy(a[:], args)
	r.Rip = gadget
	r.Rax = uint64(nr)
	r.Orig_rax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5] //nolint:gosec // a is a [6]uint64: constant indices, checked by the compiler
	return nil
}

// Syscall runs syscall nr in the stopped task and returns the raw rax.
// The task's registers are restored afterwards; it is left in the
// signal-delivery stop of the gadget's int3.
func (t *Task) Syscall(gadget uint64, nr uintptr, args ...uint64) (uint64, error) {
	saved, err := t.startRegs()
	if err != nil {
		return 0, err
	}
	r := saved
	if err := setArgs(&r, gadget, nr, args); err != nil {
		return 0, err
	}
	if err := t.SetRegs(&r); err != nil {
		return 0, err
	}
	for {
		if err := t.resume(unix.PTRACE_CONT); err != nil {
			return 0, err
		}
		ws, err := t.wait()
		if err != nil {
			return 0, err
		}
		done, err := t.classify(ws, gadget+uint64(len(Gadget)))
		if err != nil {
			return 0, err
		}
		if done {
			break
		}
	}
	ret := t.regs.Rax // read by classify at the trap
	if t.Scratch {
		return ret, nil
	}
	if err := t.SetRegs(&saved); err != nil {
		return 0, err
	}
	return ret, nil
}

// classify handles one stop during an injection. It returns true at the
// int3 that ends it: a SIGTRAP with rip at trapEnd (just past the int3).
func (t *Task) classify(ws unix.WaitStatus, trapEnd uint64) (bool, error) {
	if !ws.Stopped() {
		return false, fmt.Errorf("injected syscall in task %d: unexpected wait status %#x", t.Tid, uint32(ws))
	}
	sig, ev := ws.StopSignal(), Event(ws)
	switch {
	case sig == unix.SIGTRAP && ev == 0:
		r, err := t.GetRegs()
		if err != nil {
			return false, err
		}
		if r.Rip == trapEnd {
			t.regs, t.known = r, true
			return true, nil
		}
		return false, fmt.Errorf("injected syscall in task %d: SIGTRAP at %#x, not at the gadget's end %#x", t.Tid, r.Rip, trapEnd)
	case ev == kabi.PTRACE_EVENT_FORK || ev == kabi.PTRACE_EVENT_CLONE || ev == kabi.PTRACE_EVENT_VFORK:
		msg, err := unix.PtraceGetEventMsg(t.Tid)
		if err != nil {
			return false, wrap("geteventmsg", t.Tid, err)
		}
		t.events = append(t.events, int(msg))
		return false, nil
	case ev == kabi.PTRACE_EVENT_EXIT:
		return false, fmt.Errorf("injected syscall in task %d: task is exiting", t.Tid)
	case ev != 0:
		// Interrupt or group stop: just go on.
		return false, nil
	case sig == unix.SIGSEGV || sig == unix.SIGBUS || sig == unix.SIGILL:
		r, _ := t.GetRegs()
		return false, fmt.Errorf("injected syscall in task %d: %v at rip %#x (gadget ends at %#x)", t.Tid, sig, r.Rip, trapEnd)
	case sig == unix.SIGTRAP|0x80:
		// A syscall stop left over from PTRACE_SYSCALL; go on.
		return false, nil
	default:
		t.deferred = append(t.deferred, sig)
		return false, nil
	}
}

// RunCode runs the code at entry in the stopped task until the int3 at
// trap, then puts the task's registers back. The code is crhook's own,
// placed in the task's scratch area (a batch of syscalls, see crcore's
// remote.batch).
func (t *Task) RunCode(entry, trap uint64) error {
	saved, err := t.startRegs()
	if err != nil {
		return err
	}
	done := func(ws unix.WaitStatus) (bool, error) { return t.classify(ws, trap+1) }
	if err := t.runUntil(saved, entry, done, nil); err != nil {
		return err
	}
	if t.Scratch {
		return nil
	}
	return t.SetRegs(&saved)
}

// runUntil lets the task run from entry, with regs otherwise and no
// syscall to restart, until done says a stop ends the run; running, if
// not nil, is called once the task has been let go.
func (t *Task) runUntil(regs unix.PtraceRegs, entry uint64, done func(unix.WaitStatus) (bool, error), running func()) error {
	regs.Rip = entry
	regs.Orig_rax = ^uint64(0)
	if err := t.SetRegs(&regs); err != nil {
		return err
	}
	for {
		if err := t.resume(unix.PTRACE_CONT); err != nil {
			return err
		}
		if running != nil {
			running()
			running = nil
		}
		ws, err := t.wait()
		if err != nil {
			return err
		}
		if ok, err := done(ws); ok || err != nil {
			return err
		}
	}
}

// RunToSignal runs the code at entry in the stopped task until the
// delivery stop of sig with rip at stopAt, and leaves the task there with
// sig suppressed (it is not delivered when the task resumes) and its
// registers as the code left them. The code is crhook's own, in the
// task's scratch area (a crash-safe batch, see crcore's safeinject.go);
// other signals met on the way are deferred as during any injection.
// running, if not nil, is called once the task has been let go.
func (t *Task) RunToSignal(entry, stopAt uint64, sig unix.Signal, running func()) error {
	regs, err := t.GetRegs()
	if err != nil {
		return err
	}
	done := func(ws unix.WaitStatus) (bool, error) {
		if ws.Stopped() && ws.StopSignal() == sig && Event(ws) == 0 {
			r, err := t.GetRegs()
			if err != nil || r.Rip == stopAt {
				return true, err
			}
		}
		_, err := t.classify(ws, 0)
		return false, err
	}
	return t.runUntil(regs, entry, done, running)
}

// SyscallToExit runs syscall nr under PTRACE_SYSCALL and leaves the task
// at its syscall-exit stop, registers not restored. It serves the last
// call of a sequence, after which the gadget itself may be gone (munmap
// of the page that holds it): the task never executes the int3.
// Precondition: PTRACE_O_TRACESYSGOOD is set.
func (t *Task) SyscallToExit(gadget uint64, nr uintptr, args ...uint64) (uint64, error) {
	return t.SyscallToExitHook(gadget, nil, nr, args...)
}

// SyscallToExitHook is SyscallToExit calling atEntry (if not nil) at the
// syscall-entry stop.
func (t *Task) SyscallToExitHook(gadget uint64, atEntry func(), nr uintptr, args ...uint64) (uint64, error) {
	r, err := t.startRegs()
	if err != nil {
		return 0, err
	}
	if err := setArgs(&r, gadget, nr, args); err != nil {
		return 0, err
	}
	if err := t.SetRegs(&r); err != nil {
		return 0, err
	}
	stops := 0
	for stops < 2 {
		if err := t.resume(unix.PTRACE_SYSCALL); err != nil {
			return 0, err
		}
		ws, err := t.wait()
		if err != nil {
			return 0, err
		}
		if ws.Stopped() && ws.StopSignal() == unix.SIGTRAP|0x80 {
			stops++
			if stops == 1 && atEntry != nil {
				atEntry()
			}
			continue
		}
		if _, err := t.classify(ws, gadget+uint64(len(Gadget))); err != nil {
			return 0, err
		}
	}
	after, err := t.GetRegs()
	if err != nil {
		return 0, err
	}
	return after.Rax, nil
}

// Errno turns a raw syscall return into an error, nil when it is not an
// error code.
func Errno(name string, ret uint64) error {
	if e := int64(ret); e < 0 && e > -4096 {
		return os.NewSyscallError(name, unix.Errno(-e))
	}
	return nil
}
