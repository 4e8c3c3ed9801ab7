//go:build linux && amd64

package ptrace

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptracePtr(req int, pid int, addr uintptr, data unsafe.Pointer) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptraceSigmask(req int, tid int, m *uint64) error {
	err := ptracePtr(req, tid, 8, unsafe.Pointer(m)) //nolint:gosec // audited: the kernel reads/writes 8 bytes, the size of *m; KeepAlive below
	runtime.KeepAlive(m)
	return err
}

func getRegset(tid int, typ int, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	err := ptracePtr(unix.PTRACE_GETREGSET, tid, uintptr(typ), unsafe.Pointer(&iov)) //nolint:gosec // audited: iov bounds the kernel's write to buf; KeepAlive below
	runtime.KeepAlive(buf)
	return int(iov.Len), err
}

func setRegset(tid int, typ int, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	err := ptracePtr(unix.PTRACE_SETREGSET, tid, uintptr(typ), unsafe.Pointer(&iov)) //nolint:gosec // audited: iov bounds the kernel's read of buf; KeepAlive below
	runtime.KeepAlive(buf)
	return err
}

func getRseq(tid int, c *kabi.RseqConfiguration) error {
	err := ptracePtr(unix.PTRACE_GET_RSEQ_CONFIGURATION, tid, unsafe.Sizeof(*c), unsafe.Pointer(c)) //nolint:gosec // audited: the kernel writes at most Sizeof(*c), the size passed; KeepAlive below
	runtime.KeepAlive(c)
	return err
}

func getSiginfo(tid int, si *[128]byte) error {
	err := ptracePtr(unix.PTRACE_GETSIGINFO, tid, 0, unsafe.Pointer(si)) //nolint:gosec // audited: a siginfo is 128 bytes, the size of *si; KeepAlive below
	runtime.KeepAlive(si)
	return err
}
