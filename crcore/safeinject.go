//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

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
	safeBlockSize = 19 * 8
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
	// mov rsp, [rip + disp32] -> block+17*8
	c = append(c, 0x48, 0x8b, 0x25, 0, 0, 0, 0)
	movEnd := len(c)
	// jmp qword ptr [rip + disp32] -> block+18*8
	c = append(c, 0xff, 0x25, 0, 0, 0, 0)
	jmpEnd := len(c)
	block := safeBlockOff - safeGadgetOff // relative to the code's start
	binary.LittleEndian.PutUint32(c[leaEnd-4:], uint32(int32(block-leaEnd)))
	binary.LittleEndian.PutUint32(c[movEnd-4:], uint32(int32(block+17*8-movEnd)))
	binary.LittleEndian.PutUint32(c[jmpEnd-4:], uint32(int32(block+18*8-jmpEnd)))
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
	ret, err := t.SyscallToExit(g.scratch+safeGadgetOff, nr, args...)
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
