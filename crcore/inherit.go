//go:build linux && amd64

package crcore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/crc"
	"github.com/crhook/crhook/crcore/internal/mem"
	pb "github.com/crhook/crhook/proto"
)

// Copy-on-write inheritance on restore.
//
// A forked child shares its pages with its parent until either writes
// them; a dump writes each task's pages in full, so restoring each task
// into an empty address space turns every shared page into a private copy
// (a fresh page to allocate and fill, which is this machine kind's
// slowest memory operation) and multiplies the tree's memory by its
// fan-out. Instead a child is cloned after its parent's memory is in
// place and keeps what it can of it: a private mapping identical in both
// images stays as inherited; of its pages, those whose bytes are equal in
// both images are left shared, those that differ are written, and those
// the parent has but the child does not are dropped (MADV_DONTNEED: back
// to zero or to the file). Every other inherited mapping is unmapped and
// the child's own are mapped as for any task.

var pgSize = uint64(pageSize)

// inheritCopyOnWrite: a child keeps what it can of its parent's address
// space. Off only in tests (SetInheritCopyOnWrite), to restore every
// child into an empty one.
var inheritCopyOnWrite = true

// vmaKey is what must be equal for a child to keep a parent's mapping.
type vmaKey struct {
	start, end, pgoff, shmid uint64
	prot, flags, status      uint32
	vmFlags                  string
}

func keyOf(v *pb.VmaEntry, vmFlags string) vmaKey {
	return vmaKey{v.GetStart(), v.GetEnd(), v.GetPgoff(), v.GetShmid(), v.GetProt(), v.GetFlags(), v.GetStatus(), vmFlags}
}

// inheritable: a private mapping whose pages a fork shares.
func inheritable(v *pb.VmaEntry) bool {
	st := v.GetStatus()
	if st&(vmaAnonPrivate|vmaFilePrivate) == 0 {
		return false
	}
	if st&(vmaAreaVdso|vmaAreaVvar|vmaAreaSysvipc|vmaAreaMemfd|vmaAnonShared|vmaFileShared) != 0 {
		return false
	}
	// mlock does not survive fork.
	return v.GetFlags()&unix.MAP_LOCKED == 0
}

func vmFlagsOf(ti *taskImage) map[uint64]string {
	m := map[uint64]string{}
	for _, e := range ti.ext.GetVmas() {
		m[e.GetStart()] = e.GetVmFlags()
	}
	return m
}

// inheritPlan is what a child does with the address space it inherited.
type inheritPlan struct {
	parent   *taskImage
	kept     map[uint64]bool // child VMA starts kept as inherited
	unmap    [][2]uint64     // inherited mappings to remove (start, length)
	drop     [][2]uint64     // inherited pages the child lacks (start, length)
	keepVdso bool
}

// planInherit compares the images of parent and child. With runs out of
// order (which a dump never writes) the child keeps nothing: every
// inherited mapping is unmapped.
func planInherit(parent, child *taskImage) *inheritPlan {
	if !sortedRuns(parent.runs) || !sortedRuns(child.runs) {
		return unmapAll(parent)
	}
	pf, cf := vmFlagsOf(parent), vmFlagsOf(child)
	pl := &inheritPlan{parent: parent, kept: map[uint64]bool{}}
	parentKeys := map[vmaKey]bool{}
	var pSpecial, cSpecial []string
	for _, v := range parent.mm.GetVmas() {
		if v.GetStatus()&(vmaAreaVdso|vmaAreaVvar) != 0 {
			pSpecial = append(pSpecial, fmt.Sprint(v.GetStart(), v.GetEnd(), v.GetStatus()))
			continue
		}
		if inheritable(v) {
			parentKeys[keyOf(v, pf[v.GetStart()])] = true
		}
	}
	for _, v := range child.mm.GetVmas() {
		if v.GetStatus()&(vmaAreaVdso|vmaAreaVvar) != 0 {
			cSpecial = append(cSpecial, fmt.Sprint(v.GetStart(), v.GetEnd(), v.GetStatus()))
			continue
		}
		if inheritable(v) && parentKeys[keyOf(v, cf[v.GetStart()])] {
			pl.kept[v.GetStart()] = true
		}
	}
	pl.keepVdso = len(pSpecial) > 0 && strings.Join(pSpecial, ",") == strings.Join(cSpecial, ",")
	for _, v := range parent.mm.GetVmas() {
		special := v.GetStatus()&(vmaAreaVdso|vmaAreaVvar) != 0
		if special && pl.keepVdso || !special && pl.kept[v.GetStart()] && inheritable(v) {
			continue
		}
		pl.unmap = append(pl.unmap, [2]uint64{v.GetStart(), v.GetEnd() - v.GetStart()})
	}
	// Pages the parent has in a kept mapping and the child does not.
	ci := 0
	for _, pr := range parent.runs {
		if !pl.kept[vmaStartOf(child, pr.Addr)] {
			continue
		}
		a, end := pr.Addr, pr.Addr+pr.NrPages*pgSize
		for a < end {
			for ci < len(child.runs) && child.runs[ci].Addr+child.runs[ci].NrPages*pgSize <= a {
				ci++
			}
			if ci < len(child.runs) && child.runs[ci].Addr <= a {
				a = min(end, child.runs[ci].Addr+child.runs[ci].NrPages*pgSize)
				continue
			}
			next := end
			if ci < len(child.runs) {
				next = min(end, child.runs[ci].Addr)
			}
			if k := len(pl.drop) - 1; k >= 0 && pl.drop[k][0]+pl.drop[k][1] == a {
				pl.drop[k][1] += next - a
			} else {
				pl.drop = append(pl.drop, [2]uint64{a, next - a})
			}
			a = next
		}
	}
	return pl
}

