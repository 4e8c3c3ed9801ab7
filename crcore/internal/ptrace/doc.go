// Package ptrace drives stopped tasks from outside: seize and interrupt,
// registers and the XSAVE area, signal masks, and syscall injection.
//
// Model: every ptrace request for a tracee must come from the OS thread
// that attached it. Callers run the whole dump or restore of a tracee on
// one goroutine that has called runtime.LockOSThread and never unlocks;
// every function here has that precondition. Nothing here starts
// goroutines.
//
// Syscall injection: a three-byte gadget "syscall; int3" (0f 05 cc) is
// placed in the tracee's executable memory. To run a syscall the task's
// registers are set to rip=gadget, rax=nr, args in rdi, rsi, rdx, r10, r8,
// r9 and orig_rax=-1 (so the kernel does not apply syscall-restart logic
// to the stop the task is leaving), the task is continued, and the SIGTRAP
// of the int3 at gadget+3 ends the call. Unrelated signals that arrive
// meanwhile are held back and reported through Task.Deferred, to be
// re-delivered by the caller.
//
//go:build linux && amd64

package ptrace
