//go:build linux && amd64

package crcore

import (
	"errors"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// semctl and msgctl/msgrcv/msgsnd with Go buffers (x/sys wraps only shm).

// SysV command values from include/uapi/linux/sem.h and msg.h.
const (
	semGetall  = 13
	semSetall  = 17
	msgCopy    = 0o40000
	msgNoerror = 0o10000
	ipcStat    = 2
	ipcSet     = 1
	ipcRmid    = 0
)

func semctlBuf(id, cmd int, vals []uint16) error {
	var p unsafe.Pointer
	if len(vals) > 0 {
		p = unsafe.Pointer(&vals[0]) //nolint:gosec // audited: vals holds a value for each semaphore of the set (the caller sizes it); KeepAlive below
	}
	_, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, uintptr(cmd), uintptr(p), 0, 0)
	runtime.KeepAlive(vals)
	if e != 0 {
		return os.NewSyscallError("semctl", e)
	}
	return nil
}

// ipcCtl runs semctl or msgctl cmd with a struct buffer (IPC_STAT,
// IPC_SET).
func ipcCtl(nr uintptr, id, cmd int, buf []byte) error {
	var e unix.Errno
	if nr == unix.SYS_SEMCTL {
		_, _, e = unix.Syscall6(nr, uintptr(id), 0, uintptr(cmd), uintptr(unsafe.Pointer(&buf[0])), 0, 0) //nolint:gosec // audited: buf is sized for the kernel's semid64_ds/msqid64_ds; KeepAlive below
	} else {
		_, _, e = unix.Syscall(nr, uintptr(id), uintptr(cmd), uintptr(unsafe.Pointer(&buf[0]))) //nolint:gosec // audited: buf is sized for the kernel's msqid64_ds; KeepAlive below
	}
	runtime.KeepAlive(buf)
	if e != 0 {
		return os.NewSyscallError("ipc ctl", e)
	}
	return nil
}

// msgrcvBuf receives into buf (mtype then text) and returns the text
// length.
func msgrcvBuf(id int, buf []byte, typ int64, flags int) (int, error) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), uintptr(typ), uintptr(flags), 0) //nolint:gosec // audited: the kernel writes at most len(buf)-8 bytes after the 8-byte mtype; KeepAlive below
		runtime.KeepAlive(buf)
		if errors.Is(e, unix.EINTR) {
			continue
		}
		if e != 0 {
			return 0, os.NewSyscallError("msgrcv", e)
		}
		return int(n), nil
	}
}

func msgsndBuf(id int, buf []byte) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), unix.IPC_NOWAIT, 0, 0) //nolint:gosec // audited: the kernel reads len(buf)-8 bytes after the 8-byte mtype; KeepAlive below
		runtime.KeepAlive(buf)
		if errors.Is(e, unix.EINTR) {
			continue
		}
		if e != 0 {
			return os.NewSyscallError("msgsnd", e)
		}
		return nil
	}
}
