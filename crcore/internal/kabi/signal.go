//go:build linux && amd64

package kabi

// KSigaction is the kernel's struct sigaction for rt_sigaction(2) on x86_64
// (arch/x86/include/uapi/asm/signal.h, struct sigaction with SA_RESTORER),
// not glibc's: handler, flags, restorer, then a 64-bit mask.
type KSigaction struct {
	Handler  uint64
	Flags    uint64
	Restorer uint64
	Mask     uint64
}

// SizeofKSigaction is sizeof(struct sigaction) on x86_64.
const SizeofKSigaction = 32

// StackT is stack_t from include/uapi/asm-generic/signal.h (x86_64 layout).
type StackT struct {
	SP    uint64
	Flags int32
	_     int32
	Size  uint64
}

// SizeofStackT is sizeof(stack_t).
const SizeofStackT = 24

// NSig is the number of signals (_NSIG).
const NSig = 64

// Kernel-internal syscall restart codes (include/linux/errno.h). They are
// visible in rax of a task stopped inside an interrupted syscall and must
// never reach user code.
const (
	ERESTARTSYS          = 512
	ERESTARTNOINTR       = 513
	ERESTARTNOHAND       = 514
	ERESTARTRESTARTBLOCK = 516
)

// sigaltstack flags (include/uapi/linux/signal.h).
const (
	SS_ONSTACK = 1
	SS_DISABLE = 2
)

// SizeofSiginfo is sizeof(siginfo_t) (include/uapi/asm-generic/siginfo.h).
const SizeofSiginfo = 128

// si_code values of include/uapi/asm-generic/siginfo.h that decide how a
// queued signal may be queued again.
const (
	SI_USER    = 0
	SI_KERNEL  = 0x80
	SI_QUEUE   = -1
	SI_TIMER   = -2
	SI_MESGQ   = -3
	SI_ASYNCIO = -4
	SI_SIGIO   = -5
	SI_TKILL   = -6
)

// Sigevent is struct sigevent of include/uapi/asm-generic/siginfo.h on
// x86_64: the value, signal and notify method, then the union whose first
// member is the target thread of SIGEV_THREAD_ID.
type Sigevent struct {
	Value    uint64
	Signo    int32
	Notify   int32
	ThreadID int32
	_        [44]byte
}

// SizeofSigevent is sizeof(struct sigevent) (SIGEV_MAX_SIZE).
const SizeofSigevent = 64

// sigev_notify values.
const (
	SIGEV_SIGNAL    = 0
	SIGEV_NONE      = 1
	SIGEV_THREAD    = 2
	SIGEV_THREAD_ID = 4
)
