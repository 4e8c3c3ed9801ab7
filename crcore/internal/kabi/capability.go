//go:build linux && amd64

package kabi

// From include/uapi/linux/capability.h and include/uapi/linux/securebits.h.

// LINUX_CAPABILITY_VERSION_3: capget/capset with two 32-bit words per
// set.
const LINUX_CAPABILITY_VERSION_3 = 0x20080522

// CapUserHeader is struct __user_cap_header_struct.
type CapUserHeader struct {
	Version uint32
	Pid     int32
}

// CapUserData is struct __user_cap_data_struct; version 3 passes two.
type CapUserData struct {
	Effective   uint32
	Permitted   uint32
	Inheritable uint32
}

// Sizes of the capget/capset structures.
const (
	SizeofCapUserHeader = 8
	SizeofCapUserData   = 12
)

// securebits.
const (
	SECBIT_NOROOT                 = 1 << 0
	SECBIT_NOROOT_LOCKED          = 1 << 1
	SECBIT_NO_SETUID_FIXUP        = 1 << 2
	SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
	SECBIT_KEEP_CAPS              = 1 << 4
	SECBIT_KEEP_CAPS_LOCKED       = 1 << 5
	SECBIT_NO_CAP_AMBIENT_RAISE   = 1 << 6
)
