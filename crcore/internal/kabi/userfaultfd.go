//go:build linux && amd64

package kabi

// From include/uapi/linux/userfaultfd.h.

// UFFD_API is the API version UFFDIO_API asks for.
const UFFD_API = 0xaa

// UFFD_USER_MODE_ONLY (userfaultfd flag): only faults taken in user mode
// are handled; a kernel access to a missing page fails instead of
// waiting. It needs no privilege.
const UFFD_USER_MODE_ONLY = 0x1

// UFFDIO_REGISTER_MODE_MISSING: report (and allow UFFDIO_COPY into)
// pages not present.
const UFFDIO_REGISTER_MODE_MISSING = 0x1

// Ioctls: _IOWR(0xAA, 0x3F, uffdio_api), _IOWR(0xAA, 0x00,
// uffdio_register), _IOR(0xAA, 0x01, uffdio_range), _IOWR(0xAA, 0x03,
// uffdio_copy).
const (
	UFFDIO_API        = 0xc018aa3f
	UFFDIO_REGISTER   = 0xc020aa00
	UFFDIO_UNREGISTER = 0x8010aa01
	UFFDIO_COPY       = 0xc028aa03
)

// UffdioAPI is struct uffdio_api.
type UffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// UffdioRange is struct uffdio_range.
type UffdioRange struct {
	Start uint64
	Len   uint64
}

// UffdioRegister is struct uffdio_register.
type UffdioRegister struct {
	Range  UffdioRange
	Mode   uint64
	Ioctls uint64
}

// UffdioCopy is struct uffdio_copy. Copy is set by the kernel: the bytes
// copied, or a negative errno.
type UffdioCopy struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Copy int64
}

// Sizes the kernel expects.
const (
	SizeofUffdioAPI      = 24
	SizeofUffdioRange    = 16
	SizeofUffdioRegister = 32
	SizeofUffdioCopy     = 40
)
