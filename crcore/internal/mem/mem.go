// Package mem moves a task's memory between its address space and the
// pages image.
//
// Dump is driven by /proc/PID/pagemap: only pages the task has (present
// or swapped) are written, never-touched pages and pages mapped to the
// kernel's zero page are skipped, and a private file mapping contributes
// only its copied-on-write pages. Runs of pages are read with vectored
// process_vm_readv (up to IOV_MAX ranges a call) into a bounded buffer and
// written with large writes; mappings the task cannot read (PROT_NONE,
// write-only) go through /proc/PID/mem instead.
//
// Restore writes the runs back with process_vm_writev into mappings that
// the caller made writable.
//
//go:build linux

package mem

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/procfs"
)

// Run is a range of consecutive dumped pages.
type Run struct {
	Addr    uint64
	NrPages uint64
	// Force: on restore the mapping is not writable, so the pages go in
	// through /proc/PID/mem, which writes past the protection.
	Force bool
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
}

const (
	bufSize   = 4 << 20 // bytes moved per vectored call
	iovMax    = 1024    // IOV_MAX
	pmEntries = 64 << 10
)

var pageSize = uint64(procfs.PageSize)

// Dumper dumps the memory of one task.
type Dumper struct {
	pid     int
	pm      *procfs.Pagemap
	memf    *os.File
	zeroPFN uint64
	out     io.Writer

	buf   []byte
	local []unix.Iovec
	rem   []unix.RemoteIovec
	used  int
	pme   []uint64
	pmb   []byte

	Stats Stats
}

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
	return &Dumper{
		pid: pid, pm: pm, zeroPFN: zp, out: out,
		buf: make([]byte, bufSize), pme: make([]uint64, pmEntries), pmb: make([]byte, pmEntries*8),
	}, nil
}

// Close releases the dumper's files.
func (d *Dumper) Close() error {
	if d.memf != nil {
		d.memf.Close()
	}
	return d.pm.Close()
}

// Dump writes the pages of v chosen by p and returns their runs.
func (d *Dumper) Dump(v *procfs.VMA, p Policy) ([]Run, error) {
	if p == Skip {
		return nil, nil
	}
	var runs []Run
	for addr := v.Start; addr < v.End; {
		n := min((v.End-addr)/pageSize, pmEntries)
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
	if err := d.copy(v, runs); err != nil {
		return nil, err
	}
	return runs, nil
}

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
	}
	return false
}

// copy reads the runs from the task and writes them out in order.
func (d *Dumper) copy(v *procfs.VMA, runs []Run) error {
	if !v.Read {
		return d.copyMem(runs)
	}
	for _, r := range runs {
		addr, left := r.Addr, r.NrPages*pageSize
		for left > 0 {
			if d.used == len(d.buf) || len(d.rem) == iovMax {
				if err := d.flush(); err != nil {
					return err
				}
			}
			n := min(left, uint64(len(d.buf)-d.used))
			d.local = append(d.local, unix.Iovec{Base: &d.buf[d.used]})
			d.local[len(d.local)-1].SetLen(int(n))
			d.rem = append(d.rem, unix.RemoteIovec{Base: uintptr(addr), Len: int(n)})
			d.used += int(n)
			addr += n
			left -= n
		}
	}
	return nil
}

// Flush writes out what is buffered; call it once after the last Dump.
func (d *Dumper) Flush() error { return d.flush() }

func (d *Dumper) flush() error {
	if d.used == 0 {
		return nil
	}
	got := 0
	for got < d.used {
		// Skip the iovecs already satisfied by a partial read.
		loc, rem, skip := d.local, d.rem, got
		for len(rem) > 0 && skip >= rem[0].Len {
			skip -= rem[0].Len
			loc, rem = loc[1:], rem[1:]
		}
		if skip > 0 {
			l0 := unix.Iovec{Base: &d.buf[got]}
			l0.SetLen(rem[0].Len - skip)
			loc = append([]unix.Iovec{l0}, loc[1:]...)
			rem = append([]unix.RemoteIovec{{Base: rem[0].Base + uintptr(skip), Len: rem[0].Len - skip}}, rem[1:]...)
		}
		n, err := unix.ProcessVMReadv(d.pid, loc, rem, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("process_vm_readv", err)
		}
		if n == 0 {
			return fmt.Errorf("process_vm_readv of task %d at %#x: no progress", d.pid, rem[0].Base)
		}
		got += n
	}
	if _, err := d.out.Write(d.buf[:d.used]); err != nil {
		return err
	}
	d.Stats.PagesWritten += uint64(d.used) / pageSize
	d.used, d.local, d.rem = 0, d.local[:0], d.rem[:0]
	return nil
}

