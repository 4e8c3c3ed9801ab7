//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/image"
)

// Verify checks the image directory dir without restoring it: every file
// against the checksums the dump wrote, every image decoded and checked
// for consistency, and the images' architecture, format version and
// kernel features against this machine. The error names the file.
func Verify(dir string) error {
	s, err := loadVerified(dir)
	if err != nil {
		return err
	}
	return s.dir.Close()
}

// loadVerified is loadImages behind the integrity and compatibility
// checks (crhook verify); a restore uses loadDeferringPages.
func loadVerified(path string) (*imageSet, error) { return loadChecked(path, nil) }

// loadChecked is loadVerified but for the files later names, whose
// contents are left to the caller (loadDeferringPages).
func loadChecked(path string, later func(name string) bool) (*imageSet, error) {
	d, err := image.OpenDir(path)
	if err != nil {
		return nil, err
	}
	deferred, err := d.VerifyChecksumsExcept(later)
	if err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("verify: %w", asBadImage(err))
	}
	s, err := loadImagesFrom(d)
	if err != nil {
		return nil, asBadImage(err)
	}
	if len(deferred) > 0 {
		if err := s.deferChecks(deferred); err != nil {
			_ = s.dir.Close()
			return nil, fmt.Errorf("verify: %w", asBadImage(err))
		}
	}
	if err := s.checkKernel(); err != nil {
		_ = s.dir.Close()
		return nil, err
	}
	return s, nil
}

// asBadImage makes the image package's malformed-image errors match
// crcore's ErrBadImage too.
func asBadImage(err error) error {
	if errors.Is(err, image.ErrBadImage) && !errors.Is(err, ErrBadImage) {
		return fmt.Errorf("%w (%w)", err, ErrBadImage)
	}
	return err
}

// validate checks what loadImages read for consistency, so that no image
// field makes the restore write outside the address space it builds: VMAs
// page aligned, inside the user address space (never over [vsyscall] or
// the kernel's half), not overlapping; pages files as long as their
// pagemaps say.
func (s *imageSet) validate() error {
	if err := s.checkPathShapes(); err != nil {
		return err
	}
	if ps := s.ext.GetPageSize(); ps != 0 && int(ps) != pageSize {
		return fmt.Errorf("crhook-inventory.img: images of a machine with %d-byte pages, this one has %d: %w", ps, pageSize, ErrNotSupported)
	}
	for _, ti := range s.tasks {
		if ti.zombie() {
			continue
		}
		for _, th := range ti.threads {
			if err := checkXState(fmt.Sprintf("%s: thread %d", extName(ti.pid), th.tid), th.ext.GetXsave()); err != nil {
				return err
			}
		}
		name := mmName(ti.pid)
		vmas := ti.mm.GetVmas()
		idx := make([]int, len(vmas))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return vmas[idx[a]].GetStart() < vmas[idx[b]].GetStart() })
		prevEnd := uint64(0)
		for _, i := range idx {
			v := vmas[i]
			st, end := v.GetStart(), v.GetEnd()
			switch {
			case st >= end || st%uint64(pageSize) != 0 || end%uint64(pageSize) != 0:
				return fmt.Errorf("%s: vma %d [%#x, %#x) is empty or not page aligned: %w", name, i, st, end, ErrBadImage)
			case end > taskSizeMax:
				return fmt.Errorf("%s: vma %d [%#x, %#x) lies outside the user address space: %w", name, i, st, end, ErrBadImage)
			case st < prevEnd:
				return fmt.Errorf("%s: vma %d [%#x, %#x) overlaps another: %w", name, i, st, end, ErrBadImage)
			}
			prevEnd = end
		}
		pages := ti.ownPages()
		if pages == 0 {
			continue
		}
		pn := pagesName(int(ti.pages))
		f, err := s.dir.OpenPages(pn)
		if err != nil {
			return fmt.Errorf("%s (named by %s): %w", pn, pagemapName(ti.pid), err)
		}
		var st unix.Stat_t
		err = unix.Fstat(int(f.Fd()), &st)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", pn, err)
		}
		if want := pages * uint64(pageSize); uint64(st.Size) < want {
			return fmt.Errorf("%s: %d bytes, %s needs %d: %w", pn, st.Size, pagemapName(ti.pid), want, ErrBadImage)
		}
	}
	return nil
}

// Kernel features images may need, probed once each.
var (
	featureMu    sync.Mutex
	featureCache = map[string]error{}
	// featureProbes maps a feature's name to its probe; tests replace
	// entries to pose as a kernel without the feature.
	featureProbes = map[string]func() error{
		"rseq": probeRseq,
	}
)

// probeRseq: rseq(NULL, 0, 0, 0) fails with EINVAL on a kernel that has
// rseq, ENOSYS on one without.
func probeRseq() error {
	_, _, e := unix.Syscall6(unix.SYS_RSEQ, 0, 0, 0, 0, 0, 0)
	if e == unix.ENOSYS {
		return fmt.Errorf("rseq(2): %w", e)
	}
	return nil
}

func haveFeature(name string) error {
	featureMu.Lock()
	defer featureMu.Unlock()
	if err, ok := featureCache[name]; ok {
		return err
	}
	err := featureProbes[name]()
	featureCache[name] = err
	return err
}

// checkKernel refuses images that need a kernel feature this kernel lacks.
func (s *imageSet) checkKernel() error {
	for _, ti := range s.tasks {
		for _, th := range ti.threads {
			if th.core.GetThreadCore().GetRseqEntry().GetRseqAbiPointer() == 0 && th.ext.GetRseq().GetPtr() == 0 {
				continue
			}
			if err := haveFeature("rseq"); err != nil {
				return fmt.Errorf("%s: thread %d registered rseq, and this kernel lacks it (%w): %w", coreName(th.tid), th.tid, err, ErrNotSupported)
			}
		}
	}
	return nil
}
