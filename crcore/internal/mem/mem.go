// Package mem moves a task's memory between its address space and the
// pages image.
//
// Dump is driven by /proc/PID/pagemap: only pages the task has (present
// or swapped) are written, never-touched pages and pages mapped to the
// kernel's zero page are skipped, and a private file mapping contributes
// only its copied-on-write pages. The scan comes first (every run's
// offset in the pages file is then known); the copy follows, with
// vectored process_vm_readv (up to IOV_MAX ranges a call) straight into
// bounded windows of a shared mapping of the pages file, split across
// CPUs (dump.go). Mappings the task cannot read (PROT_NONE, write-only)
// go through /proc/PID/mem instead.
//
// Restore writes the runs back with process_vm_writev into mappings that
// the caller made writable: a large image from per-worker pread buffers
// in parallel, a small one straight from a mapping of the file (fill.go).
//
//go:build linux

package mem

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/crc"
	"github.com/crhook/crhook/crcore/internal/procfs"
)

// Run is a range of consecutive dumped pages.
type Run struct {
	Addr    uint64
	NrPages uint64
	// Force: on restore the mapping is not writable, so the pages go in
	// through /proc/PID/mem, which writes past the protection.
	Force bool
	// Skip: on restore the task holds these pages already (inherited
	// from its parent, equal to the image's); Fill passes over their
	// bytes in the pages file.
	Skip bool
	// Missing: the task holds none of these pages and they lie in a
	// range registered with FillOptions.Userfault, which installs them.
	Missing bool
	// Parent: the task shared these pages copy-on-write with its parent,
	// at the same address of a like mapping, when it was dumped: their
	// bytes are in the parent's pages (or further up), not in the task's
	// own file, which has no room for them. Fill refuses such a run; the
	// caller either inherits the pages from the parent or fills them from
	// the parent's file.
	Parent bool
}

// Policy says which pages of a VMA are dumped.
type Policy int

// Policies.
const (
	// Skip: nothing (kernel mappings, shared file mappings whose data
	// lives in the file).
	Skip Policy = iota
	// Anon: every page the task has, except the zero page (private
	// anonymous memory).
	Anon
	// Shared: every page present in the shared object (shared anonymous
	// memory).
	Shared
	// Private file mapping: only pages that are the task's own copies.
	CoW
)

// PolicyFor picks the policy for a VMA.
func PolicyFor(v *procfs.VMA) Policy {
	switch {
	case v.Special():
		return Skip
	case v.Shared && !v.Anon():
		return Skip
	case v.Shared:
		return Shared
	case v.Anon():
		return Anon
	default:
		return CoW
	}
}

// Stats counts what a dump or restore moved.
type Stats struct {
	PagesScanned uint64
	PagesZero    uint64
	PagesWritten uint64
	// PagesParent: pages recorded as the parent's (Run.Parent).
	PagesParent uint64
}

const (
	bufSize   = 4 << 20 // bytes moved per vectored call
	iovMax    = 1024    // IOV_MAX
	pmEntries = 64 << 10
)

var pageSize = uint64(procfs.PageSize)

func want(e uint64, p Policy, zeroPFN uint64, st *Stats) bool {
	if e&procfs.PMSwapped != 0 {
		// A swapped page of a private file mapping is always an
		// anonymous copy.
		return true
	}
	if e&procfs.PMPresent == 0 {
		return false
	}
	switch p {
	case CoW:
		return e&procfs.PMFileShared == 0
	case Anon:
		if zeroPFN != 0 && e&procfs.PMPFNMask == zeroPFN {
			st.PagesZero++
			return false
		}
		return true
	case Shared:
		return true
	case Skip:
		return false
	}
	return false
}

