//go:build linux && amd64

package crcore

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

// kcmpEpollTfd reports whether fd of pid is the file registered in the
// epoll epfd of pid under target number tfd (its first registration).
func kcmpEpollTfd(pid, fd, epfd, tfd int) (bool, error) {
	slot := &kabi.KcmpEpollSlot{Efd: uint32(epfd), Tfd: uint32(tfd)}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kabi.KCMP_EPOLL_TFD, uintptr(fd), uintptr(unsafe.Pointer(slot)), 0) //nolint:gosec // audited: kcmp reads the slot; KeepAlive below
	runtime.KeepAlive(slot)
	if e != 0 {
		return false, os.NewSyscallError("kcmp(KCMP_EPOLL_TFD)", e)
	}
	return r == 0, nil
}