// unmapAll is the plan of a child that keeps nothing of its parent's.
func unmapAll(parent *taskImage) *inheritPlan {
	pl := &inheritPlan{parent: parent, kept: map[uint64]bool{}}
	for _, v := range parent.mm.GetVmas() {
		pl.unmap = append(pl.unmap, [2]uint64{v.GetStart(), v.GetEnd() - v.GetStart()})
	}
	return pl
}

func sortedRuns(runs []mem.Run) bool {
	for i := 1; i < len(runs); i++ {
		if runs[i].Addr < runs[i-1].Addr+runs[i-1].NrPages*pgSize {
			return false
		}
	}
	return true
}

// vmaStartOf returns the start of ti's VMA holding addr (0 if none).
func vmaStartOf(ti *taskImage, addr uint64) uint64 {
	for _, v := range ti.mm.GetVmas() {
		if v.GetStart() <= addr && addr < v.GetEnd() {
			return v.GetStart()
		}
	}
	return 0
}

// splitInherited marks Skip the pages of runs (the child's, in file order
// in cpages) that lie in kept mappings and hold the same bytes as the
// parent's image (parent runs in ppages): the child has them already.
// sum, if not nil, gets the CRC32C of the ranges of cpages compared (the
// pages file's check, pagescheck.go).
func (pl *inheritPlan) splitInherited(child *taskImage, runs []mem.Run, cpages, ppages io.ReaderAt, sum func(off, n uint64, crc uint32)) ([]mem.Run, error) {
	parent := pl.parent
	poff := make([]uint64, len(parent.runs))
	var o uint64
	for i, r := range parent.runs {
		poff[i] = o
		if !r.Parent {
			o += r.NrPages * pgSize
		}
	}
	var out []mem.Run
	// emit adds n pages at addr, with the flags of their run from.
	emit := func(addr, n uint64, skip bool, from mem.Run) {
		if k := len(out) - 1; k >= 0 && out[k].Skip == skip && out[k].Force == from.Force && out[k].Missing == from.Missing &&
			out[k].Addr+out[k].NrPages*pgSize == addr {
			out[k].NrPages += n
			return
		}
		out = append(out, mem.Run{Addr: addr, NrPages: n, Skip: skip, Force: from.Force, Missing: from.Missing})
	}
	const chunk = 256 // pages compared at a time
	cw, pw := newWindow(cpages), newWindow(ppages)
	defer cw.release()
	defer pw.release()
	// The compared ranges come in file order: contiguous ones are
	// summed as one.
	var sumOff, sumLen uint64
	var sumCRC uint32
	summed := func(off uint64, b []byte) {
		if sum == nil {
			return
		}
		if sumLen > 0 && sumOff+sumLen != off {
			sum(sumOff, sumLen, sumCRC)
			sumLen, sumCRC = 0, 0
		}
		if sumLen == 0 {
			sumOff = off
		}
		sumCRC = crc.Update(sumCRC, b)
		sumLen += uint64(len(b))
	}
	defer func() {
		if sum != nil && sumLen > 0 {
			sum(sumOff, sumLen, sumCRC)
		}
	}()
	var coff uint64
	for _, r := range runs {
		size := r.NrPages * pgSize
		if !pl.kept[vmaStartOf(child, r.Addr)] {
			emit(r.Addr, r.NrPages, false, r)
			coff += size
			continue
		}
		for a, end := r.Addr, r.Addr+size; a < end; {
			// The parent's run holding a, or the next one.
			i := sort.Search(len(parent.runs), func(i int) bool {
				return parent.runs[i].Addr+parent.runs[i].NrPages*pgSize > a
			})
			if i == len(parent.runs) || parent.runs[i].Addr > a || parent.runs[i].Parent {
				// No bytes of the parent's here to compare with (a
				// Parent run of the parent's has them further up).
				next := end
				if i < len(parent.runs) {
					if parent.runs[i].Addr <= a {
						next = min(end, parent.runs[i].Addr+parent.runs[i].NrPages*pgSize)
					} else {
						next = min(end, parent.runs[i].Addr)
					}
				}
				emit(a, (next-a)/pgSize, false, r)
				a = next
				continue
			}
			pr := parent.runs[i]
			n := min(end, pr.Addr+pr.NrPages*pgSize, a+chunk*pgSize) - a
			c, err := cw.at(coff+(a-r.Addr), n)
			if err != nil {
				return nil, fmt.Errorf("read pages: %w", err)
			}
			summed(coff+(a-r.Addr), c)
			p, err := pw.at(poff[i]+(a-pr.Addr), n)
			if err != nil {
				return nil, fmt.Errorf("read parent's pages: %w", err)
			}
			for k := uint64(0); k < n; k += pgSize {
				emit(a+k, 1, bytes.Equal(c[k:k+pgSize], p[k:k+pgSize]), r)
			}
			a += n
		}
		coff += size
	}
	return out, nil
}

