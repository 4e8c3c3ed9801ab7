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

// Dumper dumps the memory of one task in two passes: Dump scans a VMA's
// pagemap and records its runs; Flush copies every recorded run.
//
// When out is a regular file, each run's place in it is known after the
// scan, so the bytes are split into one share per CPU, each copied by its
// own goroutine with pwrite (copyToFile). Otherwise the runs go through
// one bounded buffer and out.Write. Either way the CRC32C of the bytes
// is taken on the way (Sum).
type Dumper struct {
	pid     int
	pm      *procfs.Pagemap
	zeroPFN uint64
	out     io.Writer

	jobs  []job
	total uint64 // bytes recorded
	pme   []uint64
	pmb   []byte
	ppe   []uint64 // the parent's entries (DumpShared)

	// What was written to out so far, for Sum.
	sumLen uint64
	sumCRC uint32
	sumBad bool

	Stats Stats
	// Progress, if set, counts the bytes written.
	Progress *atomic.Uint64
}

// job is a run to copy; mem: read it through /proc/PID/mem (the task
// itself cannot read the mapping, or the pages are shared: sharedAnon).
type job struct {
	addr, len uint64
	mem       bool
}

const (
	window        = 8 << 20  // bytes of the pages file mapped at once (restore)
	dumpParallel  = 32 << 20 // bytes below which one goroutine copies
	dumpMaxWorker = 4
)

// NewDumper prepares to dump pid's memory into out.
func NewDumper(pid int, out io.Writer) (*Dumper, error) {
	pm, err := procfs.OpenPagemap(pid)
	if err != nil {
		return nil, err
	}
	zp, err := procfs.ZeroPFN()
	if err != nil {
		zp = 0
	}
	// The pagemap buffers grow with the largest VMA, up to pmEntries: a
	// tree of small tasks allocates little.
	return &Dumper{pid: pid, pm: pm, zeroPFN: zp, out: out}, nil
}

// Close releases the dumper's files.
func (d *Dumper) Close() error { return d.pm.Close() }

// Dump records the pages of v chosen by p and returns their runs; they
// are in the pages file after Flush.
func (d *Dumper) Dump(v *procfs.VMA, p Policy) ([]Run, error) {
	return d.DumpShared(v, p, nil)
}

// DumpShared is Dump for a VMA whose parent task has a like mapping at
// the same place (one a fork would have shared; parent is the parent's
// pagemap): a page the two share, the same page frame at the same
// address, becomes a Parent run, and is neither read nor written. A tree
// of forked workers then dumps what each wrote, not what each inherited:
// a tree of 200 sharing 1 MiB dumped 218 MiB before, 20 MiB after.
func (d *Dumper) DumpShared(v *procfs.VMA, p Policy, parent *procfs.Pagemap) ([]Run, error) {
	if p == Skip {
		return nil, nil
	}
	var runs []Run
	for addr := v.Start; addr < v.End; {
		n := min((v.End-addr)/pageSize, pmEntries)
		if uint64(len(d.pme)) < n {
			d.pme, d.pmb = make([]uint64, n), make([]byte, n*8)
		}
		ents := d.pme[:n]
		if err := d.pm.Read(addr, ents, d.pmb); err != nil {
			return nil, err
		}
		var pents []uint64
		if parent != nil {
			if uint64(len(d.ppe)) < n {
				d.ppe = make([]uint64, n)
			}
			pents = d.ppe[:n]
			if err := parent.Read(addr, pents, d.pmb); err != nil {
				return nil, err
			}
		}
		d.Stats.PagesScanned += n
		for i, e := range ents {
			if !want(e, p, d.zeroPFN, &d.Stats) {
				continue
			}
			a := addr + uint64(i)*pageSize
			inParent := pents != nil && sameFrame(e, pents[i])
			if k := len(runs) - 1; k >= 0 && runs[k].Parent == inParent && runs[k].Addr+runs[k].NrPages*pageSize == a {
				runs[k].NrPages++
			} else {
				runs = append(runs, Run{Addr: a, NrPages: 1, Parent: inParent})
			}
			if inParent {
				d.Stats.PagesParent++
				continue
			}
			d.addJob(a, !v.Read || sharedAnon(e))
		}
		addr += n * pageSize
	}
	return runs, nil
}

