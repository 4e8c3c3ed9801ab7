//go:build linux && amd64

package crcore

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/crhook/crhook/crcore/internal/crc"
	"github.com/crhook/crhook/crcore/internal/image"
)

// Pages files checked as they are read.
//
// A restore used to read every image file twice: once to verify its
// checksum, once to use it. For the pages files, which are nearly all of
// a large image, the second read is the fill, and it can sum what it
// reads as it goes (mem.FillOptions.Sum): a 2 GiB restore spent 0.4 s
// verifying before it created anything. So a restore checks a task's
// pages file against its checksum from the ranges the fill and the
// copy-on-write comparison (inherit.go) summed as they read them, and
// reads only what neither did. Every check
// completes before any restored task runs (restorer.checkPages), and a
// mismatch fails the restore, which kills the tree it built: a corrupt
// pages file still never runs. Everything else, including the pages of
// shared memory and SysV segments, which outlive a failed restore's
// tasks, is verified before the restore creates anything.

// pagesCheck is the deferred check of one pages file.
type pagesCheck struct {
	sum image.Checksum

	mu    sync.Mutex
	parts []summed
}

// summed is the CRC32C of n bytes at off.
type summed struct {
	off, n uint64
	crc    uint32
}

// add records the CRC of a range the fill read (any goroutine).
func (c *pagesCheck) add(off, n uint64, sum uint32) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.parts = append(c.parts, summed{off, n, sum})
	c.mu.Unlock()
}

// check completes the file's CRC from the ranges summed and the gaps
// between them, read from f, and compares it with the dump's.
func (c *pagesCheck) check(f io.ReaderAt) error {
	var buf []byte // for the gaps, which are rare
	c.mu.Lock()
	parts := c.parts
	c.parts = nil
	c.mu.Unlock()
	// By offset, the longest first: a range read twice (compared for
	// copy-on-write, then filled) is summed once.
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].off != parts[j].off {
			return parts[i].off < parts[j].off
		}
		return parts[i].n > parts[j].n
	})
	var (
		pos uint64 // bytes summed into total
		all uint32
	)
	gap := func(end uint64) error {
		if pos < end && buf == nil {
			buf = make([]byte, 1<<20)
		}
		for pos < end {
			n := min(uint64(len(buf)), end-pos)
			if _, err := f.ReadAt(buf[:n], int64(pos)); err != nil {
				return fmt.Errorf("verify image %s: %w", c.sum.Name, err)
			}
			all = crc.Update(all, buf[:n])
			pos += n
		}
		return nil
	}
	for _, p := range parts {
		if p.off < pos || p.off+p.n > c.sum.Size {
			// Read twice (or past the end): summing the rest from
			// the file is simpler than splitting CRCs.
			continue
		}
		if err := gap(p.off); err != nil {
			return err
		}
		all = crc.Combine(all, p.crc, p.n)
		pos += p.n
	}
	if err := gap(c.sum.Size); err != nil {
		return err
	}
	if all != c.sum.CRC32C {
		return image.MismatchError(c.sum, all)
	}
	return nil
}

// isPagesFile says whether an image file is a pages file.
func isPagesFile(name string) bool { return strings.HasPrefix(name, "pages-") }

// loadDeferringPages is loadVerified for a restore: the pages files of
// live tasks are checked as they are filled (s.checks), every other file
// before the images are decoded, or right after for the other pages
// files.
func loadDeferringPages(path string) (*imageSet, error) {
	return loadChecked(path, isPagesFile)
}

// deferChecks takes the pages files whose contents loadChecked left
// unchecked: those a live task is filled from become s.checks, the rest
// (shared memory, SysV) are checked now.
func (s *imageSet) deferChecks(later []image.Checksum) error {
	filled := map[string]bool{}
	for _, ti := range s.tasks {
		if !ti.zombie() && ti.ownPages() > 0 {
			filled[pagesName(int(ti.pages))] = true
		}
	}
	s.checks = map[string]*pagesCheck{}
	var now []image.Checksum
	for _, c := range later {
		if filled[c.Name] {
			s.checks[c.Name] = &pagesCheck{sum: c}
		} else {
			now = append(now, c)
		}
	}
	return s.dir.VerifyListed(now)
}

// checkPages completes the deferred checks of the pages files, once every
// fill is done and before any task runs; the files are summed by one
// worker per CPU (at most 4).
func (rs *restorer) checkPages() error {
	if len(rs.s.checks) == 0 {
		return nil
	}
	names := make([]string, 0, len(rs.s.checks))
	for n := range rs.s.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	errs := parallel(len(names), func(i int) error {
		f, err := rs.s.dir.OpenPages(names[i])
		if err != nil {
			return fmt.Errorf("verify image %s: %w", names[i], err)
		}
		defer f.Close()
		return rs.s.checks[names[i]].check(f)
	})
	rs.s.checks = nil
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("verify: %w", asBadImage(err))
		}
	}
	return nil
}

// pagesSum returns the fill's Sum for the task's pages file, or nil
// when the file was verified already.
func (rs *restorer) pagesSum(ti *taskImage) func(off, n uint64, crc uint32) {
	c := rs.s.checks[pagesName(int(ti.pages))]
	if c == nil {
		return nil
	}
	return c.add
}
