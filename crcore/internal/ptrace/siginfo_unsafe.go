//go:build linux && amd64

package ptrace

import (
	"errors"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

// PeekSiginfo returns the signals queued for the stopped thread, oldest
// first, as raw siginfo_t: its own queue, or with shared the queue of its
// whole process. The signals stay queued.
func (t *Task) PeekSiginfo(shared bool) ([][kabi.SizeofSiginfo]byte, error) {
	var out [][kabi.SizeofSiginfo]byte
	var buf [32][kabi.SizeofSiginfo]byte
	args := kabi.PtracePeeksiginfoArgs{Nr: int32(len(buf))}
	if shared {
		args.Flags = unix.PTRACE_PEEKSIGINFO_SHARED
	}
	for {
		r1, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKSIGINFO, uintptr(t.Tid),
			uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&buf[0])), 0, 0) //nolint:gosec // audited: the kernel writes at most args.Nr siginfos, the length of buf; KeepAlive below
		runtime.KeepAlive(&args)
		runtime.KeepAlive(&buf)
		if e != 0 {
			return nil, wrap("peeksiginfo", t.Tid, e)
		}
		n := int(r1)
		out = append(out, buf[:n]...)
		if n < len(buf) {
			return out, nil
		}
		args.Off += uint64(n)
	}
}

// SeccompFilters returns the classic BPF programs of the thread's
// seccomp filters, the first installed first, each with its flags
// (SECCOMP_FILTER_FLAG_LOG is the only one the kernel reports).
// Needs CAP_SYS_ADMIN; the thread must be stopped.
func (t *Task) SeccompFilters() (progs [][]byte, flags []uint64, err error) {
	for off := 0; ; off++ {
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(t.Tid), uintptr(off), 0, 0, 0)
		if e != 0 {
			if errors.Is(e, unix.ENOENT) || (off == 0 && errors.Is(e, unix.EINVAL)) {
				// ENOENT: no filter at off; EINVAL: not in filter mode.
				return progs, flags, nil
			}
			return nil, nil, wrap("seccomp get filter", t.Tid, e)
		}
		prog := make([]byte, int(n)*kabi.SizeofSockFilter)
		if n > 0 {
			_, _, e = unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(t.Tid), uintptr(off), uintptr(unsafe.Pointer(&prog[0])), 0, 0) //nolint:gosec // audited: prog holds the n filters the first call counted; KeepAlive below
			runtime.KeepAlive(prog)
			if e != 0 {
				return nil, nil, wrap("seccomp get filter", t.Tid, e)
			}
		}
		md := kabi.SeccompMetadata{FilterOff: uint64(off)}
		_, _, e = unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_METADATA, uintptr(t.Tid), kabi.SizeofSeccompMetadata, uintptr(unsafe.Pointer(&md)), 0, 0) //nolint:gosec // audited: the size passed is md's; KeepAlive below
		runtime.KeepAlive(&md)
		if e != 0 {
			return nil, nil, wrap("seccomp get metadata", t.Tid, e)
		}
		progs = append(progs, prog)
		flags = append(flags, md.Flags)
	}
}