// sameFrame reports whether pagemap entries e and pe, of the same address
// in a task and in its parent, are one anonymous page shared by the two.
// A frame number of 0 is one the kernel hides (no CAP_SYS_ADMIN): no
// match.
//
// The tasks are stopped, but the kernel may still move their pages. A
// false match needs the task's page to leave its frame and the parent's
// page to arrive in that same frame between the two reads (microseconds
// apart for a small mapping, about a millisecond for a large one).
// Compaction takes its target frames from the far end of the zone and
// never the frames its own pass just emptied; khugepaged moves pages into
// a new huge page. So neither can do it within one pass. Reading the
// task's entries a second time after the parent's would close even that,
// but it cost the dump of a tree of 200 some 20 ms (5 %; eight alternated
// runs), and was left out.
func sameFrame(e, pe uint64) bool {
	if !sharedAnon(e) || !sharedAnon(pe) {
		return false
	}
	pfn := e & procfs.PMPFNMask
	return pfn != 0 && pfn == pe&procfs.PMPFNMask
}

// sharedAnon reports whether pagemap entry e is an anonymous page mapped
// more than once: shared copy-on-write with a parent or a child. Such a
// page is read through /proc/PID/mem. process_vm_readv pins the pages it
// reads, and the kernel does not let a read-only pin see a page that a
// later write could replace: it unshares it first, giving the task its
// own copy. Dumping a tree of forked workers that way made each of them
// a private copy of everything it shared (memory the dump would add to
// the running tree), at the cost of fresh memory per page; reading
// /proc/PID/mem takes plain references and copies nothing.
func sharedAnon(e uint64) bool {
	return e&(procfs.PMPresent|procfs.PMFileShared|procfs.PMExclusive) == procfs.PMPresent
}

// addJob records the page at a, to be read through /proc/PID/mem if
// viaMem.
func (d *Dumper) addJob(a uint64, viaMem bool) {
	if k := len(d.jobs) - 1; k >= 0 && d.jobs[k].mem == viaMem && d.jobs[k].addr+d.jobs[k].len == a {
		d.jobs[k].len += pageSize
	} else {
		d.jobs = append(d.jobs, job{addr: a, len: pageSize, mem: viaMem})
	}
	d.total += pageSize
}

// Flush copies every run recorded since the last Flush; call it once
// after the last Dump. A file out is left positioned after the pages.
func (d *Dumper) Flush() error {
	if len(d.jobs) == 0 {
		return nil
	}
	var err error
	if f, ok := d.out.(*os.File); ok {
		err = d.copyToFile(f)
	} else {
		err = d.copyToWriter()
	}
	if err == nil {
		d.Stats.PagesWritten += d.total / pageSize
	}
	d.jobs, d.total = d.jobs[:0], 0
	return err
}

// Sum returns the length and CRC32C of everything the dumper wrote to
// out; ok is false when out did not start empty at offset 0 or a write
// went elsewhere, and the caller must checksum the file itself.
func (d *Dumper) Sum() (n uint64, c uint32, ok bool) {
	return d.sumLen, d.sumCRC, !d.sumBad
}

func (d *Dumper) addSum(off uint64, n uint64, c uint32) {
	if off != d.sumLen {
		d.sumBad = true
		return
	}
	d.sumCRC = crc.Combine(d.sumCRC, c, n)
	d.sumLen += n
}

// pieces cuts the jobs into nw shares of consecutive file ranges from
// base, each about the same size.
func (d *Dumper) pieces(base uint64, nw int) [][]piece {
	share := (d.total/uint64(nw) + pageSize - 1) / pageSize * pageSize
	shares := make([][]piece, nw)
	off, done := base, uint64(0)
	for _, j := range d.jobs {
		addr, left := j.addr, j.len
		for left > 0 {
			w := min(int(done/share), nw-1)
			n := left
			if w < nw-1 {
				n = min(left, uint64(w+1)*share-done)
			}
			p := piece{addr: addr, off: off, len: n}
			if j.mem {
				p.off |= memFlag
			}
			shares[w] = append(shares[w], p)
			addr, off, done, left = addr+n, off+n, done+n, left-n
		}
	}
	return shares
}

