//go:build linux && amd64

package kabi

// From include/uapi/linux/seccomp.h and include/uapi/linux/filter.h.

// seccomp(2) operations and filter flags.
const (
	SECCOMP_SET_MODE_STRICT   = 0
	SECCOMP_SET_MODE_FILTER   = 1
	SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
	SECCOMP_FILTER_FLAG_LOG   = 1 << 1
)

// SECCOMP_MODE_* as /proc/PID/status "Seccomp:" reports them.
const (
	SECCOMP_MODE_DISABLED = 0
	SECCOMP_MODE_STRICT   = 1
	SECCOMP_MODE_FILTER   = 2
)

// SockFprog is struct sock_fprog: the length of a classic BPF program in
// instructions and a pointer to them.
type SockFprog struct {
	Len    uint16
	_      [6]byte
	Filter uint64
}

// SizeofSockFprog is sizeof(struct sock_fprog).
const SizeofSockFprog = 16

// SizeofSockFilter is sizeof(struct sock_filter), one instruction.
const SizeofSockFilter = 8
