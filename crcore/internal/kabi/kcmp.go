//go:build linux && amd64

package kabi

// From include/uapi/linux/kcmp.h.

// KCMP_EPOLL_TFD compares a file with a target registered in an epoll.
const KCMP_EPOLL_TFD = 7

// KcmpEpollSlot is struct kcmp_epoll_slot: the epoll fd, the target fd
// number it was registered with, and which of the registrations of that
// number (toff) to compare.
type KcmpEpollSlot struct {
	Efd  uint32
	Tfd  uint32
	Toff uint32
}

// SizeofKcmpEpollSlot is sizeof(struct kcmp_epoll_slot).
const SizeofKcmpEpollSlot = 12