// copyToFile copies the jobs into the file f at its current offset. The
// bytes are split into one share of consecutive file ranges per CPU,
// each copied by its own goroutine through a bounded buffer: vectored
// process_vm_readv into the buffer (warm memory: a fast copy), then one
// pwrite of the whole buffer. The cost is the kernel allocating fresh
// page-cache pages, which scales with cores; a shared mapping of the
// file measured about 35 % slower here (a page fault, and a page cleared,
// per page). Each share's CRC32C is taken from the buffer as it goes out
// and the shares' CRCs combined, so the checksum needs no read-back.
func (d *Dumper) copyToFile(f *os.File) error {
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	base := uint64(pos)
	nw := 1
	if d.total >= dumpParallel {
		nw = min(runtime.GOMAXPROCS(0), dumpMaxWorker)
	}
	shares := d.pieces(base, nw)
	var (
		wg   sync.WaitGroup
		stop atomic.Bool
		errs = make([]error, nw)
		crcs = make([]uint32, nw)
		lens = make([]uint64, nw)
	)
	for w := range nw {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &copier{pid: d.pid, stop: &stop, progress: d.Progress, put: func(b []byte, off uint64) error {
				return pwriteAll(f, b, off)
			}}
			defer c.close()
			for _, p := range shares[w] {
				if err := c.add(p); err != nil {
					errs[w] = err
					stop.Store(true)
					return
				}
			}
			if err := c.flush(); err != nil {
				errs[w] = err
				stop.Store(true)
			}
			crcs[w], lens[w] = c.crc, c.n
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, errStopped) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	for w := range nw {
		off := base
		if w > 0 && len(shares[w]) > 0 {
			off = shares[w][0].off &^ memFlag
		}
		if lens[w] > 0 {
			d.addSum(off, lens[w], crcs[w])
		}
	}
	if _, err := f.Seek(int64(base+d.total), io.SeekStart); err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	return nil
}

// copyToWriter copies the jobs, in order, through one bounded buffer to
// out.
func (d *Dumper) copyToWriter() error {
	base := d.sumLen
	c := &copier{pid: d.pid, progress: d.Progress, put: func(b []byte, _ uint64) error {
		_, err := d.out.Write(b)
		return err
	}}
	defer c.close()
	for _, ps := range d.pieces(base, 1) {
		for _, p := range ps {
			if err := c.add(p); err != nil {
				return err
			}
		}
	}
	if err := c.flush(); err != nil {
		return err
	}
	d.addSum(base, c.n, c.crc)
	return nil
}

func pwriteAll(f *os.File, b []byte, off uint64) error {
	for len(b) > 0 {
		n, err := f.WriteAt(b, int64(off))
		if err != nil {
			return fmt.Errorf("write pages: %w", err)
		}
		b, off = b[n:], off+uint64(n)
	}
	return nil
}

// memFlag marks a piece (in its off) to be read through /proc/PID/mem.
const memFlag = 1 << 63

// copier moves pieces of consecutive file ranges from the task through
// its buffer to put, and sums what it puts.
type copier struct {
	pid  int
	stop *atomic.Bool // set by another worker that failed; may be nil
	put  func(b []byte, off uint64) error

	buf    []byte
	pooled *[]byte
	used   int
	bufOff uint64 // file offset of buf[0]
	local  []unix.Iovec
	rem    []unix.RemoteIovec
	memf   *os.File

	crc      uint32
	n        uint64
	progress *atomic.Uint64
}

// bufPool holds the copiers' buffers between flushes and between tasks:
// a fresh buffer costs a page fault per page on first use, which for a
// tree of small tasks was most of the copy.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, bufSize)
	return &b
}}

