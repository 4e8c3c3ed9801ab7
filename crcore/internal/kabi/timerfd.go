//go:build linux && amd64

package kabi

// From include/uapi/linux/timerfd.h.

// TFD_IOC_SET_TICKS is _IOW('T', 0, __u64): set the expirations a
// timerfd reports on its next read (CONFIG_CHECKPOINT_RESTORE).
const TFD_IOC_SET_TICKS = 0x40085400
