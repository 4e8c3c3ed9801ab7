//go:build linux && amd64

package crcore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// remote is a stopped task we run syscalls in: a gadget to execute and a
// scratch area for syscall arguments that live in memory.
// Precondition for every method: OS thread locked, task traced by it.
type remote struct {
	t       *ptrace.Task
	gadget  uint64
	scratch uint64 // start of the argument area
	size    uint64
	used    uint64
	// safe, when set, runs call through the crash-safe trampoline
	// (safeinject.go).
	safe *safeGadget
	// stop, when set, is how this thread's crash-safe batches end;
	// unset, batch.run works it out (safeGadget.stopFor).
	stop *safeStop
}

func (r *remote) pid() int { return r.t.Tid }

// forTask returns a remote for task t that has r's scratch area at the
// same address: another thread of r's task, or a task cloned from it
// (the scratch area is inherited). It shares r's gadgets, crash-safe
// ones included.
func (r *remote) forTask(t *ptrace.Task) *remote {
	return &remote{t: t, gadget: r.gadget, scratch: r.scratch, size: r.size, used: r.used, safe: r.safe}
}

// call runs a syscall and turns a negative result into an error.
func (r *remote) call(name string, nr uintptr, args ...uint64) (uint64, error) {
	if r.safe != nil {
		return r.safe.call(r.t, name, nr, args...)
	}
	return r.t.Call(r.gadget, name, nr, args...)
}

// callBestEffort runs a cleanup syscall (close, munmap) of something the
// caller made in the task, on a path that already returns its own error
// or whose next call fails too should the task be gone: its result
// changes nothing for the caller.
func (r *remote) callBestEffort(name string, nr uintptr, args ...uint64) {
	_, _ = r.call(name, nr, args...)
}

// putLE appends v, a fixed-size kernel struct or integer, to b in the
// task's byte order. Writing into a bytes.Buffer fails only for a type
// that is not fixed-size: a programming error, hence the panic.
func putLE(b *bytes.Buffer, v any) {
	if err := binary.Write(b, binary.LittleEndian, v); err != nil {
		panic(err)
	}
}

// reset forgets everything placed in scratch.
func (r *remote) reset() { r.used = 0 }

// put copies b into scratch and returns its address in the task.
func (r *remote) put(b []byte) (uint64, error) {
	n := (uint64(len(b)) + 15) &^ 15
	if r.used+n > r.size {
		return 0, fmt.Errorf("scratch area of task %d full (%d of %d bytes)", r.pid(), r.used+n, r.size)
	}
	addr := r.scratch + r.used
	if err := writeMem(r.pid(), addr, b); err != nil {
		return 0, err
	}
	r.used += n
	return addr, nil
}

// alloc reserves n bytes of scratch (for out-parameters).
func (r *remote) alloc(n int) (uint64, error) {
	sz := (uint64(n) + 15) &^ 15
	if r.used+sz > r.size {
		return 0, fmt.Errorf("scratch area of task %d full", r.pid())
	}
	addr := r.scratch + r.used
	r.used += sz
	return addr, nil
}

// cstring places a NUL-terminated string in scratch.
func (r *remote) cstring(s string) (uint64, error) {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return r.put(b)
}

// read copies len(b) bytes at addr out of the task.
func (r *remote) read(addr uint64, b []byte) error { return readMem(r.pid(), addr, b) }

func writeMem(pid int, addr uint64, b []byte) error {
	return vmCopy(pid, addr, b, unix.ProcessVMWritev, "write", "process_vm_writev")
}

func readMem(pid int, addr uint64, b []byte) error {
	return vmCopy(pid, addr, b, unix.ProcessVMReadv, "read", "process_vm_readv")
}

// vmCopy moves b to or from addr in task pid with one vectored call; a
// short transfer is an error (the ranges crhook moves this way are
// small and mapped).
func vmCopy(pid int, addr uint64, b []byte,
	op func(int, []unix.Iovec, []unix.RemoteIovec, uint) (int, error), verb, name string) error {
	if len(b) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	rem := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	for {
		n, err := op(pid, local, rem, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s %d bytes at %#x in task %d: %w", verb, len(b), addr, pid, os.NewSyscallError(name, err))
		}
		if n != len(b) {
			return fmt.Errorf("%s %d bytes at %#x in task %d: short %s %d", verb, len(b), addr, pid, verb, n)
		}
		return nil
	}
}
