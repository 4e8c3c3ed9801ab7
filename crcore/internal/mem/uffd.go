//go:build linux

package mem

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

// Userfault installs pages in a task through a userfaultfd of the task's
// mm. UFFDIO_COPY allocates each missing page and copies into it: no page
// cleared first and nothing pinned, where process_vm_writev faults the
// page in (clearing it), pins it and copies. On this machine kind that
// is about a third of the cost of filling fresh memory.
//
// Only ranges known to hold no pages are registered (Register), and only
// runs marked Run.Missing go through it; a page found present after all
// (EEXIST) is written with process_vm_writev instead. While a range is
// registered the task must not run: its own touch of a missing page
// would wait for a fault we never serve. Close unregisters every range.
type Userfault struct {
	f      *os.File
	ranges []kabi.UffdioRange
	copied atomic.Uint64 // bytes installed with UFFDIO_COPY
}

// NewUserfault takes f, a userfaultfd of the task's mm created with
// UFFD_USER_MODE_ONLY (so a kernel access to a missing page fails
// instead of waiting), and does the API handshake. f is closed on error.
func NewUserfault(f *os.File) (*Userfault, error) {
	api := kabi.UffdioAPI{API: kabi.UFFD_API}
	if err := uffdIoctl(f, kabi.UFFDIO_API, &api); err != nil {
		_ = f.Close()
		return nil, os.NewSyscallError("ioctl UFFDIO_API", err)
	}
	return &Userfault{f: f}, nil
}

// Register arms [start, start+n), which must be anonymous memory with no
// page present, for UFFDIO_COPY.
func (u *Userfault) Register(start, n uint64) error {
	reg := kabi.UffdioRegister{Range: kabi.UffdioRange{Start: start, Len: n}, Mode: kabi.UFFDIO_REGISTER_MODE_MISSING}
	if err := uffdIoctl(u.f, kabi.UFFDIO_REGISTER, &reg); err != nil {
		return fmt.Errorf("register %#x-%#x with the userfaultfd: %w", start, start+n, os.NewSyscallError("ioctl UFFDIO_REGISTER", err))
	}
	u.ranges = append(u.ranges, reg.Range)
	return nil
}

// Close unregisters every range, leaving the mappings as they were
// before Register, and closes the userfaultfd. Closing alone would also
// unregister them, but an error here is worth reporting.
func (u *Userfault) Close() error {
	var errs []error
	for _, r := range u.ranges {
		if err := uffdIoctl(u.f, kabi.UFFDIO_UNREGISTER, &r); err != nil {
			errs = append(errs, fmt.Errorf("unregister %#x-%#x from the userfaultfd: %w", r.Start, r.Start+r.Len, os.NewSyscallError("ioctl UFFDIO_UNREGISTER", err)))
		}
	}
	u.ranges = nil
	if err := u.f.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Installed returns the bytes installed with UFFDIO_COPY so far.
func (u *Userfault) Installed() uint64 { return u.copied.Load() }

// copy installs src at dst in task pid. A page that is present after
// all is written with process_vm_writev.
func (u *Userfault) copy(pid int, dst uint64, src []byte) error {
	for len(src) > 0 {
		c := kabi.UffdioCopy{Dst: dst, Src: uint64(uintptr(unsafe.Pointer(&src[0]))), Len: uint64(len(src))} //nolint:gosec // audited: the address of our own buffer, for the kernel to copy from
		err := uffdIoctl(u.f, kabi.UFFDIO_COPY, &c)
		if c.Copy > 0 {
			dst += uint64(c.Copy)
			src = src[c.Copy:]
			u.copied.Add(uint64(c.Copy))
		}
		switch {
		case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EEXIST):
			// A page is there already: overwrite that one page.
			n := min(len(src), int(pageSize))
			l := []unix.Iovec{{Base: &src[0]}}
			l[0].SetLen(n)
			if err := writev(pid, l, []unix.RemoteIovec{{Base: uintptr(dst), Len: n}}); err != nil {
				return err
			}
			dst += uint64(n)
			src = src[n:]
		default:
			return fmt.Errorf("write memory of task %d at %#x: %w", pid, dst, os.NewSyscallError("ioctl UFFDIO_COPY", err))
		}
	}
	return nil
}

// put writes local into task pid at rem: the pairs marked in miss (one
// flag a pair) through u, the others with process_vm_writev. Without u
// everything is written.
func put(pid int, u *Userfault, local []unix.Iovec, rem []unix.RemoteIovec, miss []bool) error {
	if u == nil {
		return writev(pid, local, rem)
	}
	for i := 0; i < len(rem); {
		j := i + 1
		for j < len(rem) && miss[j] == miss[i] {
			j++
		}
		if !miss[i] {
			if err := writev(pid, local[i:j], rem[i:j]); err != nil {
				return err
			}
		}
		for k := i; k < j && miss[i]; k++ {
			b := unsafe.Slice(local[k].Base, local[k].Len) //nolint:gosec // audited: the iovec describes our own buffer or mapping
			if err := u.copy(pid, uint64(rem[k].Base), b); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// uffdIoctl runs ioctl req on the userfaultfd f with arg, a kabi struct
// of the size req encodes.
func uffdIoctl[T kabi.UffdioAPI | kabi.UffdioRegister | kabi.UffdioRange | kabi.UffdioCopy](f *os.File, req uintptr, arg *T) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if cerr := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(arg))) //nolint:gosec // audited: arg is the struct req names, checked in size by kabi's tests
	}); cerr != nil {
		return cerr
	}
	if errno != 0 {
		return errno
	}
	return nil
}
