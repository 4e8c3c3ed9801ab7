//go:build linux

package procfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	PMPresent    = 1 << 63
	PMSwapped    = 1 << 62
	PMFileShared = 1 << 61 // file page or shared anonymous
	PMExclusive  = 1 << 56
	PMSoftDirty  = 1 << 55
	PMPFNMask    = (1 << 55) - 1
)

// Pagemap reads /proc/PID/pagemap.
type Pagemap struct {
	f *os.File
}

// OpenPagemap opens /proc/PID/pagemap.
func OpenPagemap(pid int) (*Pagemap, error) {
	f, err := OpenFile(Path(pid, "pagemap"), os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return &Pagemap{f: f}, nil
}

// Close closes the pagemap.
func (p *Pagemap) Close() error { return p.f.Close() }

// Read fills out with the entries of the pages starting at addr.
func (p *Pagemap) Read(addr uint64, out []uint64, buf []byte) error {
	n := len(out) * 8
	if len(buf) < n {
		buf = make([]byte, n)
	}
	if _, err := p.f.ReadAt(buf[:n], int64(addr/uint64(PageSize)*8)); err != nil {
		return fmt.Errorf("pagemap at %#x: %w", addr, err)
	}
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return nil
}

// PageSize is the base page size.
var PageSize = os.Getpagesize()

var zeroPFN struct {
	once sync.Once
	pfn  uint64
	err  error
}

// ZeroPFN returns the page frame of the kernel's shared zero page, found
// by reading a never-written anonymous page of our own. It needs
// CAP_SYS_ADMIN to see frame numbers; without it the PFN reads as 0 and
// zero-page skipping is off.
func ZeroPFN() (uint64, error) {
	zeroPFN.once.Do(func() {
		b, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			zeroPFN.err = err
			return
		}
		defer unix.Munmap(b)
		// Reading the page faults in the kernel's zero page; a fresh
		// anonymous mapping that reads non-zero is not one.
		if b[0] != 0 {
			zeroPFN.err = errors.New("fresh anonymous page reads non-zero")
			return
		}
		pm, err := OpenPagemap(os.Getpid())
		if err != nil {
			zeroPFN.err = err
			return
		}
		defer pm.Close()
		var e [1]uint64
		addr := sliceAddr(b)
		if err := pm.Read(addr, e[:], nil); err != nil {
			zeroPFN.err = err
			return
		}
		if e[0]&PMPresent != 0 {
			zeroPFN.pfn = e[0] & PMPFNMask
		}
	})
	return zeroPFN.pfn, zeroPFN.err
}
