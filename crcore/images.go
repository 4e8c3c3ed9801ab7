//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/mem"
	pb "github.com/crhook/crhook/proto"
)

// imageSet is a whole checkpoint read into memory (all but the pages).
type imageSet struct {
	dir   *image.Dir
	inv   *pb.InventoryEntry
	ext   *pb.CrhookInventoryEntry
	tree  []*pb.PstreeEntry
	files map[uint32]*pb.FileEntry
	tasks map[int]*taskImage

	// keepExe: leave the task's executable link alone (PR_SET_MM_MAP
	// exe_fd needs CAP_CHECKPOINT_RESTORE, which a container may lack).
	keepExe bool
	// root, when set, is where the restored tasks' paths resolve (a
	// container's /proc/PID/root).
	root string
	// checks: the pages files a restore checks as it fills them, by
	// name (pagescheck.go).
	checks map[string]*pagesCheck
}

type threadImage struct {
	tid  int
	core *pb.CoreEntry
	ext  *pb.CrhookThreadEntry
}

func (ti *taskImage) zombie() bool { return ti.core.GetTc().GetTaskState() == taskDead }

type taskImage struct {
	pid  int
	ps   *pb.PstreeEntry
	core *pb.CoreEntry // the leader's
	ext  *pb.CrhookTaskEntry
	// threads, the leader first
	threads []threadImage
	mm      *pb.MmEntry
	fs      *pb.FsEntry
	fds     []*pb.FdinfoEntry
	pages   uint32
	runs    []mem.Run
}

// sid and pgid are the task's session and process group, outsideNS for
// one whose leader is outside the tree's pid namespace (0 in the image).
func (ti *taskImage) sid() int  { return unseenID(int(ti.ps.GetSid())) }
func (ti *taskImage) pgid() int { return unseenID(int(ti.ps.GetPgid())) }

func readOne(d *image.Dir, name string, k image.Kind, m proto.Message) error {
	r, err := d.NewReader(name, k)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Read(m); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: no entry: %w", name, ErrBadImage)
		}
		return err
	}
	return nil
}

func readAll[T proto.Message](d *image.Dir, name string, k image.Kind, mk func() T) ([]T, error) {
	r, err := d.NewReader(name, k)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []T
	for {
		m := mk()
		err := r.Read(m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
}

func loadImages(path string) (*imageSet, error) {
	d, err := image.OpenDir(path)
	if err != nil {
		return nil, err
	}
	return loadImagesFrom(d)
}

// loadImagesFrom is loadImages from the open directory d, which the
// image set takes over (closed on error). A verified d decodes the
// small images from the bytes it checked.
func loadImagesFrom(d *image.Dir) (_ *imageSet, err error) {
	path := d.Path()
	s := &imageSet{dir: d, inv: &pb.InventoryEntry{}, ext: &pb.CrhookInventoryEntry{}, files: map[uint32]*pb.FileEntry{}, tasks: map[int]*taskImage{}}
	ok := false
	defer func() {
		if !ok {
			_ = d.Close()
		}
	}()
	if err := readOne(d, "inventory.img", image.Inventory, s.inv); err != nil {
		return nil, err
	}
	if err := readOne(d, "crhook-inventory.img", image.CrhookInventory, s.ext); err != nil {
		return nil, fmt.Errorf("not a crhook image directory: %w", err)
	}
	if v := s.ext.GetFormatVersion(); v < 1 || v > formatVersion {
		return nil, fmt.Errorf("%s: image format version %d, this crhook reads 1 to %d: %w", path, v, formatVersion, ErrBadImage)
	}
	if a := s.ext.GetArch(); a != machineArch {
		return nil, fmt.Errorf("%s: images of a %s machine cannot be restored on %s: %w", path, a, machineArch, ErrNotSupported)
	}
	if s.tree, err = readAll(d, "pstree.img", image.Pstree, func() *pb.PstreeEntry { return &pb.PstreeEntry{} }); err != nil {
		return nil, err
	}
	if len(s.tree) == 0 {
		return nil, fmt.Errorf("pstree.img: no process: %w", ErrBadImage)
	}
	files, err := readAll(d, "files.img", image.Files, func() *pb.FileEntry { return &pb.FileEntry{} })
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		s.files[f.GetId()] = f
	}
	seen := map[int]bool{}
	for _, p := range s.tree {
		pid := int(p.GetPid())
		if pid <= 0 || seen[pid] {
			return nil, fmt.Errorf("pstree.img: bad or repeated pid %d: %w", pid, ErrBadImage)
		}
		seen[pid] = true
		if len(p.GetThreads()) == 0 || int(p.GetThreads()[0]) != pid {
			return nil, fmt.Errorf("pstree.img: pid %d: the thread list must start with the leader: %w", pid, ErrBadImage)
		}
	}
	// Each task's images are read by one worker per CPU: a tree is
	// thousands of small files. The first error in tree order wins.
	tis := make([]*taskImage, len(s.tree))
	errs := parallel(len(s.tree), func(i int) (err error) {
		tis[i], err = loadTask(d, s.tree[i])
		return err
	})
	for i, err := range errs {
		if err != nil {
			return nil, err
		}
		s.tasks[tis[i].pid] = tis[i]
	}
	// Every parent must be in the tree, but the root's.
	for i, p := range s.tree {
		if i == 0 {
			continue
		}
		if _, ok := s.tasks[int(p.GetPpid())]; !ok {
			return nil, fmt.Errorf("pstree.img: pid %d has parent %d, which is not in the tree: %w", p.GetPid(), p.GetPpid(), ErrBadImage)
		}
	}
	if err := s.checkParentRuns(); err != nil {
		return nil, err
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// parallel runs f(0) ... f(n-1) on one worker per CPU (at most 4) and
// returns their errors by index.
func parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), 4, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				errs[i] = f(i)
			}
		}()
	}
	wg.Wait()
	return errs
}

