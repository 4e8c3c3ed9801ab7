//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// Dump-side syscall injection that survives the death of crhook.
//
// When a tracer dies its tracees are detached and resume where they
// stand. With the plain gadget (syscall; int3) a task that was running an
// injected syscall, or was parked in the int3's SIGTRAP stop (whose
// signal the kernel then delivers), dies of SIGTRAP; one whose code still
// held the gadget bytes runs them. A crhook killed in the middle of a dump
// must leave its target running unchanged (DESIGN.md section 5), so:
//
//   - The code of the task is patched for one syscall only: the mmap of
//     the scratch area. Its bytes are put back before anything else.
//   - Every later syscall runs from the scratch area under PTRACE_SYSCALL
//     and is collected at its syscall-exit stop: no int3, no SIGTRAP to
//     deliver (with PTRACE_O_TRACESYSGOOD a syscall stop's pending "signal"
//     is SIGTRAP|0x80, which the kernel does not deliver).
//   - The syscall instruction is followed by a trampoline that reloads the
//     task's own registers from a block in the scratch area and jumps back
//     to where the task stood. Before each injection the block is set to
//     the registers the task would resume with had it never been stopped
//     (the kernel's syscall-restart fix-up applied). Should crhook die at
//     any moment of the injection, the task falls through the syscall
//     into the trampoline and goes on as if nothing happened; the injected
//     syscalls of a dump only read state, so running one more does no harm.
//
// The windows left are the first mmap and the final munmap of the scratch
// area, one syscall each. The scratch mapping itself stays behind in a
// task whose dumper died (64 KiB, never used again).

// Scratch layout on the dump side.
const (
	// plainGadgetOff: syscall; int3, for callers that use remote without
	// the safe path.
	plainGadgetOff = 0
	safeGadgetOff  = 16
	// safeBlockOff: rax rbx rcx rdx rsi rdi rbp r8-r15 rflags rsp rip.
	safeBlockOff  = 128
	safeBlockSize = 18 * 8
	// safeArgsOff: the rest of the scratch area is the argument area.
	safeArgsOff = 512
)

// safeTrampoline is syscall followed by the register reload; rip-relative
// displacements are patched in by trampolineCode.
func trampolineCode() []byte {
	var c []byte
	c = append(c, 0x0f, 0x05) // syscall
	// lea rsp, [rip + disp32] -> block
	c = append(c, 0x48, 0x8d, 0x25, 0, 0, 0, 0)
	leaEnd := len(c)
	c = append(c,
		0x58, 0x5b, 0x59, 0x5a, 0x5e, 0x5f, 0x5d, // pop rax rbx rcx rdx rsi rdi rbp
		0x41, 0x58, 0x41, 0x59, 0x41, 0x5a, 0x41, 0x5b, // pop r8 r9 r10 r11
		0x41, 0x5c, 0x41, 0x5d, 0x41, 0x5e, 0x41, 0x5f, // pop r12 r13 r14 r15
		0x9d, // popfq
	)
	// mov rsp, [rip + disp32] -> block+16*8 (rsp)
	c = append(c, 0x48, 0x8b, 0x25, 0, 0, 0, 0)
	movEnd := len(c)
	// jmp qword ptr [rip + disp32] -> block+17*8 (rip)
	c = append(c, 0xff, 0x25, 0, 0, 0, 0)
	jmpEnd := len(c)
	block := safeBlockOff - safeGadgetOff // relative to the code's start
	binary.LittleEndian.PutUint32(c[leaEnd-4:], uint32(int32(block-leaEnd)))
	binary.LittleEndian.PutUint32(c[movEnd-4:], uint32(int32(block+16*8-movEnd)))
	binary.LittleEndian.PutUint32(c[jmpEnd-4:], uint32(int32(block+17*8-jmpEnd)))
	return c
}

// safeGadget runs syscalls in the tasks of one address space through the
// trampoline at scratch+safeGadgetOff.
type safeGadget struct {
	scratch uint64
	pid     int // any task of the address space, for process_vm_writev
}

