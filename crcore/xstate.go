//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// XSAVE areas (NT_X86_XSTATE, standard format) of another CPU. The kernel
// takes a thread's XSAVE area through PTRACE_SETREGSET only whole, exactly
// as large as this CPU's (else EFAULT), and only with state components
// this kernel enables (else EINVAL): an image from a CPU with other
// features would fail late in the restore, with an errno that names
// nothing. So the images are checked first, against the features the
// kernel reports (arch_prctl ARCH_GET_XCOMP_SUPP) and the size CPUID leaf
// 0xD gives for them.

// Offsets in the XSAVE area (arch/x86/include/uapi/asm/sigcontext.h):
// the kernel's software bytes in the legacy area's reserved tail
// (struct _fpx_sw_bytes: magic1, extended_size, xfeatures, xstate_size),
// then the XSAVE header's xstate_bv.
const (
	xsaveLegacySize  = 512
	xsaveSwXfeatures = 464 + 8
	xsaveHeaderBV    = xsaveLegacySize
	xsaveMinSize     = xsaveLegacySize + 64
	cpuidXsaveLeaf   = 0xd
	fpXstateMagic1   = 0x46505853
	xsaveSwMagic1    = 464
)

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// hostXState is this machine's XSAVE feature mask and area size.
var hostXState = sync.OnceValues(func() (xstateShape, error) {
	mask, err := archGetXcompSupp()
	if err != nil {
		return xstateShape{}, err
	}
	// EBX of leaf 0xD, sub-leaf 0: the size XSAVE needs for the features
	// enabled in XCR0, which are the kernel's user features.
	_, ebx, _, _ := cpuid(cpuidXsaveLeaf, 0)
	return xstateShape{features: mask, size: int(ebx)}, nil
})

type xstateShape struct {
	features uint64
	size     int
}

// checkXState refuses the XSAVE area x of a thread (image file name) that
// this CPU cannot load.
func checkXState(name string, x []byte) error {
	if len(x) == 0 {
		return nil
	}
	if len(x) < xsaveMinSize {
		return fmt.Errorf("%s: XSAVE area of %d bytes, shorter than its legacy area and header: %w", name, len(x), ErrBadImage)
	}
	host, err := hostXState()
	if err != nil {
		return fmt.Errorf("%s: this CPU's XSAVE features: %w", name, err)
	}
	used := binary.LittleEndian.Uint64(x[xsaveHeaderBV:])
	if lack := used &^ host.features; lack != 0 {
		return fmt.Errorf("%s: the thread's XSAVE state uses features %#x (xstate_bv %#x) that this CPU or kernel lacks (it has %#x): restore on a CPU with them: %w",
			name, lack, used, host.features, ErrNotSupported)
	}
	if len(x) != host.size {
		return fmt.Errorf("%s: XSAVE area of %d bytes (state in use %#x), this CPU's is %d bytes (features %#x): the kernel loads only an area of its own size: %w",
			name, len(x), used, host.size, host.features, ErrNotSupported)
	}
	return nil
}