// loadTask reads the images of the task p names.
func loadTask(d *image.Dir, p *pb.PstreeEntry) (*taskImage, error) {
	pid := int(p.GetPid())
	ti := &taskImage{pid: pid, ps: p, ext: &pb.CrhookTaskEntry{}, mm: &pb.MmEntry{}, fs: &pb.FsEntry{}}
	if err := readOne(d, extName(pid), image.CrhookTask, ti.ext); err != nil {
		return nil, err
	}
	exts := map[int]*pb.CrhookThreadEntry{}
	for _, e := range ti.ext.GetThreads() {
		exts[int(e.GetTid())] = e
	}
	// A thousand threads are a thousand core images: read in parallel
	// too.
	tids := p.GetThreads()
	cores := make([]*pb.CoreEntry, len(tids))
	for _, err := range parallel(len(tids), func(i int) error {
		c := &pb.CoreEntry{}
		name := coreName(int(tids[i]))
		if err := readOne(d, name, image.Core, c); err != nil {
			return err
		}
		if c.GetThreadInfo().GetGpregs() == nil {
			return fmt.Errorf("%s: no x86_64 registers: %w", name, ErrBadImage)
		}
		if i == 0 && c.GetTc() == nil {
			return fmt.Errorf("%s: no task core: %w", name, ErrBadImage)
		}
		cores[i] = c
		return nil
	}) {
		if err != nil {
			return nil, err
		}
	}
	ti.core = cores[0]
	for i, tid := range tids {
		ti.threads = append(ti.threads, threadImage{tid: int(tid), core: cores[i], ext: exts[int(tid)]})
	}
	if ti.zombie() {
		return ti, nil
	}
	if err := readOne(d, mmName(pid), image.MM, ti.mm); err != nil {
		return nil, err
	}
	if err := readOne(d, fsName(pid), image.Fs, ti.fs); err != nil {
		return nil, err
	}
	var err error
	filesID := ti.core.GetIds().GetFilesId()
	if ti.fds, err = readAll(d, fdinfoName(filesID), image.Fdinfo, func() *pb.FdinfoEntry { return &pb.FdinfoEntry{} }); err != nil {
		return nil, err
	}
	if err := ti.readPagemap(d); err != nil {
		return nil, err
	}
	return ti, nil
}

// ownPages is the number of pages in ti's own pages file: its runs but
// those in the parent.
func (ti *taskImage) ownPages() uint64 {
	var n uint64
	for _, r := range ti.runs {
		if !r.Parent {
			n += r.NrPages
		}
	}
	return n
}

func (ti *taskImage) readPagemap(d *image.Dir) error {
	name := pagemapName(ti.pid)
	r, err := d.NewReader(name, image.Pagemap)
	if err != nil {
		return err
	}
	defer r.Close()
	head := &pb.PagemapHead{}
	if err := r.Read(head); err != nil {
		return err
	}
	ti.pages = head.GetPagesId()
	vmas := ti.mm.GetVmas()
	for {
		e := &pb.PagemapEntry{}
		err := r.Read(e)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		run := mem.Run{Addr: e.GetVaddr(), NrPages: uint64(e.GetNrPages())}
		switch e.GetFlags() {
		case pePresent:
		case peInParent:
			run.Parent = true
		default:
			return fmt.Errorf("%s: pages at %#x (+%d) have flags %#x, not PE_PRESENT (%#x) or crhook's in-parent (%#x): %w",
				name, run.Addr, run.NrPages, e.GetFlags(), pePresent, peInParent, ErrBadImage)
		}
		// Every run must lie inside one dumped VMA: an image must not
		// make us write anywhere else.
		end := run.Addr + run.NrPages*uint64(pageSize)
		inside := false
		for _, v := range vmas {
			if v.GetStart() <= run.Addr && end <= v.GetEnd() && end > run.Addr {
				inside = true
				break
			}
		}
		if !inside || run.Addr%uint64(pageSize) != 0 {
			return fmt.Errorf("%s: pages at %#x (+%d) lie outside every mapping: %w", name, run.Addr, run.NrPages, ErrBadImage)
		}
		ti.runs = append(ti.runs, run)
	}
}
