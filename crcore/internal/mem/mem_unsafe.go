//go:build linux

package mem

import "unsafe"

// addBytes is p advanced by n bytes; p points into a buffer or mapping
// at least that long.
func addBytes(p *byte, n int) unsafe.Pointer { return unsafe.Add(unsafe.Pointer(p), n) } //nolint:gosec // audited: callers keep p+n inside the buffer or mapping, as the doc says
