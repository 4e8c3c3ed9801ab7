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

	"github.com/crhook/crhook/crcore/internal/procfs"
)

// Dumper dumps the memory of one task in two passes: Dump scans a VMA's
// pagemap and records its runs; Flush copies every recorded run.
//
// When out is a regular file, Flush sizes it once (ftruncate) and the
// kernel copies the task's pages straight into windows of a MAP_SHARED
// mapping of it (process_vm_readv into the mapping: one copy, task ->
// page cache, no bounce buffer). Each run's place in the file is known
// after the scan, so the bytes are split into one share per CPU, each
// copied by its own goroutine: the cost is the kernel allocating fresh
// page-cache pages, which scales with cores, where write(2) to one tmpfs
// file would serialize on its inode lock. A worker unmaps each window
// once it is written, so the file's pages leave our RSS again. Faulting
// each window in first with MADV_POPULATE_WRITE measured slower here.
//
// Otherwise the runs go through a bounded buffer and out.Write.
type Dumper struct {
	pid     int
	pm      *procfs.Pagemap
	zeroPFN uint64
	out     io.Writer

	jobs  []job
	total uint64 // bytes recorded
	pme   []uint64
	pmb   []byte

	Stats Stats
}

// job is a run to copy; mem: read it through /proc/PID/mem (the task
// itself cannot read the mapping).
type job struct {
	addr, len uint64
	mem       bool
}

const (
	window        = 8 << 20  // bytes of the pages file mapped at once per worker
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
		d.Stats.PagesScanned += n
		for i, e := range ents {
			if !want(e, p, d.zeroPFN, &d.Stats) {
				continue
			}
			a := addr + uint64(i)*pageSize
			if k := len(runs) - 1; k >= 0 && runs[k].Addr+runs[k].NrPages*pageSize == a {
				runs[k].NrPages++
			} else {
				runs = append(runs, Run{Addr: a, NrPages: 1})
			}
		}
		addr += n * pageSize
	}
	for _, r := range runs {
		n := r.NrPages * pageSize
		if k := len(d.jobs) - 1; k >= 0 && d.jobs[k].mem == !v.Read && d.jobs[k].addr+d.jobs[k].len == r.Addr {
			d.jobs[k].len += n
		} else {
			d.jobs = append(d.jobs, job{addr: r.Addr, len: n, mem: !v.Read})
		}
		d.total += n
	}
	return runs, nil
}

// Flush copies every run recorded since the last Flush; call it once
// after the last Dump. A file out is left positioned after the pages.
func (d *Dumper) Flush() error {
	if len(d.jobs) == 0 {
		return nil
	}
	var err error
	if f, ok := d.out.(*os.File); ok {
		err = d.copyMapped(f)
	} else {
		err = d.copyBuffered()
	}
	if err == nil {
		d.Stats.PagesWritten += d.total / pageSize
	}
	d.jobs, d.total = d.jobs[:0], 0
	return err
}

// copyMapped copies the jobs into the file f at its current offset.
func (d *Dumper) copyMapped(f *os.File) error {
	base, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	if uint64(base)%pageSize != 0 {
		return d.copyBuffered()
	}
	// The image file may be open write-only; a shared writable mapping
	// needs it open for reading too.
	rw, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	defer rw.Close()
	end := uint64(base) + d.total
	if err := rw.Truncate(int64(end)); err != nil {
		return fmt.Errorf("write pages: %w", err)
	}

	nw := 1
	if d.total >= dumpParallel {
		nw = min(runtime.GOMAXPROCS(0), dumpMaxWorker)
	}
	share := (d.total/uint64(nw) + pageSize - 1) / pageSize * pageSize
	shares := make([][]piece, nw)
	off, done := uint64(base), uint64(0)
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

	var (
		wg   sync.WaitGroup
		stop atomic.Bool
		errs = make([]error, nw)
	)
	for w := range nw {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mw := &mapWriter{pid: d.pid, fd: int(rw.Fd()), stop: &stop}
			defer mw.close()
			for _, p := range shares[w] {
				if err := mw.add(p); err != nil {
					errs[w] = err
					stop.Store(true)
					return
				}
			}
			if err := mw.flush(); err != nil {
				errs[w] = err
				stop.Store(true)
			}
		}()
	}
	wg.Wait()
	runtime.KeepAlive(rw)
	for _, err := range errs {
		if err != nil && !errors.Is(err, errStopped) {
			return err
		}
	}
	if _, err := f.Seek(int64(end), io.SeekStart); err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	return nil
}

// memFlag marks a piece (in its off) to be read through /proc/PID/mem.
const memFlag = 1 << 63

// mapWriter copies pieces, in file order, into windows of a shared
// mapping of the pages file.
type mapWriter struct {
	pid  int
	fd   int
	stop *atomic.Bool

	win       []byte
	winOff    uint64 // file offset of win[0]
	local     []unix.Iovec
	rem       []unix.RemoteIovec
	memf      *os.File
	populated bool
}

