//go:build linux && amd64

package kabi

// PrctlMMMap is struct prctl_mm_map from include/uapi/linux/prctl.h,
// passed to prctl(PR_SET_MM, PR_SET_MM_MAP, &map, sizeof(map)).
type PrctlMMMap struct {
	StartCode  uint64
	EndCode    uint64
	StartData  uint64
	EndData    uint64
	StartBrk   uint64
	Brk        uint64
	StartStack uint64
	ArgStart   uint64
	ArgEnd     uint64
	EnvStart   uint64
	EnvEnd     uint64
	Auxv       uint64 // user pointer to the auxv words
	AuxvSize   uint32 // bytes
	ExeFD      uint32
}

// SizeofPrctlMMMap is the size the kernel expects (PR_SET_MM_MAP_SIZE).
const SizeofPrctlMMMap = 104