// Fill writes runs, read in order from pages, into task pid. Runs not
// marked Force must lie in writable mappings.
//
// When pages is a file (an io.ReaderAt that can Seek) and holds at least
// parallelMin bytes, the writable runs are split by bytes into one share
// per CPU (at most maxWorkers), each filled by its own goroutine with its
// own buffer: on this machine kind the cost is the kernel faulting in the
// task's fresh pages, which scales with cores. pages is left positioned
// after the last run, as a sequential fill leaves it.
func Fill(pid int, runs []Run, pages io.Reader) (Stats, error) {
	return FillProgress(pid, runs, pages, nil)
}

// FillProgress is Fill that also adds the bytes written to progress (if
// not nil) as it goes.
func FillProgress(pid int, runs []Run, pages io.Reader, progress *atomic.Uint64) (Stats, error) {
	return FillWith(pid, runs, pages, FillOptions{Progress: progress})
}

// FillOptions are the extras of FillWith.
type FillOptions struct {
	// Progress, if set, counts the bytes written.
	Progress *atomic.Uint64
	// Sum, if set, is given the CRC32C of ranges of the pages file the
	// fill read, by offset, from any of the fill's goroutines, so the
	// caller can check the file without reading it again. What a fill
	// skips, or reads in order from a plain io.Reader, is not summed.
	Sum func(off, n uint64, crc uint32)
	// Userfault, if set, installs the runs marked Missing.
	Userfault *Userfault
}

// FillWith is Fill with options.
func FillWith(pid int, runs []Run, pages io.Reader, o FillOptions) (Stats, error) {
	for _, r := range runs {
		if r.Parent {
			return Stats{}, fmt.Errorf("pages at %#x (+%d) are the parent's: not in this file", r.Addr, r.NrPages)
		}
	}
	progress := o.Progress
	// A small fill (one worker) copies from a mapping of the file: no
	// buffer to allocate and clear per task, one copy. A large one
	// preads into per-worker buffers: measured on tmpfs, populating
	// mapped windows was no faster and costs RSS.
	if f, ok := pages.(*os.File); ok && fillWorkers(runs) == 1 {
		if base, err := f.Seek(0, io.SeekCurrent); err == nil && uint64(base)%pageSize == 0 {
			return fillMapped(pid, runs, f, uint64(base), 1, o)
		}
	}
	if ra, ok := pages.(readerAtSeeker); ok {
		if w := fillWorkers(runs); w > 1 {
			return fillParallel(pid, runs, ra, w, o)
		}
	}
	f := &filler{pid: pid, pages: pages, buf: make([]byte, bufSize), progress: progress, uf: o.Userfault}
	defer f.close()
	for _, r := range runs {
		if r.Skip {
			if err := f.flush(); err != nil {
				return f.st, err
			}
			if _, err := io.CopyN(io.Discard, pages, int64(r.NrPages*pageSize)); err != nil {
				return f.st, fmt.Errorf("read pages: %w", err)
			}
			continue
		}
		if r.Force {
			if err := f.force(r); err != nil {
				return f.st, err
			}
			continue
		}
		if err := f.add(piece{r.Addr, 0, r.NrPages * pageSize, r.Missing}); err != nil {
			return f.st, err
		}
	}
	return f.st, f.flush()
}

const (
	parallelMin = 64 << 20 // bytes below which one goroutine fills
	maxWorkers  = 4
)

type readerAtSeeker interface {
	io.ReaderAt
	io.Seeker
}

func fillWorkers(runs []Run) int {
	var total uint64
	for _, r := range runs {
		if !r.Force && !r.Skip {
			total += r.NrPages * pageSize
		}
	}
	if total < parallelMin {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), maxWorkers)
}

// piece is part of a run: where it goes, where it is in the pages file;
// missing: see Run.Missing.
type piece struct {
	addr, off, len uint64
	missing        bool
}

