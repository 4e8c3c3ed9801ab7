//go:build linux

package mem

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/crc"
	"github.com/crhook/crhook/crcore/internal/procfs"
)

// fillMapped fills the task from windows of a read-only mapping of the
// pages file, populated at mmap time (the tmpfs or page-cache pages are
// mapped, not copied): process_vm_writev copies each page once, file ->
// task, with no read into a buffer of ours first. Writable runs are split
// by bytes into nw shares as in fillParallel; Force runs follow in order.
func fillMapped(pid int, runs []Run, f *os.File, base uint64, nw int, o FillOptions) (Stats, error) {
	shares, forced, end := splitRuns(runs, base, nw)
	fd := int(f.Fd())
	var (
		wg    sync.WaitGroup
		stop  atomic.Bool
		errs  = make([]error, nw)
		stats = make([]Stats, nw)
	)
	work := func(w int, ps []piece, force bool) {
		mr := &mapReader{pid: pid, fd: fd, end: end, stop: &stop, force: force, progress: o.Progress, sum: o.Sum, uf: o.Userfault}
		defer mr.close()
		for _, p := range ps {
			if err := mr.add(p); err != nil {
				errs[w] = err
				stop.Store(true)
				return
			}
		}
		if err := mr.flush(); err != nil {
			errs[w] = err
			stop.Store(true)
		}
		stats[w] = mr.st
	}
	for w := 1; w < nw; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(w, shares[w], false)
		}()
	}
	work(0, shares[0], false)
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
	if len(forced) > 0 {
		errs[0], stats[0] = nil, Stats{}
		work(0, forced, true)
		st.PagesWritten += stats[0].PagesWritten
		if errs[0] != nil {
			return st, errs[0]
		}
	}
	if _, err := f.Seek(int64(end), io.SeekStart); err != nil {
		return st, fmt.Errorf("read pages: %w", err)
	}
	return st, nil
}

// mapReader writes pieces, in file order, from windows of the pages
// file into the task.
type mapReader struct {
	pid   int
	fd    int
	end   uint64 // file offset past the last page
	stop  *atomic.Bool
	force bool // through /proc/PID/mem

	progress *atomic.Uint64
	// sum, if set, gets the CRC32C of the file ranges written, merged
	// while contiguous (run: the range summed so far).
	sum    func(off, n uint64, crc uint32)
	run    piece
	runCRC uint32

	win    []byte
	winOff uint64
	local  []unix.Iovec
	rem    []unix.RemoteIovec
	miss   []bool // per iovec: install through uf
	uf     *Userfault
	memf   *os.File
	st     Stats
}

func (m *mapReader) add(p piece) error {
	for p.len > 0 {
		if m.win == nil || p.off >= m.winOff+uint64(len(m.win)) || len(m.rem) == iovMax {
			if err := m.flush(); err != nil {
				return err
			}
			if m.stop.Load() {
				return errStopped
			}
			n := min(uint64(window), m.end-p.off)
			b, err := unix.Mmap(m.fd, int64(p.off), int(n), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
			if err != nil {
				return os.NewSyscallError("mmap pages file", err)
			}
			m.win, m.winOff = b, p.off
		}
		at := p.off - m.winOff
		n := min(p.len, uint64(len(m.win))-at)
		if m.sum != nil {
			m.summed(p.off, m.win[at:at+n])
		}
		if m.force {
			if err := m.writeMem(m.win[at:at+n], p.addr); err != nil {
				return err
			}
		} else {
			m.local = append(m.local, unix.Iovec{Base: &m.win[at]})
			m.local[len(m.local)-1].SetLen(int(n))
			m.rem = append(m.rem, unix.RemoteIovec{Base: uintptr(p.addr), Len: int(n)})
			m.miss = append(m.miss, p.missing)
		}
		m.st.PagesWritten += n / pageSize
		if m.progress != nil {
			m.progress.Add(n)
		}
		p.addr, p.off, p.len = p.addr+n, p.off+n, p.len-n
	}
	return nil
}

// summed adds b, at off in the file, to the range summed so far, or
// reports that range and starts another.
func (m *mapReader) summed(off uint64, b []byte) {
	if m.run.len > 0 && m.run.off+m.run.len != off {
		m.sum(m.run.off, m.run.len, m.runCRC)
		m.run.len, m.runCRC = 0, 0
	}
	if m.run.len == 0 {
		m.run.off = off
	}
	m.runCRC = crc.Update(m.runCRC, b)
	m.run.len += uint64(len(b))
}

func (m *mapReader) flush() error {
	if m.win == nil {
		return nil
	}
	var err error
	if len(m.rem) > 0 {
		err = put(m.pid, m.uf, m.local, m.rem, m.miss)
	}
	if uerr := unix.Munmap(m.win); err == nil && uerr != nil {
		err = os.NewSyscallError("munmap pages file", uerr)
	}
	m.win, m.local, m.rem, m.miss = nil, m.local[:0], m.rem[:0], m.miss[:0]
	return err
}

func (m *mapReader) close() {
	if m.sum != nil && m.run.len > 0 {
		m.sum(m.run.off, m.run.len, m.runCRC)
		m.run.len = 0
	}
	if m.win != nil {
		_ = unix.Munmap(m.win) // our own window; fails only for a bad address
		m.win = nil
	}
	if m.memf != nil {
		_ = m.memf.Close() // writes to /proc/pid/mem are done when pwrite returns
	}
}

func (m *mapReader) writeMem(b []byte, addr uint64) error {
	if m.memf == nil {
		f, err := procfs.OpenFile(procfs.Path(m.pid, "mem"), os.O_WRONLY)
		if err != nil {
			return err
		}
		m.memf = f
	}
	if _, err := m.memf.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("write memory of task %d at %#x: %w", m.pid, addr, err)
	}
	return nil
}

// writev writes local to rem in task pid, continuing after short writes.
func writev(pid int, local []unix.Iovec, rem []unix.RemoteIovec) error {
	return vecAll(pid, local, rem, unix.ProcessVMWritev, "write", "process_vm_writev")
}
