//go:build linux && amd64

package kabi

// From include/uapi/linux/time.h and include/uapi/linux/time_types.h.

// Itimerspec is struct itimerspec (struct __kernel_itimerspec on x86_64):
// interval, then value, each seconds and nanoseconds.
type Itimerspec struct {
	IntervalSec  int64
	IntervalNsec int64
	ValueSec     int64
	ValueNsec    int64
}

// SizeofItimerspec is sizeof(struct itimerspec).
const SizeofItimerspec = 32