// splitRuns cuts the writable runs, whose bytes lie in order in the
// pages file from offset base, into nw shares of about the same size;
// the Force runs come apart, in order; Skip runs only advance the
// offset. end is the offset after the last run.
func splitRuns(runs []Run, base uint64, nw int) (shares [][]piece, forced []piece, end uint64) {
	var total uint64
	for _, r := range runs {
		if !r.Force && !r.Skip {
			total += r.NrPages * pageSize
		}
	}
	// share: bytes per worker, in whole pages.
	share := max(pageSize, (total/uint64(nw)+pageSize-1)/pageSize*pageSize)
	shares = make([][]piece, nw)
	off, done := base, uint64(0) // file offset; writable bytes handed out
	for _, r := range runs {
		addr, left, miss := r.Addr, r.NrPages*pageSize, r.Missing
		if r.Skip {
			off += left
			continue
		}
		if r.Force {
			forced = append(forced, piece{addr, off, left, false})
			off += left
			continue
		}
		for left > 0 {
			w := min(int(done/share), nw-1)
			n := left
			if w < nw-1 {
				n = min(left, uint64(w+1)*share-done)
			}
			shares[w] = append(shares[w], piece{addr, off, n, miss})
			addr, off, done, left = addr+n, off+n, done+n, left-n
		}
	}
	return shares, forced, off
}

// fillParallel fills the writable runs with nw goroutines, then the Force
// runs in order. Every read is a pread at the run's offset in pages.
func fillParallel(pid int, runs []Run, pages readerAtSeeker, nw int, o FillOptions) (Stats, error) {
	base, err := pages.Seek(0, io.SeekCurrent)
	if err != nil {
		return Stats{}, fmt.Errorf("read pages: %w", err)
	}
	shares, forced, off := splitRuns(runs, uint64(base), nw)
	var (
		wg    sync.WaitGroup
		stop  atomic.Bool
		errs  = make([]error, nw)
		stats = make([]Stats, nw)
	)
	for w := range nw {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &filler{pid: pid, ra: pages, buf: make([]byte, bufSize), stop: &stop, progress: o.Progress, sum: o.Sum, uf: o.Userfault}
			defer f.close()
			for _, p := range shares[w] {
				if err := f.add(p); err != nil {
					errs[w] = err
					stop.Store(true)
					return
				}
			}
			if err := f.flush(); err != nil {
				errs[w] = err
				stop.Store(true)
			}
			stats[w] = f.st
		}()
	}
	wg.Wait()
	var st Stats
	for w := range nw {
		st.PagesWritten += stats[w].PagesWritten
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, errStopped) {
			return st, err
		}
	}
	f := &filler{pid: pid, ra: pages, buf: make([]byte, bufSize), progress: o.Progress, sum: o.Sum}
	defer f.close()
	for _, p := range forced {
		if err := f.forceAt(p); err != nil {
			return st, err
		}
	}
	st.PagesWritten += f.st.PagesWritten
	if _, err := pages.Seek(int64(off), io.SeekStart); err != nil {
		return st, fmt.Errorf("read pages: %w", err)
	}
	return st, nil
}

type filler struct {
	pid int
	// pages is read in order; ra, if set, is read at each piece's offset.
	pages io.Reader
	ra    io.ReaderAt
	buf   []byte
	local []unix.Iovec
	rem   []unix.RemoteIovec
	miss  []bool // per iovec: install through uf
	uf    *Userfault
	// spans are the preads that fill buf[:used] from ra, contiguous
	// file ranges merged.
	spans []piece
	used  int
	memf  *os.File
	st    Stats
	stop  *atomic.Bool // another worker failed
	// progress, if set, counts the bytes written.
	progress *atomic.Uint64
	// sum, if set, gets the CRC32C of what is read from ra.
	sum func(off, n uint64, crc uint32)
}

func (f *filler) wrote(n uint64) {
	f.st.PagesWritten += n / pageSize
	if f.progress != nil {
		f.progress.Add(n)
	}
}

