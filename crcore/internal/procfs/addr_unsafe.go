//go:build linux

package procfs

import "unsafe"

// sliceAddr is the address of b's first byte, for looking it up in our
// own pagemap. b must not be Go heap memory (which can move): the caller
// passes an mmap'd region.
func sliceAddr(b []byte) uint64 {
	return uint64(uintptr(unsafe.Pointer(&b[0]))) //nolint:gosec // audited: b is mmap'd, its address is stable
}
