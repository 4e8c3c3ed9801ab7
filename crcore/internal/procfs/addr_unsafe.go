//go:build linux

package procfs

import "unsafe"

func sliceAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
