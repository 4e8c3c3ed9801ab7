//go:build linux && amd64

package ptrace

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

// Gadget is the injected instruction sequence: syscall; int3.
var Gadget = []byte{0x0f, 0x05, 0xcc}

// Task is one traced thread.
type Task struct {
	Tid int

	// deferred holds signals that arrived while we drove the task and
	// that were suppressed so that they do not run user handlers in the
	// middle of a dump or a restore.
	deferred []unix.Signal
	// events collects the pids reported by PTRACE_EVENT_{FORK,CLONE}
	// while injecting, in order.
	events []int

	// Scratch: the task's registers are crhook's until it sets them
	// for good (a task being restored): an injection leaves them as its
	// code ended instead of putting back the ones it found, and starts
	// from the ones it last read or set (regs, when known) instead of
	// reading them again. Two register transfers a stop fewer; a tree of
	// 200 restored made some 9000.
	Scratch bool
	regs    unix.PtraceRegs
	known   bool // regs are the task's: set by SetRegs or read at a trap
}

// Error is a failed ptrace step on a task.
type Error struct {
	Op  string
	Tid int
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("%s tid %d: %v", e.Op, e.Tid, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func wrap(op string, tid int, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EPERM) && (op == "seize" || op == "attach") {
		err = fmt.Errorf("%w (needs CAP_SYS_PTRACE over the task and a ptrace policy that allows it: see /proc/sys/kernel/yama/ptrace_scope)", err)
	}
	return &Error{Op: op, Tid: tid, Err: os.NewSyscallError("ptrace", err)}
}

// ExitedError says the task exited (or was killed) while we drove it.
type ExitedError struct {
	Tid    int
	Status unix.WaitStatus
}

func (e *ExitedError) Error() string {
	if e.Status.Signaled() {
		return fmt.Sprintf("task %d killed by %v", e.Tid, e.Status.Signal())
	}
	return fmt.Sprintf("task %d exited with status %d", e.Tid, e.Status.ExitStatus())
}

// Seize attaches to tid without stopping it and sets options.
// Precondition: OS thread locked.
func Seize(tid int, options int) (*Task, error) {
	if err := ptrace(unix.PTRACE_SEIZE, tid, 0, uintptr(options)); err != nil {
		return nil, wrap("seize", tid, err)
	}
	return &Task{Tid: tid}, nil
}

// Adopt wraps a task that is already traced by this thread (a child
// started with PTRACE_TRACEME or auto-attached through an event).
func Adopt(tid int) *Task { return &Task{Tid: tid} }

// SetOptions sets PTRACE_O_* options.
func (t *Task) SetOptions(options int) error {
	return wrap("setoptions", t.Tid, unix.PtraceSetOptions(t.Tid, options))
}

// InterruptNoWait asks a seized task to stop; WaitInterrupt collects the
// stop. A frozen task (cgroup freezer) stops only once thawed.
func (t *Task) InterruptNoWait() error {
	return wrap("interrupt", t.Tid, unix.PtraceInterrupt(t.Tid))
}

// Interrupt stops a seized task and waits for its PTRACE_EVENT_STOP.
// A signal-delivery stop that comes first is deferred (not delivered).
// It returns the stop signal: SIGTRAP for a plain interrupt of a running
// task, or SIGSTOP-like signals when the task was in a group stop.
func (t *Task) Interrupt() (unix.Signal, error) {
	if err := unix.PtraceInterrupt(t.Tid); err != nil {
		return 0, wrap("interrupt", t.Tid, err)
	}
	return t.WaitInterrupt()
}

// WaitInterrupt waits for the stop asked by InterruptNoWait.
func (t *Task) WaitInterrupt() (unix.Signal, error) {
	for {
		ws, err := t.wait()
		if err != nil {
			return 0, err
		}
		if !ws.Stopped() {
			return 0, fmt.Errorf("interrupt tid %d: unexpected wait status %#x", t.Tid, uint32(ws))
		}
		if Event(ws) == kabi.PTRACE_EVENT_STOP {
			return ws.StopSignal(), nil
		}
		if Event(ws) == 0 && ws.StopSignal() != unix.SIGTRAP {
			// Signal-delivery stop: keep the signal for later and go
			// on towards the interrupt stop, which is still pending.
			t.deferred = append(t.deferred, ws.StopSignal())
			if err := unix.PtraceCont(t.Tid, 0); err != nil {
				return 0, wrap("cont", t.Tid, err)
			}
			continue
		}
		// Any other event (exec, exit...) while interrupting.
		if Event(ws) == kabi.PTRACE_EVENT_EXIT {
			return 0, &ExitedError{Tid: t.Tid, Status: ws}
		}
		if err := unix.PtraceCont(t.Tid, 0); err != nil {
			return 0, wrap("cont", t.Tid, err)
		}
	}
}

// Event is the PTRACE_EVENT_* of a stop status, 0 for none.
func Event(ws unix.WaitStatus) int { return int(uint32(ws)>>16) & 0xff }

// wait waits for the next state change of the task.
func (t *Task) wait() (unix.WaitStatus, error) {
	t.known = false // it ran: whatever stopped it, its registers are read anew
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(t.Tid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, &Error{Op: "wait", Tid: t.Tid, Err: os.NewSyscallError("wait4", err)}
		}
		if ws.Exited() || ws.Signaled() {
			return ws, &ExitedError{Tid: t.Tid, Status: ws}
		}
		return ws, nil
	}
}