// install writes both gadgets into the scratch area of pid's address
// space.
func (g *safeGadget) install() error {
	if len(trampolineCode()) > safeBlockOff-safeGadgetOff {
		return fmt.Errorf("trampoline of %d bytes does not fit", len(trampolineCode()))
	}
	if err := writeMem(g.pid, g.scratch+plainGadgetOff, ptrace.Gadget); err != nil {
		return err
	}
	return writeMem(g.pid, g.scratch+safeGadgetOff, trampolineCode())
}

// resumeRegs returns the registers a task stopped with regs would resume
// with if let go: a syscall it was interrupted in is restarted as the
// kernel would, since the trampoline's return is not a signal return.
func resumeRegs(regs unix.PtraceRegs) unix.PtraceRegs {
	if int64(regs.Orig_rax) < 0 {
		return regs
	}
	switch int64(regs.Rax) {
	case -512, -513, -514: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
		regs.Rax = regs.Orig_rax
		regs.Rip -= 2
	case -516: // ERESTART_RESTARTBLOCK
		regs.Rax = unix.SYS_RESTART_SYSCALL
		regs.Rip -= 2
	}
	return regs
}

func encodeBlock(r unix.PtraceRegs) []byte {
	b := make([]byte, 0, safeBlockSize)
	for _, v := range []uint64{r.Rax, r.Rbx, r.Rcx, r.Rdx, r.Rsi, r.Rdi, r.Rbp,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15, r.Eflags, r.Rsp, r.Rip} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// call runs syscall nr in t and leaves t at its syscall-exit stop with its
// own registers back. Precondition: OS thread locked, t traced with
// PTRACE_O_TRACESYSGOOD and stopped.
func (g *safeGadget) call(t *ptrace.Task, name string, nr uintptr, args ...uint64) (uint64, error) {
	saved, err := t.GetRegs()
	if err != nil {
		return 0, err
	}
	if err := writeMem(g.pid, g.scratch+safeBlockOff, encodeBlock(resumeRegs(saved))); err != nil {
		return 0, fmt.Errorf("inject %s: %w", name, err)
	}
	faultPoint("dump:in-inject")
	ret, err := t.SyscallToExitHook(g.scratch+safeGadgetOff, func() { faultPoint("dump:in-syscall") }, nr, args...)
	if err != nil {
		return 0, fmt.Errorf("inject %s: %w", name, err)
	}
	if err := t.SetRegs(&saved); err != nil {
		return 0, fmt.Errorf("inject %s: %w", name, err)
	}
	if err := ptrace.Errno(name, ret); err != nil {
		return 0, &ptrace.SyscallError{Name: name, Tid: t.Tid, Err: unix.Errno(-int64(ret))}
	}
	return ret, nil
}

// safeStop is how a crash-safe batch of one thread ends (batch.go): the
// thread sends itself sig (ids in its own pid namespace) and stops at
// its delivery.
type safeStop struct {
	tgid, tid uint64
	sig       unix.Signal
}

// Stop signals, in order of preference: each does nothing when
// delivered without a handler (its default action is to ignore it).
var safeStopSignals = []unix.Signal{unix.SIGURG, unix.SIGWINCH, unix.SIGCHLD}

// stopFor returns the signal a crash-safe batch of thread t can end in,
// or nil when every candidate has a handler (which a crhook dying at the
// stop would run) or is pending already. Whether the thread blocks it
// does not matter: the batch unblocks it around the stop.
func (g *safeGadget) stopFor(t *ptrace.Task) *safeStop {
	st, err := procfs.ReadStatus(t.Tid)
	if err != nil {
		return nil
	}
	return stopFromStatus(st)
}

// stopFromStatus is stopFor from a status of the thread read while it
// was stopped. One read before the first injection will do: the
// handlers cannot change while the task is stopped, and a signal that
// became pending since is met at the batch's start and deferred like any
// other signal met during an injection.
func stopFromStatus(st procfs.Status) *safeStop {
	cgt, err1 := st.Uint("SigCgt", 16)
	pnd, err2 := st.Uint("SigPnd", 16)
	shd, err3 := st.Uint("ShdPnd", 16)
	tgids, err4 := st.Ints("NStgid")
	tids, err5 := st.Ints("NSpid")
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil || len(tgids) == 0 || len(tids) == 0 {
		return nil
	}
	sig, ok := chooseStopSignal(cgt, pnd|shd)
	if !ok {
		return nil
	}
	return &safeStop{tgid: uint64(tgids[len(tgids)-1]), tid: uint64(tids[len(tids)-1]), sig: sig}
}

// chooseStopSignal returns the first stop signal that is neither caught
// (a handler) nor pending, given those sets as masks.
func chooseStopSignal(caught, pending uint64) (unix.Signal, bool) {
	for _, sig := range safeStopSignals {
		if bit := uint64(1) << (sig - 1); (caught|pending)&bit == 0 {
			return sig, true
		}
	}
	return 0, false
}

// safeEndCode bounds the bytes a crash-safe batch needs beyond its calls:
// its signal sets, alignment, and the ending (three syscalls of seven
// immediate loads each, and a jump).
const safeEndCode = 16 + 16 + 3*(7*10+2) + 5

// runSafeBatch runs calls in r's thread as one program that ends with
//
//	rt_sigprocmask(SIG_UNBLOCK, {sig}, &old)
//	tgkill(tgid, tid, sig)          <- collected at sig's delivery stop
//	rt_sigprocmask(SIG_SETMASK, &old, NULL)
//	jmp trampoline (the task's own registers, back where it stood)
//
// The tracer collects the results at the stop, suppresses sig, puts the
// mask and the registers back; only a task whose tracer died runs past
// the stop. The calls must only read state, as every dump-side injected
// syscall does: such a task may have run them and goes on unharmed.
func (r *remote) runSafeBatch(calls []batchCall, stop *safeStop) ([]uint64, error) {
	g, t := r.safe, r.t
	sets := (r.scratch + r.used + 15) &^ 15 // {sig}, then old
	// A failed call jumps to the ending, which batchCode leaves to us.
	res, code, _, p := batchCode(sets+16, calls)
	p = appendSyscall(p, unix.SYS_RT_SIGPROCMASK, [6]uint64{unix.SIG_UNBLOCK, sets, sets + 8, 8})
	p = appendSyscall(p, unix.SYS_TGKILL, [6]uint64{stop.tgid, stop.tid, uint64(stop.sig)})
	stopAt := code + uint64(len(p))
	p = appendSyscall(p, unix.SYS_RT_SIGPROCMASK, [6]uint64{unix.SIG_SETMASK, sets + 8, 0, 8})
	p = append(p, 0xe9) // jmp rel32: into the trampoline, past its syscall
	next := code + uint64(len(p)) + 4
	p = binary.LittleEndian.AppendUint32(p, uint32(int32(g.scratch+safeGadgetOff+2-next)))
	if stopAt > r.scratch+r.size || code+uint64(len(p)) > r.scratch+r.size {
		return nil, fmt.Errorf("scratch area of task %d full", r.pid())
	}

	saved, err := t.GetRegs()
	if err != nil {
		return nil, err
	}
	var set [16]byte
	binary.LittleEndian.PutUint64(set[:], 1<<(stop.sig-1))
	if err := writeMem(g.pid, sets, set[:]); err != nil {
		return nil, err
	}
	if err := writeMem(g.pid, code, p); err != nil {
		return nil, err
	}
	if err := writeMem(g.pid, g.scratch+safeBlockOff, encodeBlock(resumeRegs(saved))); err != nil {
		return nil, err
	}
	running := func() { faultPoint("dump:in-batch") }
	if err := t.RunToSignal(code, stopAt, stop.sig, running); err != nil {
		return nil, fmt.Errorf("inject %d syscalls from %s: %w", len(calls), calls[0].name, err)
	}
	faultPoint("dump:at-batch-stop")
	var old [8]byte
	if err := r.read(sets+8, old[:]); err != nil {
		return nil, err
	}
	if err := t.SetSigmask(binary.LittleEndian.Uint64(old[:])); err != nil {
		return nil, err
	}
	if err := t.SetRegs(&saved); err != nil {
		return nil, err
	}
	return r.batchResults(res, calls)
}
