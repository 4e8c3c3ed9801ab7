//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// A batch runs several injected syscalls in one stop of the task.
//
// Each injected syscall through the gadget costs a stop and a resume of
// the task: two context switches, which on this machine kind cost some
// 10-25 µs each, against well under a microsecond for the syscalls
// themselves. A restore makes dozens per task (an mmap per VMA, sixteen
// prlimit64, closes, mprotects), so calls whose arguments are all known
// up front are queued and run together: crhook writes a short program
// into the scratch area, per call the registers loaded as immediates,
// syscall, rax stored into a result slot and a jump to the end on an
// error return, and lets the task run it to its final int3. The calls run
// in order and stop at the first failure, which is reported by name as a
// lone call's would be.
//
// On the dump side, whose injection must survive crhook's death
// (safeinject.go), a batch may not end in an int3, whose SIGTRAP would
// kill a task whose tracer died. There the program ends instead in a
// tgkill of the thread itself with a signal that would do nothing if
// delivered (safeStop, chooseStopSignal), then a jump into the trampoline that puts
// the task's own registers back: the tracer collects the batch at that
// signal's delivery stop and suppresses the signal; a task whose tracer
// died gets the harmless signal and goes on where it stood. A thread for
// which no such signal exists runs the calls one by one.
type batch struct {
	r     *remote
	calls []batchCall
}

type batchCall struct {
	name string
	nr   uintptr
	args [6]uint64
}

func (r *remote) batch() *batch { return &batch{r: r} }

// add queues a call; its arguments (and any scratch data they point to)
// must stay valid until run.
func (b *batch) add(name string, nr uintptr, args ...uint64) {
	c := batchCall{name: name, nr: nr}
	copy(c.args[:], args)
	b.calls = append(b.calls, c)
}

// Code size of one call: seven 10-byte immediate loads, syscall (2),
// the store of rax (10), cmp (6), jae (6).
const batchCallCode = 7*10 + 2 + 10 + 6 + 6

// run runs the queued calls and returns their results in order.
func (b *batch) run() ([]uint64, error) {
	calls := b.calls
	b.calls = nil
	out := make([]uint64, 0, len(calls))
	r := b.r
	var stop *safeStop
	if r.safe != nil && len(calls) > 1 {
		if stop = r.stop; stop == nil {
			stop = r.safe.stopFor(r.t)
		}
	}
	if (r.safe != nil && stop == nil) || len(calls) == 1 {
		for _, c := range calls {
			v, err := r.call(c.name, c.nr, c.args[:]...)
			if err != nil {
				return out, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	for len(calls) > 0 {
		free := int(r.size-r.used) - 64
		n := min(len(calls), (free-safeEndCode)/(batchCallCode+8))
		if n < 1 {
			return out, fmt.Errorf("scratch area of task %d full", r.pid())
		}
		var res []uint64
		var err error
		if stop != nil {
			res, err = r.runSafeBatch(calls[:n], stop)
		} else {
			res, err = r.runBatch(calls[:n])
		}
		out = append(out, res...)
		if err != nil {
			return out, err
		}
		calls = calls[n:]
	}
	return out, nil
}

// runBatch runs calls as one program in the scratch area, which it uses
// past r.used and leaves as it was.
func (r *remote) runBatch(calls []batchCall) ([]uint64, error) {
	res, code, end, p := batchCode(r.scratch+r.used, calls)
	p = append(p, 0xcc) // int3
	if err := writeMem(r.pid(), code, p); err != nil {
		return nil, err
	}
	if err := r.t.RunCode(code, end); err != nil {
		return nil, fmt.Errorf("inject %d syscalls from %s: %w", len(calls), calls[0].name, err)
	}
	return r.batchResults(res, calls)
}

// batchCode lays out calls from base: their result slots at res, then
// their code at code, which jumps to end on a failed call; p is the code
// up to end, for the caller to append the ending to.
func batchCode(base uint64, calls []batchCall) (res, code, end uint64, p []byte) {
	res = (base + 15) &^ 15
	code = res + uint64(8*len(calls))
	end = code + uint64(batchCallCode*len(calls))
	p = make([]byte, 0, batchCallCode*len(calls)+safeEndCode)
	for i, c := range calls {
		p = appendSyscall(p, c.nr, c.args)
		p = appendImm(p, 0x48, 0xa3, res+uint64(8*i))     // movabs [slot], rax
		p = append(p, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff) // cmp rax, -4095
		p = append(p, 0x0f, 0x83)                         // jae end
		next := code + uint64(len(p)) + 4
		p = binary.LittleEndian.AppendUint32(p, uint32(int32(end-next)))
	}
	return res, code, end, p
}

// appendSyscall appends to p the code of one syscall: its number and
// six arguments loaded as immediates, then syscall.
func appendSyscall(p []byte, nr uintptr, args [6]uint64) []byte {
	p = appendImm(p, 0x48, 0xb8, uint64(nr)) // mov rax
	p = appendImm(p, 0x48, 0xbf, args[0])    // mov rdi
	p = appendImm(p, 0x48, 0xbe, args[1])    // mov rsi
	p = appendImm(p, 0x48, 0xba, args[2])    // mov rdx
	p = appendImm(p, 0x49, 0xba, args[3])    // mov r10
	p = appendImm(p, 0x49, 0xb8, args[4])    // mov r8
	p = appendImm(p, 0x49, 0xb9, args[5])    // mov r9
	return append(p, 0x0f, 0x05)             // syscall
}

// appendImm appends an instruction of a REX prefix, an opcode and a
// 64-bit immediate.
func appendImm(p []byte, rex, op byte, v uint64) []byte {
	p = append(p, rex, op)
	return binary.LittleEndian.AppendUint64(p, v)
}

// batchResults reads the result slots of calls at res; the first failed
// call's error ends them.
func (r *remote) batchResults(res uint64, calls []batchCall) ([]uint64, error) {
	raw := make([]byte, 8*len(calls))
	if err := r.read(res, raw); err != nil {
		return nil, err
	}
	out := make([]uint64, 0, len(calls))
	for i, c := range calls {
		v := binary.LittleEndian.Uint64(raw[8*i:])
		if e := int64(v); e < 0 && e > -4096 {
			return out, &ptrace.SyscallError{Name: c.name, Tid: r.t.Tid, Err: unix.Errno(-e)}
		}
		out = append(out, v)
	}
	return out, nil
}