func (c *copier) add(p piece) error {
	viaMem := p.off&memFlag != 0
	p.off &^= memFlag
	if c.buf == nil {
		c.pooled = bufPool.Get().(*[]byte)
		c.buf = *c.pooled
	}
	for p.len > 0 {
		if c.used == len(c.buf) || len(c.rem) == iovMax || (c.used > 0 && c.bufOff+uint64(c.used) != p.off) {
			if err := c.flush(); err != nil {
				return err
			}
		}
		if c.used == 0 {
			c.bufOff = p.off
		}
		n := min(p.len, uint64(len(c.buf)-c.used))
		b := c.buf[c.used : c.used+int(n)]
		if viaMem {
			if err := c.readMem(b, p.addr); err != nil {
				return err
			}
		} else {
			c.local = append(c.local, unix.Iovec{Base: &b[0]})
			c.local[len(c.local)-1].SetLen(int(n))
			c.rem = append(c.rem, unix.RemoteIovec{Base: uintptr(p.addr), Len: int(n)})
		}
		c.used += int(n)
		p.addr, p.off, p.len = p.addr+n, p.off+n, p.len-n
	}
	return nil
}

// flush reads the queued iovecs from the task into the buffer and puts
// it.
func (c *copier) flush() error {
	if c.used == 0 {
		return nil
	}
	if c.stop != nil && c.stop.Load() {
		return errStopped
	}
	if len(c.rem) > 0 {
		if err := readv(c.pid, c.local, c.rem); err != nil {
			return err
		}
	}
	b := c.buf[:c.used]
	c.crc = crc.Update(c.crc, b)
	c.n += uint64(len(b))
	err := c.put(b, c.bufOff)
	if err == nil && c.progress != nil {
		c.progress.Add(uint64(len(b)))
	}
	c.used, c.local, c.rem = 0, c.local[:0], c.rem[:0]
	return err
}

func (c *copier) close() {
	if c.memf != nil {
		_ = c.memf.Close() // read-only
	}
	if c.pooled != nil {
		bufPool.Put(c.pooled)
		c.pooled, c.buf = nil, nil
	}
}

func (c *copier) readMem(b []byte, addr uint64) error {
	if c.memf == nil {
		f, err := procfs.OpenFile(procfs.Path(c.pid, "mem"), os.O_RDONLY)
		if err != nil {
			return err
		}
		c.memf = f
	}
	if _, err := c.memf.ReadAt(b, int64(addr)); err != nil {
		return fmt.Errorf("read memory of task %d at %#x: %w", c.pid, addr, err)
	}
	return nil
}

// readv fills local from rem in task pid, continuing after short reads.
func readv(pid int, local []unix.Iovec, rem []unix.RemoteIovec) error {
	return vecAll(pid, local, rem, unix.ProcessVMReadv, "read", "process_vm_readv")
}

// vecAll runs op (process_vm_readv or process_vm_writev) until every
// byte of the iovecs moved: a call stops short at a page it cannot
// reach or after a signal, and the rest is asked again from where it
// stopped.
func vecAll(pid int, local []unix.Iovec, rem []unix.RemoteIovec,
	op func(int, []unix.Iovec, []unix.RemoteIovec, uint) (int, error), verb, name string) error {
	want := 0
	for _, r := range rem {
		want += r.Len
	}
	done := 0
	for done < want {
		loc, rm, skip := local, rem, done
		for len(rm) > 0 && skip >= rm[0].Len {
			skip -= rm[0].Len
			loc, rm = loc[1:], rm[1:]
		}
		if skip > 0 {
			// Resume inside the first iovec: patch copies of the
			// first pair.
			l0, r0 := loc[0], rm[0]
			l0.Base = (*byte)(addBytes(l0.Base, skip))
			l0.SetLen(rm[0].Len - skip)
			r0.Base += uintptr(skip)
			r0.Len -= skip
			loc = append([]unix.Iovec{l0}, loc[1:]...)
			rm = append([]unix.RemoteIovec{r0}, rm[1:]...)
		}
		n, err := op(pid, loc, rm, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s memory of task %d at %#x: %w", verb, pid, rm[0].Base, os.NewSyscallError(name, err))
		}
		if n == 0 {
			return fmt.Errorf("%s memory of task %d at %#x: no progress", verb, pid, rm[0].Base)
		}
		done += n
	}
	return nil
}
