//go:build linux && amd64

package crcore

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// getRobustList asks the kernel for a task's robust futex list head.
func getRobustList(tid int) (head, length uint64, err error) {
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&length))) //nolint:gosec // audited: the kernel writes one word into each; KeepAlive below
	runtime.KeepAlive(&head)
	runtime.KeepAlive(&length)
	if e != 0 {
		return 0, 0, os.NewSyscallError("get_robust_list", e)
	}
	return head, length, nil
}

// kcmp compares kernel objects of two tasks: 0 equal, 1 or 2 ordered
// (less, greater), error when they cannot be compared.
func kcmp(pid1, pid2, typ int, idx1, idx2 uintptr) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), idx1, idx2, 0)
	if e != 0 {
		return 0, os.NewSyscallError("kcmp", e)
	}
	return int(r), nil
}

// prctlMMMapSize asks the size of struct prctl_mm_map the kernel expects.
func prctlMMMapSize(size *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, uintptr(unsafe.Pointer(size)), 0, 0, 0) //nolint:gosec // audited: the kernel writes one uint32; KeepAlive below
	runtime.KeepAlive(size)
	if e != 0 {
		return os.NewSyscallError("prctl(PR_SET_MM_MAP_SIZE)", e)
	}
	return nil
}

// archGetXcompSupp asks the kernel which XSAVE features it supports for
// user space (arch_prctl ARCH_GET_XCOMP_SUPP, arch/x86/include/uapi/asm/prctl.h).
func archGetXcompSupp() (uint64, error) {
	const archGetXcompSupp = 0x1021
	var mask uint64
	_, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, archGetXcompSupp, uintptr(unsafe.Pointer(&mask)), 0) //nolint:gosec // audited: the kernel writes one uint64; KeepAlive below
	runtime.KeepAlive(&mask)
	if e != 0 {
		return 0, os.NewSyscallError("arch_prctl ARCH_GET_XCOMP_SUPP", e)
	}
	return mask, nil
}