// add queues p: p.len bytes for p.addr, found at p.off in ra (ignored
// without ra).
func (f *filler) add(p piece) error {
	addr, off, n := p.addr, p.off, p.len
	for n > 0 {
		if f.used == len(f.buf) || len(f.rem) == iovMax {
			if err := f.flush(); err != nil {
				return err
			}
		}
		k := min(n, uint64(len(f.buf)-f.used))
		f.local = append(f.local, unix.Iovec{Base: &f.buf[f.used]})
		f.local[len(f.local)-1].SetLen(int(k))
		f.rem = append(f.rem, unix.RemoteIovec{Base: uintptr(addr), Len: int(k)})
		f.miss = append(f.miss, p.missing)
		if f.ra != nil {
			if j := len(f.spans) - 1; j >= 0 && f.spans[j].off+f.spans[j].len == off {
				f.spans[j].len += k
			} else {
				f.spans = append(f.spans, piece{addr: uint64(f.used), off: off, len: k})
			}
		}
		f.used += int(k)
		addr, off, n = addr+k, off+k, n-k
	}
	return nil
}

func (f *filler) close() {
	if f.memf != nil {
		_ = f.memf.Close()
	}
}

// flush reads the batched pages from the image and writes them into the
// task with vectored process_vm_writev calls.
func (f *filler) flush() error {
	if f.used == 0 {
		return nil
	}
	if f.stop != nil && f.stop.Load() {
		return errStopped
	}
	if f.ra != nil {
		for _, sp := range f.spans {
			// sp.addr is the span's place in buf.
			b := f.buf[sp.addr : sp.addr+sp.len]
			if _, err := f.ra.ReadAt(b, int64(sp.off)); err != nil {
				return fmt.Errorf("read pages at %d: %w", sp.off, err)
			}
			if f.sum != nil {
				f.sum(sp.off, sp.len, crc.Update(0, b))
			}
		}
	} else if _, err := io.ReadFull(f.pages, f.buf[:f.used]); err != nil {
		return fmt.Errorf("read pages: %w", err)
	}
	if err := put(f.pid, f.uf, f.local, f.rem, f.miss); err != nil {
		return err
	}
	f.wrote(uint64(f.used))
	f.used, f.local, f.rem, f.miss, f.spans = 0, f.local[:0], f.rem[:0], f.miss[:0], f.spans[:0]
	return nil
}

// errStopped: a worker gave up because another one failed; that one's
// error is the one reported.
var errStopped = errors.New("stopped")

// forceAt writes one piece, read from ra, through /proc/PID/mem.
func (f *filler) forceAt(p piece) error {
	if f.memf == nil {
		m, err := procfs.OpenFile(procfs.Path(f.pid, "mem"), os.O_WRONLY)
		if err != nil {
			return err
		}
		f.memf = m
	}
	for p.len > 0 {
		n := min(p.len, uint64(len(f.buf)))
		if _, err := f.ra.ReadAt(f.buf[:n], int64(p.off)); err != nil {
			return fmt.Errorf("read pages at %d: %w", p.off, err)
		}
		if f.sum != nil {
			f.sum(p.off, n, crc.Update(0, f.buf[:n]))
		}
		if _, err := f.memf.WriteAt(f.buf[:n], int64(p.addr)); err != nil {
			return fmt.Errorf("write memory of task %d at %#x: %w", f.pid, p.addr, err)
		}
		f.wrote(n)
		p.addr, p.off, p.len = p.addr+n, p.off+n, p.len-n
	}
	return nil
}

// force writes one run through /proc/PID/mem.
func (f *filler) force(r Run) error {
	if err := f.flush(); err != nil {
		return err
	}
	if f.memf == nil {
		m, err := procfs.OpenFile(procfs.Path(f.pid, "mem"), os.O_WRONLY)
		if err != nil {
			return err
		}
		f.memf = m
	}
	addr, left := r.Addr, r.NrPages*pageSize
	for left > 0 {
		n := min(left, uint64(len(f.buf)))
		if _, err := io.ReadFull(f.pages, f.buf[:n]); err != nil {
			return fmt.Errorf("read pages: %w", err)
		}
		if _, err := f.memf.WriteAt(f.buf[:n], int64(addr)); err != nil {
			return fmt.Errorf("write memory of task %d at %#x: %w", f.pid, addr, err)
		}
		f.wrote(n)
		addr += n
		left -= n
	}
	return nil
}
