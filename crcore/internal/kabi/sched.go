//go:build linux && amd64

package kabi

// CloneArgs is struct clone_args from include/uapi/linux/sched.h
// (CLONE_ARGS_SIZE_VER2).
type CloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTid   uint64
	ParentTid  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTid     uint64 // user pointer to pid_t[SetTidSize]
	SetTidSize uint64
	Cgroup     uint64
}

// SizeofCloneArgs is CLONE_ARGS_SIZE_VER2.
const SizeofCloneArgs = 88