// window reads a file through one buffer for reads at rising offsets
// (both pages files are read in address order, which is file order):
// one pread per window instead of one per run. A window on bytes in
// memory (a small parent's pages, parentPages) hands out slices of them.
type window struct {
	f   io.ReaderAt
	mem []byte // the whole file, when in memory
	bp  *[]byte
	off uint64 // file offset of buf[0]
	n   uint64 // valid bytes in buf
}

// windowSize is a window's buffer; at least one comparison chunk.
const windowSize = 1 << 20

// windowBufs keeps window buffers for reuse. Not a sync.Pool, which a
// garbage collection empties: a fresh buffer costs a page fault per page
// on first use, about a millisecond a megabyte on this machine kind, and
// a tree of small tasks collects garbage many times.
var windowBufs = make(chan *[]byte, 16)

func newWindow(f io.ReaderAt) *window {
	if m, ok := f.(memPages); ok {
		return &window{mem: m}
	}
	var bp *[]byte
	select {
	case bp = <-windowBufs:
	default:
		b := make([]byte, windowSize)
		bp = &b
	}
	return &window{f: f, bp: bp}
}

func (w *window) release() {
	if w.bp == nil {
		return
	}
	select {
	case windowBufs <- w.bp:
	default:
	}
	w.bp = nil
}

// at returns the n bytes at off (n <= windowSize), valid until the next
// call.
func (w *window) at(off, n uint64) ([]byte, error) {
	if w.mem != nil {
		if off+n > uint64(len(w.mem)) || off+n < off {
			return nil, io.ErrUnexpectedEOF
		}
		return w.mem[off : off+n], nil
	}
	buf := *w.bp
	if off < w.off || off+n > w.off+w.n {
		k, err := w.f.ReadAt(buf, int64(off))
		if uint64(k) < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		w.off, w.n = off, uint64(k)
	}
	return buf[off-w.off : off-w.off+n], nil
}

// memPages is a pages file held in memory (parentPages).
type memPages []byte