func (w *mapWriter) add(p piece) error {
	viaMem := p.off&memFlag != 0
	p.off &^= memFlag
	for p.len > 0 {
		if w.win == nil || p.off >= w.winOff+uint64(len(w.win)) || len(w.rem) == iovMax {
			if err := w.flush(); err != nil {
				return err
			}
			if err := w.mapAt(p.off); err != nil {
				return err
			}
		}
		at := p.off - w.winOff
		n := min(p.len, uint64(len(w.win))-at)
		if viaMem {
			if err := w.readMem(w.win[at:at+n], p.addr); err != nil {
				return err
			}
		} else {
			w.local = append(w.local, unix.Iovec{Base: &w.win[at]})
			w.local[len(w.local)-1].SetLen(int(n))
			w.rem = append(w.rem, unix.RemoteIovec{Base: uintptr(p.addr), Len: int(n)})
		}
		p.addr, p.off, p.len = p.addr+n, p.off+n, p.len-n
	}
	return nil
}

// mapAt maps the window that starts at file offset off. The window may
// reach past this worker's share into another's; only the pages a
// worker writes are touched.
func (w *mapWriter) mapAt(off uint64) error {
	if w.stop.Load() {
		return errStopped
	}
	var st unix.Stat_t
	if err := unix.Fstat(w.fd, &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	n := min(uint64(window), uint64(st.Size)-off)
	b, err := unix.Mmap(w.fd, int64(off), int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return os.NewSyscallError("mmap pages file", err)
	}
	w.win, w.winOff, w.populated = b, off, false
	return nil
}

// flush reads the queued iovecs from the task into the window and unmaps
// it.
func (w *mapWriter) flush() error {
	if w.win == nil {
		return nil
	}
	if len(w.rem) > 0 {
		if err := readv(w.pid, w.local, w.rem); err != nil {
			return err
		}
	}
	err := unix.Munmap(w.win)
	w.win, w.local, w.rem = nil, w.local[:0], w.rem[:0]
	if err != nil {
		return os.NewSyscallError("munmap pages file", err)
	}
	return nil
}

func (w *mapWriter) close() {
	if w.win != nil {
		unix.Munmap(w.win)
		w.win = nil
	}
	if w.memf != nil {
		w.memf.Close()
	}
}

func (w *mapWriter) readMem(b []byte, addr uint64) error {
	if w.memf == nil {
		f, err := os.Open(procfs.Path(w.pid, "mem"))
		if err != nil {
			return err
		}
		w.memf = f
	}
	if _, err := w.memf.ReadAt(b, int64(addr)); err != nil {
		return fmt.Errorf("read memory of task %d at %#x: %w", w.pid, addr, err)
	}
	return nil
}

// readv fills loc from rem in task pid, continuing after short reads.
func readv(pid int, local []unix.Iovec, rem []unix.RemoteIovec) error {
	want := 0
	for _, r := range rem {
		want += r.Len
	}
	got := 0
	var l0 unix.Iovec
	var r0 unix.RemoteIovec
	for got < want {
		loc, rm, skip := local, rem, got
		for len(rm) > 0 && skip >= rm[0].Len {
			skip -= rm[0].Len
			loc, rm = loc[1:], rm[1:]
		}
		if skip > 0 {
			// Resume inside the first iovec: patch copies of the
			// first pair.
			l0, r0 = loc[0], rm[0]
			l0.Base = (*byte)(addBytes(l0.Base, skip))
			l0.SetLen(rm[0].Len - skip)
			r0.Base += uintptr(skip)
			r0.Len -= skip
			loc = append([]unix.Iovec{l0}, loc[1:]...)
			rm = append([]unix.RemoteIovec{r0}, rm[1:]...)
		}
		n, err := unix.ProcessVMReadv(pid, loc, rm, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read memory of task %d at %#x: %w", pid, rm[0].Base, os.NewSyscallError("process_vm_readv", err))
		}
		if n == 0 {
			return fmt.Errorf("read memory of task %d at %#x: no progress", pid, rm[0].Base)
		}
		got += n
	}
	return nil
}

// copyBuffered reads the jobs, in order, through a bounded buffer and
// writes them to out.
func (d *Dumper) copyBuffered() error {
	buf := make([]byte, bufSize)
	var memf *os.File
	defer func() {
		if memf != nil {
			memf.Close()
		}
	}()
	var (
		local []unix.Iovec
		rem   []unix.RemoteIovec
		used  int
	)
	flush := func() error {
		if used == 0 {
			return nil
		}
		if err := readv(d.pid, local, rem); err != nil {
			return err
		}
		if _, err := d.out.Write(buf[:used]); err != nil {
			return err
		}
		used, local, rem = 0, local[:0], rem[:0]
		return nil
	}
	for _, j := range d.jobs {
		addr, left := j.addr, j.len
		for left > 0 {
			if used == len(buf) || len(rem) == iovMax {
				if err := flush(); err != nil {
					return err
				}
			}
			n := min(left, uint64(len(buf)-used))
			if j.mem {
				if err := flush(); err != nil {
					return err
				}
				if memf == nil {
					f, err := os.Open(procfs.Path(d.pid, "mem"))
					if err != nil {
						return err
					}
					memf = f
				}
				if _, err := memf.ReadAt(buf[:n], int64(addr)); err != nil {
					return fmt.Errorf("read memory of task %d at %#x: %w", d.pid, addr, err)
				}
				if _, err := d.out.Write(buf[:n]); err != nil {
					return err
				}
			} else {
				local = append(local, unix.Iovec{Base: &buf[used]})
				local[len(local)-1].SetLen(int(n))
				rem = append(rem, unix.RemoteIovec{Base: uintptr(addr), Len: int(n)})
				used += int(n)
			}
			addr += n
			left -= n
		}
	}
	return flush()
}