// copyMem reads runs through /proc/PID/mem, which ignores protection.
func (d *Dumper) copyMem(runs []Run) error {
	if err := d.flush(); err != nil {
		return err
	}
	if d.memf == nil {
		f, err := os.Open(procfs.Path(d.pid, "mem"))
		if err != nil {
			return err
		}
		d.memf = f
	}
	for _, r := range runs {
		addr, left := r.Addr, r.NrPages*pageSize
		for left > 0 {
			n := min(left, uint64(len(d.buf)))
			if _, err := d.memf.ReadAt(d.buf[:n], int64(addr)); err != nil {
				return fmt.Errorf("read memory of task %d at %#x: %w", d.pid, addr, err)
			}
			if _, err := d.out.Write(d.buf[:n]); err != nil {
				return err
			}
			d.Stats.PagesWritten += n / pageSize
			addr += n
			left -= n
		}
	}
	return nil
}

// Fill writes runs, read in order from pages, into task pid. Runs not
// marked Force must lie in writable mappings.
func Fill(pid int, runs []Run, pages io.Reader) (Stats, error) {
	f := &filler{pid: pid, pages: pages, buf: make([]byte, bufSize)}
	defer f.close()
	for _, r := range runs {
		if r.Force {
			if err := f.force(r); err != nil {
				return f.st, err
			}
			continue
		}
		addr, left := r.Addr, r.NrPages*pageSize
		for left > 0 {
			if f.used == len(f.buf) || len(f.rem) == iovMax {
				if err := f.flush(); err != nil {
					return f.st, err
				}
			}
			n := min(left, uint64(len(f.buf)-f.used))
			f.local = append(f.local, unix.Iovec{Base: &f.buf[f.used]})
			f.local[len(f.local)-1].SetLen(int(n))
			f.rem = append(f.rem, unix.RemoteIovec{Base: uintptr(addr), Len: int(n)})
			f.used += int(n)
			addr += n
			left -= n
		}
	}
	return f.st, f.flush()
}

type filler struct {
	pid   int
	pages io.Reader
	buf   []byte
	local []unix.Iovec
	rem   []unix.RemoteIovec
	used  int
	memf  *os.File
	st    Stats
}

func (f *filler) close() {
	if f.memf != nil {
		f.memf.Close()
	}
}

// flush reads the batched pages from the image and writes them into the
// task with vectored process_vm_writev calls.
func (f *filler) flush() error {
	if f.used == 0 {
		return nil
	}
	if _, err := io.ReadFull(f.pages, f.buf[:f.used]); err != nil {
		return fmt.Errorf("read pages: %w", err)
	}
	done := 0
	for done < f.used {
		loc, rm, skip := f.local, f.rem, done
		for len(rm) > 0 && skip >= rm[0].Len {
			skip -= rm[0].Len
			loc, rm = loc[1:], rm[1:]
		}
		if skip > 0 {
			l0 := unix.Iovec{Base: &f.buf[done]}
			l0.SetLen(rm[0].Len - skip)
			loc = append([]unix.Iovec{l0}, loc[1:]...)
			rm = append([]unix.RemoteIovec{{Base: rm[0].Base + uintptr(skip), Len: rm[0].Len - skip}}, rm[1:]...)
		}
		n, err := unix.ProcessVMWritev(f.pid, loc, rm, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write memory of task %d at %#x: %w", f.pid, rm[0].Base, os.NewSyscallError("process_vm_writev", err))
		}
		if n == 0 {
			return fmt.Errorf("write memory of task %d at %#x: no progress", f.pid, rm[0].Base)
		}
		done += n
	}
	f.st.PagesWritten += uint64(f.used) / pageSize
	f.used, f.local, f.rem = 0, f.local[:0], f.rem[:0]
	return nil
}

// force writes one run through /proc/PID/mem.
func (f *filler) force(r Run) error {
	if err := f.flush(); err != nil {
		return err
	}
	if f.memf == nil {
		m, err := os.OpenFile(procfs.Path(f.pid, "mem"), os.O_WRONLY, 0)
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
		f.st.PagesWritten += n / pageSize
		addr += n
		left -= n
	}
	return nil
}