// WaitStop waits for the task's next stop and returns its status.
func (t *Task) WaitStop() (unix.WaitStatus, error) { return t.wait() }

// Deferred returns the signals held back while driving the task, and
// forgets them.
func (t *Task) Deferred() []unix.Signal {
	d := t.deferred
	t.deferred = nil
	return d
}

// Events returns the pids of children reported by fork/clone events
// during the last injections, and forgets them.
func (t *Task) Events() []int {
	e := t.events
	t.events = nil
	return e
}

// Detach lets the task go, delivering sig (0 for none).
func (t *Task) Detach(sig unix.Signal) error {
	t.known = false
	return wrap("detach", t.Tid, ptrace(unix.PTRACE_DETACH, t.Tid, 0, uintptr(sig)))
}

// Cont resumes the task.
func (t *Task) Cont(sig unix.Signal) error {
	t.known = false
	return wrap("cont", t.Tid, unix.PtraceCont(t.Tid, int(sig)))
}

// GetRegs reads the general purpose registers (fs/gs base included).
func (t *Task) GetRegs() (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	err := unix.PtraceGetRegs(t.Tid, &r)
	return r, wrap("getregs", t.Tid, err)
}

// SetRegs writes the general purpose registers.
func (t *Task) SetRegs(r *unix.PtraceRegs) error {
	err := unix.PtraceSetRegs(t.Tid, r)
	t.regs, t.known = *r, err == nil
	return wrap("setregs", t.Tid, err)
}

// startRegs returns the registers an injection starts from: those last
// read or set, for a Scratch task that has not run since, else read
// now.
func (t *Task) startRegs() (unix.PtraceRegs, error) {
	if t.Scratch && t.known {
		return t.regs, nil
	}
	return t.GetRegs()
}

// resume lets the task run (PTRACE_CONT or PTRACE_SYSCALL): its
// registers are no longer known.
func (t *Task) resume(req int) error {
	t.known = false
	if req == unix.PTRACE_CONT {
		return wrap("cont", t.Tid, unix.PtraceCont(t.Tid, 0))
	}
	return wrap("syscall", t.Tid, ptrace(req, t.Tid, 0, 0))
}

// GetSigmask reads the blocked signal mask.
func (t *Task) GetSigmask() (uint64, error) {
	var m uint64
	err := ptraceSigmask(unix.PTRACE_GETSIGMASK, t.Tid, &m)
	return m, wrap("getsigmask", t.Tid, err)
}

// SetSigmask sets the blocked signal mask.
func (t *Task) SetSigmask(m uint64) error {
	return wrap("setsigmask", t.Tid, ptraceSigmask(unix.PTRACE_SETSIGMASK, t.Tid, &m))
}

// GetXState reads the whole NT_X86_XSTATE regset.
func (t *Task) GetXState() ([]byte, error) {
	buf := make([]byte, 16<<10)
	n, err := getRegset(t.Tid, unix.NT_X86_XSTATE, buf)
	if err != nil {
		return nil, wrap("getregset xstate", t.Tid, err)
	}
	return buf[:n], nil
}

// SetXState writes the NT_X86_XSTATE regset.
func (t *Task) SetXState(b []byte) error {
	return wrap("setregset xstate", t.Tid, setRegset(t.Tid, unix.NT_X86_XSTATE, b))
}

// GetRseq reads the task's rseq registration; a zero pointer means none.
func (t *Task) GetRseq() (kabi.RseqConfiguration, error) {
	var c kabi.RseqConfiguration
	err := getRseq(t.Tid, &c)
	return c, wrap("get rseq configuration", t.Tid, err)
}

// GetSiginfo reads the siginfo of the current signal stop (128 bytes).
func (t *Task) GetSiginfo() ([128]byte, error) {
	var si [128]byte
	err := getSiginfo(t.Tid, &si)
	return si, wrap("getsiginfo", t.Tid, err)
}

// Poke writes b at addr in the tracee, whatever the page protection.
func (t *Task) Poke(addr uint64, b []byte) error {
	_, err := unix.PtracePokeData(t.Tid, uintptr(addr), b)
	return wrap("pokedata", t.Tid, err)
}

// Peek reads len(b) bytes at addr in the tracee.
func (t *Task) Peek(addr uint64, b []byte) error {
	_, err := unix.PtracePeekData(t.Tid, uintptr(addr), b)
	return wrap("peekdata", t.Tid, err)
}