func (m memPages) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(b, m[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// openParentPages opens the parent's pages file for splitInherited.
func (s *imageSet) openPages(ti *taskImage) (*os.File, error) {
	return s.dir.OpenPages(pagesName(int(ti.pages)))
}

// Pages in the parent (mem.Run.Parent, peInParent).
//
// A dump records a page a child still shares with its parent (the same
// frame, at the same address of a like mapping) as the parent's, and
// writes it once, in the parent's image. A child cloned from that parent
// into a mapping it keeps (planInherit) has these pages already; any
// other child gets them copied from the image of the nearest ancestor
// whose own file holds them (parentFill).

// dumpParent returns the image of ti's parent in the tree, or nil.
func (s *imageSet) dumpParent(ti *taskImage) *taskImage {
	if ti.ps == nil || len(s.tree) > 0 && s.tree[0] == ti.ps {
		return nil
	}
	return s.tasks[int(ti.ps.GetPpid())]
}

// checkParentRuns refuses an image whose runs in the parent are not all
// in the parent's runs (which the parent's own check follows up).
func (s *imageSet) checkParentRuns() error {
	for _, ti := range s.tasks {
		for _, r := range ti.runs {
			if !r.Parent {
				continue
			}
			p := s.dumpParent(ti)
			if p == nil || p.zombie() {
				return fmt.Errorf("%s: pages at %#x (+%d) are marked as the parent's, but pid %d has no live parent in the tree: %w",
					pagemapName(ti.pid), r.Addr, r.NrPages, ti.pid, ErrBadImage)
			}
			if !covered(p.runs, r.Addr, r.NrPages*pgSize) {
				return fmt.Errorf("%s: pages at %#x (+%d) are marked as the parent's, but %s has not all of them: %w",
					pagemapName(ti.pid), r.Addr, r.NrPages, pagemapName(p.pid), ErrBadImage)
			}
		}
	}
	return nil
}

// covered reports whether runs (sorted by address) hold every page of
// [a, a+n).
func covered(runs []mem.Run, a, n uint64) bool {
	end := a + n
	i := sort.Search(len(runs), func(i int) bool { return runs[i].Addr+runs[i].NrPages*pgSize > a })
	for ; a < end; i++ {
		if i == len(runs) || runs[i].Addr > a {
			return false
		}
		a = runs[i].Addr + runs[i].NrPages*pgSize
	}
	return true
}

// splitParentRuns takes the Parent runs out of runs (ti's): those the
// child inherits from its parent as they are (plan, from the dump parent,
// keeps their mapping) are dropped, and their pages returned; the others
// are returned to be copied (parentFill).
func (s *imageSet) splitParentRuns(plan *inheritPlan, ti *taskImage, runs []mem.Run) (own, copied []mem.Run, inherited uint64) {
	p := s.dumpParent(ti)
	for _, r := range runs {
		switch {
		case !r.Parent:
			own = append(own, r)
		case plan != nil && plan.parent == p && plan.kept[vmaStartOf(ti, r.Addr)]:
			inherited += r.NrPages
		default:
			copied = append(copied, r)
		}
	}
	return own, copied, inherited
}

// parentPiece is a range of a task's pages to copy from an ancestor's
// pages file, with the Force flag of the task's run.
type parentPiece struct {
	from  *taskImage
	addr  uint64
	n     uint64 // bytes
	force bool
}

// parentSources resolves runs (Parent runs of ti) to the ancestors whose
// own files hold their bytes, by ancestor in address order.
func (s *imageSet) parentSources(ti *taskImage, runs []mem.Run) (map[*taskImage][]parentPiece, error) {
	out := map[*taskImage][]parentPiece{}
	type want struct {
		of   *taskImage // the task whose Parent run this is
		addr uint64
		n    uint64
	}
	var todo []want
	for _, r := range runs {
		todo = append(todo, want{ti, r.Addr, r.NrPages * pgSize})
		for len(todo) > 0 {
			w := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			p := s.dumpParent(w.of)
			if p == nil || p.zombie() {
				return nil, fmt.Errorf("pages at %#x of pid %d: no parent holds them: %w", w.addr, w.of.pid, ErrBadImage)
			}
			a, end := w.addr, w.addr+w.n
			i := sort.Search(len(p.runs), func(i int) bool { return p.runs[i].Addr+p.runs[i].NrPages*pgSize > a })
			for ; a < end; i++ {
				if i == len(p.runs) || p.runs[i].Addr > a {
					return nil, fmt.Errorf("pages at %#x of pid %d: not in the image of its parent %d: %w", a, w.of.pid, p.pid, ErrBadImage)
				}
				pr := p.runs[i]
				next := min(end, pr.Addr+pr.NrPages*pgSize)
				if pr.Parent {
					todo = append(todo, want{p, a, next - a})
				} else {
					out[p] = append(out[p], parentPiece{from: p, addr: a, n: next - a, force: r.Force})
				}
				a = next
			}
		}
	}
	for _, ps := range out {
		sort.Slice(ps, func(i, j int) bool { return ps[i].addr < ps[j].addr })
	}
	return out, nil
}

// parentRunsFor lays pieces (sorted, all in from's own runs) over from's
// runs in file order: the pieces' pages to write, every other page of
// from's file to pass over (Skip), up to the last piece.
func parentRunsFor(from *taskImage, pieces []parentPiece) []mem.Run {
	var out []mem.Run
	emit := func(a, n uint64, skip, force bool) {
		if n == 0 {
			return
		}
		if k := len(out) - 1; k >= 0 && out[k].Skip == skip && out[k].Force == force && out[k].Addr+out[k].NrPages*pgSize == a {
			out[k].NrPages += n / pgSize
			return
		}
		out = append(out, mem.Run{Addr: a, NrPages: n / pgSize, Skip: skip, Force: force})
	}
	k := 0
	for _, r := range from.runs {
		if k == len(pieces) {
			break
		}
		if r.Parent {
			continue
		}
		a, end := r.Addr, r.Addr+r.NrPages*pgSize
		for a < end {
			for k < len(pieces) && pieces[k].addr+pieces[k].n <= a {
				k++
			}
			if k == len(pieces) || pieces[k].addr >= end {
				emit(a, end-a, true, false)
				break
			}
			pc := pieces[k]
			if pc.addr > a {
				emit(a, pc.addr-a, true, false)
				a = pc.addr
			}
			next := min(end, pc.addr+pc.n)
			emit(a, next-a, false, pc.force)
			a = next
		}
	}
	return out
}
