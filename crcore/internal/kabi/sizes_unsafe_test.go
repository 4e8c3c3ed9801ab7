//go:build linux && amd64

package kabi

import (
	"testing"
	"unsafe"
)

func TestSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"prctl_mm_map", unsafe.Sizeof(PrctlMMMap{}), SizeofPrctlMMMap},
		{"sigaction", unsafe.Sizeof(KSigaction{}), SizeofKSigaction},
		{"stack_t", unsafe.Sizeof(StackT{}), SizeofStackT},
		{"clone_args", unsafe.Sizeof(CloneArgs{}), SizeofCloneArgs},
		{"ptrace_rseq_configuration", unsafe.Sizeof(RseqConfiguration{}), SizeofRseqConfiguration},
		{"kcmp_epoll_slot", unsafe.Sizeof(KcmpEpollSlot{}), SizeofKcmpEpollSlot},
		{"ptrace_peeksiginfo_args", unsafe.Sizeof(PtracePeeksiginfoArgs{}), SizeofPtracePeeksiginfoArgs},
		{"seccomp_metadata", unsafe.Sizeof(SeccompMetadata{}), SizeofSeccompMetadata},
		{"sigevent", unsafe.Sizeof(Sigevent{}), SizeofSigevent},
		{"sock_fprog", unsafe.Sizeof(SockFprog{}), SizeofSockFprog},
		{"__user_cap_header_struct", unsafe.Sizeof(CapUserHeader{}), SizeofCapUserHeader},
		{"__user_cap_data_struct", unsafe.Sizeof(CapUserData{}), SizeofCapUserData},
		{"itimerspec", unsafe.Sizeof(Itimerspec{}), SizeofItimerspec},
		{"uffdio_api", unsafe.Sizeof(UffdioAPI{}), SizeofUffdioAPI},
		{"uffdio_range", unsafe.Sizeof(UffdioRange{}), SizeofUffdioRange},
		{"uffdio_register", unsafe.Sizeof(UffdioRegister{}), SizeofUffdioRegister},
		{"uffdio_copy", unsafe.Sizeof(UffdioCopy{}), SizeofUffdioCopy},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, kernel expects %d", c.name, c.got, c.want)
		}
	}
}
