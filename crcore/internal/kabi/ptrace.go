//go:build linux && amd64

package kabi

// RseqConfiguration is struct ptrace_rseq_configuration from
// include/uapi/linux/ptrace.h (PTRACE_GET_RSEQ_CONFIGURATION).
type RseqConfiguration struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	_              uint32
}

// SizeofRseqConfiguration is sizeof(struct ptrace_rseq_configuration).
const SizeofRseqConfiguration = 24

// arch/x86/include/uapi/asm/prctl.h
const (
	ARCH_MAP_VDSO_64 = 0x2003
)

// PTRACE_EVENT_STOP and friends, shifted as waitpid reports them
// (status>>16).
const (
	PTRACE_EVENT_FORK  = 1
	PTRACE_EVENT_VFORK = 2
	PTRACE_EVENT_CLONE = 3
	PTRACE_EVENT_EXEC  = 4
	PTRACE_EVENT_EXIT  = 6
	PTRACE_EVENT_STOP  = 128
)

// PtracePeeksiginfoArgs is struct ptrace_peeksiginfo_args from
// include/uapi/linux/ptrace.h (PTRACE_PEEKSIGINFO): read Nr queued
// siginfos from position Off of the thread's queue, or of the process's
// shared queue with PTRACE_PEEKSIGINFO_SHARED in Flags.
type PtracePeeksiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// SizeofPtracePeeksiginfoArgs is sizeof(struct ptrace_peeksiginfo_args).
const SizeofPtracePeeksiginfoArgs = 16

// SeccompMetadata is struct seccomp_metadata from
// include/uapi/linux/ptrace.h (PTRACE_SECCOMP_GET_METADATA).
type SeccompMetadata struct {
	FilterOff uint64
	Flags     uint64
}

// SizeofSeccompMetadata is sizeof(struct seccomp_metadata).
const SizeofSeccompMetadata = 16
