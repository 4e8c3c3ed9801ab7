//go:build linux && amd64

package crcore

// Shared memory objects behind VMAs: shared anonymous memory
// (MAP_SHARED|MAP_ANONYMOUS, inherited across fork: "/dev/zero (deleted)"),
// memfd mappings ("/memfd:NAME (deleted)", shared or private) and SysV
// shared memory attachments ("/SYSV%08x (deleted)", sysvipc.go).
//
// Identity: the shmem inode behind the VMA (stat of
// /proc/PID/map_files/START-END; its number is what maps prints). Every
// VMA of every task that maps one object names it, so the object is
// dumped once and mapped again by each task on restore: the sharing
// survives.
//
// Images (CRIU's where CRIU has them):
//   - shared anonymous: vma_entry status VMA_ANON_SHARED, shmid = the
//     inode number; the object's pages in pagemap-shmem-<shmid>.img
//     (CRIU's SHMEM_PAGEMAP: a pagemap_head naming pages-<pages_id>.img,
//     then pagemap_entry runs whose vaddr is the byte offset in the
//     object). pages_id is above any pid (shmemPagesBase + n). The
//     object's size is not stored, as in CRIU: it is the furthest
//     pgoff+length of the VMAs that map it.
//   - memfd: status VMA_AREA_MEMFD with VMA_FILE_SHARED or
//     VMA_FILE_PRIVATE, shmid = the id of a memfd file entry
//     (files.img, memfd.img, the memfd driver's contents). A memfd that
//     is also an open fd of the tree is that fd's file; one that is only
//     mapped gets a file entry of its own that no fd names.
//   - SysV: status VMA_AREA_SYSVIPC, shmid = the segment's id
//     (sysvipc.go dumps the segments).
//
// Restore: the first task that maps an object makes it (shared
// anonymous: an mmap MAP_SHARED|MAP_ANONYMOUS it opens again through
// /proc/self/map_files, then unmaps; memfd: the memfd driver), keeps an
// fd of it until it is finished, and fills it from our side through a
// pidfd_getfd copy. Every VMA of the object, in that task and in the
// others (which fetch the fd with pidfd_getfd), is an mmap of that fd at
// the VMA's address and offset.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// CRIU's VMA status bits for SysV shm and memfd (criu/include/image.h).
const (
	vmaAreaSysvipc = 1 << 10
	vmaAreaMemfd   = 1 << 14
)

// shmemPagesBase: pages ids of shared objects start above PID_MAX_LIMIT,
// so that they never meet a task's pages-<pid>.img.
const shmemPagesBase = 1 << 22

func shmemPagemapName(shmid uint64) string { return fmt.Sprintf("pagemap-shmem-%d.img", shmid) }

// shmemDump is what the dump knows of the shared objects seen so far.
type shmemDump struct {
	anon  map[uint64]bool   // shared anonymous inode -> pages dumped
	memfd map[uint64]uint32 // memfd inode -> file id of a mapped-only memfd
	pages uint32            // pages ids handed out
}

// shmemKind tells the shared objects apart by the VMA's path; "" is none.
func shmemKind(v *procfs.VMA) string {
	if v.Major != 0 || !v.Deleted {
		return ""
	}
	switch {
	case strings.HasPrefix(v.Path, "/SYSV"):
		// The inode is the segment's id, and 0 is a valid one (the
		// first segment of a namespace).
		return "sysv"
	case v.Inode == 0:
		return ""
	case v.Shared && v.Path == "/dev/zero":
		return "anon"
	case strings.HasPrefix(v.Path, "/memfd:"):
		return "memfd"
	}
	return ""
}

// shmemVMA fills e (status, flags, shmid) for a VMA of a shared object
// and dumps the object the first time it is seen. status and flags come
// in with the generic bits.
func (d *dumper) shmemVMA(pid int, v *procfs.VMA, e *pb.VmaEntry, status, flags *uint32) error {
	mf := procfs.Path(pid, fmt.Sprintf("map_files/%x-%x", v.Start, v.End))
	var st unix.Stat_t
	if err := unix.Stat(mf, &st); err != nil {
		return &os.PathError{Op: "stat", Path: mf, Err: err}
	}
	switch shmemKind(v) {
	case "anon":
		*status |= vmaAnonShared
		*flags |= unix.MAP_ANONYMOUS
		e.Shmid = proto.Uint64(st.Ino)
		if d.shm.anon[st.Ino] {
			return nil
		}
		if d.shm.anon == nil {
			d.shm.anon = map[uint64]bool{}
		}
		if err := d.dumpShmemPages(mf, st.Ino); err != nil {
			return fmt.Errorf("dump shared memory %d: %w", st.Ino, err)
		}
		d.shm.anon[st.Ino] = true
		return nil
	case "memfd":
		id, err := d.memfdForVMA(mf, v, &st)
		if err != nil {
			return err
		}
		*status |= vmaAreaMemfd
		if v.Shared {
			*status |= vmaFileShared
		} else {
			*status |= vmaFilePrivate
		}
		e.Shmid = proto.Uint64(uint64(id))
		return nil
	case "sysv":
		*status |= vmaAreaSysvipc
		e.Shmid = proto.Uint64(st.Ino) // a SysV segment's inode number is its id
		return d.noteSysvAttach(st.Ino)
	}
	return fmt.Errorf("not a shared memory object: %w", ErrNotSupported)
}

// dumpShmemPages writes the data of the shmem file at path (holes
// skipped) as pagemap-shmem-<ino>.img and its pages file.
func (d *dumper) dumpShmemPages(path string, ino uint64) error {
	src, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	d.shm.pages++
	pagesID := uint32(shmemPagesBase) + d.shm.pages
	pages, err := d.dir.CreatePages(pagesName(int(pagesID)))
	if err != nil {
		return err
	}
	defer pages.Close()
	w, err := d.dir.NewWriter(shmemPagemapName(ino), image.Pagemap)
	if err != nil {
		return err
	}
	if err := w.Write(&pb.PagemapHead{PagesId: proto.Uint32(pagesID)}); err != nil {
		_ = w.Close()
		return err
	}
	ps := int64(pageSize)
	size := (fi.Size() + ps - 1) / ps * ps
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			_ = w.Close()
			return os.NewSyscallError("lseek(SEEK_DATA)", err)
		}
		end, err := unix.Seek(int(src.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			_ = w.Close()
			return os.NewSyscallError("lseek(SEEK_HOLE)", err)
		}
		start, end = start/ps*ps, min((end+ps-1)/ps*ps, size)
		if err := w.Write(&pb.PagemapEntry{Vaddr: proto.Uint64(uint64(start)), NrPages: proto.Uint32(uint32((end - start) / ps)), Flags: proto.Uint32(pePresent)}); err != nil {
			_ = w.Close()
			return err
		}
		for pos := start; pos < end; {
			n := int(min(int64(len(buf)), end-pos))
			m, err := src.ReadAt(buf[:n], pos)
			if err != nil && !errors.Is(err, io.EOF) {
				_ = w.Close()
				return err
			}
			clear(buf[m:n]) // past the end of the file: zeros, as mapped
			if _, err := pages.Write(buf[:n]); err != nil {
				_ = w.Close()
				return err
			}
			d.stats.PagesWritten += uint64(n) / uint64(ps)
			pos += int64(n)
		}
		off = end
	}
	return w.Close()
}

// memfdForVMA returns the id of the memfd file entry for a memfd VMA: the
// file of an fd of the tree that opens the same inode, else an entry of
// its own (the memfd is only mapped), dumped once per inode.
func (d *dumper) memfdForVMA(mf string, v *procfs.VMA, st *unix.Stat_t) (uint32, error) {
	ino := st.Ino
	for _, e := range d.files.entries {
		if e.GetType() == pb.FdTypes_MEMFD && uint64(e.GetMemfd().GetInodeId()) == ino {
			return e.GetId(), nil
		}
	}
	if id, ok := d.shm.memfd[ino]; ok {
		return id, nil
	}
	if ino > 1<<32-1 {
		return 0, fmt.Errorf("memfd inode %d above 32 bits: %w", ino, ErrNotSupported)
	}
	src, err := os.OpenFile(mf, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	seals, err := unix.FcntlInt(src.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return 0, os.NewSyscallError("fcntl(F_GET_SEALS)", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(src.Fd()), &sfs); err != nil {
		return 0, os.NewSyscallError("fstatfs", err)
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		return 0, fmt.Errorf("memfd on a filesystem of magic %#x (MFD_HUGETLB): %w", sfs.Type, ErrNotSupported)
	}
	dst, err := d.dir.CreatePages(memfdData(ino))
	if err != nil {
		return 0, err
	}
	if err := copyExtents(dst, src, st.Size); err != nil {
		_ = dst.Close()
		return 0, err
	}
	if err := dst.Close(); err != nil {
		return 0, err
	}
	w, err := d.files.ctx.Extra(memfdImg, image.MemfdInode)
	if err != nil {
		return 0, err
	}
	if err := w.Write(&pb.MemfdInodeEntry{
		Name:    proto.String(strings.TrimPrefix(v.Path, memfdPrefix)),
		Uid:     proto.Uint32(st.Uid),
		Gid:     proto.Uint32(st.Gid),
		Size:    proto.Uint64(uint64(st.Size)),
		Shmid:   proto.Uint32(uint32(ino)),
		Seals:   proto.Uint32(uint32(seals)),
		InodeId: proto.Uint64(ino),
	}); err != nil {
		return 0, err
	}
	id := d.files.newID()
	d.files.entries = append(d.files.entries, &pb.FileEntry{Type: pb.FdTypes_MEMFD.Enum(), Id: proto.Uint32(id), Memfd: &pb.MemfdFileEntry{
		Id:      proto.Uint32(id),
		Flags:   proto.Uint32(unix.O_RDWR),
		Pos:     proto.Uint64(0),
		Fown:    zeroFown(),
		InodeId: proto.Uint32(uint32(ino)),
	}})
	if d.shm.memfd == nil {
		d.shm.memfd = map[uint64]uint32{}
	}
	d.shm.memfd[ino] = id
	return id, nil
}

// shmemRestore is what the restore knows of the shared objects made so
// far: for each, a task holding an fd of it.
type shmemRestore struct {
	anon map[uint64]fdHolder // shmid -> holder
}

// mapShared maps a VMA of a shared object (shared anonymous, memfd, SysV)
// in t with protection mprot (the caller's choice: writable while it is
// filled) and returns the protection it used. It reports false for any
// other VMA, which the caller maps.
func (rs *restorer) mapShared(t *rtask, v *pb.VmaEntry, mprot uint64) (uint64, bool, error) {
	status := v.GetStatus()
	switch {
	case status&vmaAreaSysvipc != 0:
		return uint64(v.GetProt()), true, rs.attachSysv(t, v)
	case status&vmaAreaMemfd != 0:
		return mprot, true, rs.mapMemfd(t, v, mprot)
	case status&vmaAnonShared != 0:
		return mprot, true, rs.mapAnonShared(t, v, mprot)
	}
	return 0, false, nil
}

func vmaName(v *pb.VmaEntry) string { return fmt.Sprintf("%#x-%#x", v.GetStart(), v.GetEnd()) }

// mmapFd maps fd at the VMA's place and offset.
func mmapFd(r *remote, v *pb.VmaEntry, fd, prot uint64) error {
	flags := uint64(v.GetFlags())&^unix.MAP_ANONYMOUS | unix.MAP_FIXED
	_, err := r.call("mmap "+vmaName(v), unix.SYS_MMAP, v.GetStart(), v.GetEnd()-v.GetStart(), prot, flags, fd, v.GetPgoff())
	return err
}

// heldFd returns an fd of t holding h's file (fetched from another task
// with pidfd_getfd), and whether the caller must close it.
func (rs *restorer) heldFd(t *rtask, h fdHolder) (uint64, bool, error) {
	if h.task == t {
		return uint64(h.fd), false, nil
	}
	fd, err := rs.fetch(t, h)
	return fd, true, err
}

func (rs *restorer) mapAnonShared(t *rtask, v *pb.VmaEntry, prot uint64) error {
	shmid := v.GetShmid()
	if rs.shm.anon == nil {
		rs.shm.anon = map[uint64]fdHolder{}
	}
	h, ok := rs.shm.anon[shmid]
	if !ok {
		fd, err := rs.makeAnonShared(t, shmid)
		if err != nil {
			return fmt.Errorf("shared memory %d: %w", shmid, err)
		}
		h = fdHolder{task: t, fd: uint32(fd)}
		rs.shm.anon[shmid] = h
	}
	fd, owned, err := rs.heldFd(t, h)
	if err != nil {
		return err
	}
	err = mmapFd(t.r, v, fd, prot)
	if owned {
		if cerr := closeInTask(t.r, fd); err == nil {
			err = cerr
		}
	}
	return err
}

// makeAnonShared creates shared anonymous object shmid in t, fills it and
// returns an fd of it in t (kept until t is finished).
func (rs *restorer) makeAnonShared(t *rtask, shmid uint64) (uint64, error) {
	var size uint64
	for _, ti := range rs.s.tasks {
		for _, v := range ti.mm.GetVmas() {
			if v.GetStatus()&vmaAnonShared != 0 && v.GetShmid() == shmid {
				size = max(size, v.GetPgoff()+v.GetEnd()-v.GetStart())
			}
		}
	}
	pm, err := readShmemPagemap(rs.s.dir, shmid)
	if err != nil {
		return 0, err
	}
	for _, e := range pm.runs {
		size = max(size, e.GetVaddr()+uint64(e.GetNrPages())*uint64(pageSize))
	}
	r := t.r
	addr, err := r.call("mmap shared anonymous", unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return 0, err
	}
	r.reset()
	p, err := r.cstring(fmt.Sprintf("/proc/self/map_files/%x-%x", addr, addr+size))
	if err != nil {
		return 0, err
	}
	fd, err := r.call("open map_files", unix.SYS_OPENAT, atFdcwd, p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if _, uerr := r.call("munmap", unix.SYS_MUNMAP, addr, size); err == nil {
		err = uerr
	}
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (opening /proc/self/map_files needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)", err)
		}
		return 0, err
	}
	local, err := taskFd(t.hostPid, fd)
	if err != nil {
		return 0, err
	}
	defer local.Close()
	if err := pm.copyTo(rs.s.dir, local); err != nil {
		return 0, err
	}
	return fd, nil
}

// shmemPagemap is a pagemap-shmem image read in.
type shmemPagemap struct {
	name    string
	pagesID uint32
	runs    []*pb.PagemapEntry
}

func readShmemPagemap(d *image.Dir, shmid uint64) (*shmemPagemap, error) {
	name := shmemPagemapName(shmid)
	rd, err := d.NewReader(name, image.Pagemap)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	head := &pb.PagemapHead{}
	if err := rd.Read(head); err != nil {
		return nil, err
	}
	pm := &shmemPagemap{name: name, pagesID: head.GetPagesId()}
	for {
		e := &pb.PagemapEntry{}
		err := rd.Read(e)
		if errors.Is(err, io.EOF) {
			return pm, nil
		}
		if err != nil {
			return nil, err
		}
		if e.GetVaddr()%uint64(pageSize) != 0 || e.GetVaddr() > 1<<46 || e.GetNrPages() > 1<<30 {
			return nil, badImagef("%s: run at %#x (+%d pages)", name, e.GetVaddr(), e.GetNrPages())
		}
		pm.runs = append(pm.runs, e)
	}
}

// copyTo writes the runs, read in order from their pages file, into dst
// at their offsets.
func (pm *shmemPagemap) copyTo(d *image.Dir, dst *os.File) error {
	if len(pm.runs) == 0 {
		return nil
	}
	src, err := d.OpenPages(pagesName(int(pm.pagesID)))
	if err != nil {
		return err
	}
	defer src.Close()
	buf := make([]byte, 1<<20)
	for _, e := range pm.runs {
		off, left := int64(e.GetVaddr()), int64(e.GetNrPages())*int64(pageSize)
		for left > 0 {
			n := min(int64(len(buf)), left)
			if _, err := io.ReadFull(src, buf[:n]); err != nil {
				return fmt.Errorf("%s: %w", pagesName(int(pm.pagesID)), err)
			}
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return err
			}
			off, left = off+n, left-n
		}
	}
	return nil
}

// mapMemfd maps a memfd VMA: from an fd of the memfd this task or
// another one already holds, else from a memfd made here by its driver.
func (rs *restorer) mapMemfd(t *rtask, v *pb.VmaEntry, prot uint64) error {
	id := uint32(v.GetShmid())
	f, ok := rs.s.files[id]
	if !ok || f.GetMemfd() == nil {
		return badImagef("vma %s names file %d, not a memfd", vmaName(v), id)
	}
	ino := f.GetMemfd().GetInodeId()
	r := t.r
	var src uint64
	var owned bool
	var found bool
	for fd, fid := range t.table {
		if g := rs.s.files[fid].GetMemfd(); g != nil && g.GetInodeId() == ino {
			src, found = uint64(fd), true
			break
		}
	}
	if !found {
		for fid, h := range rs.holders {
			if g := rs.s.files[fid].GetMemfd(); g != nil && g.GetInodeId() == ino {
				fd, own, err := rs.heldFd(t, h)
				if err != nil {
					return err
				}
				src, owned, found = fd, own, true
				break
			}
		}
	}
	if !found {
		// Mapped only (or open only in a task restored later): the
		// driver makes it, here; other tasks fetch it from us.
		c := &fdRestoreCtx{s: rs.s, ti: t.ti, provided: map[uint32]uint64{}}
		fd, err := memfdDriver{}.Restore(c, r, f)
		if err != nil {
			return fmt.Errorf("vma %s: %w", vmaName(v), err)
		}
		rs.holders[id] = fdHolder{task: t, fd: uint32(fd)}
		for pid, pfd := range c.provided {
			if _, held := rs.holders[pid]; !held {
				rs.holders[pid] = fdHolder{task: t, fd: uint32(pfd)}
			}
		}
		src = fd
	}
	// The mapping needs an open file of its own access mode: a reopen
	// through /proc/self/fd gives one.
	mode := uint32(unix.O_RDONLY)
	if v.GetStatus()&vmaFileShared != 0 && (prot&unix.PROT_WRITE != 0 || mayWrite(t, v)) {
		mode = unix.O_RDWR
	}
	mfd, err := reopenInTask(r, src, mode)
	if owned {
		if cerr := closeInTask(r, src); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	err = mmapFd(r, v, mfd, prot)
	if cerr := closeInTask(r, mfd); err == nil {
		err = cerr
	}
	return err
}

// mayWrite reports whether a shared VMA could be made writable (VmFlags
// "mw"): its file must then be open read-write.
func mayWrite(t *rtask, v *pb.VmaEntry) bool {
	for _, e := range t.ti.ext.GetVmas() {
		if e.GetStart() == v.GetStart() {
			return strings.Contains(" "+e.GetVmFlags()+" ", " mw ")
		}
	}
	return false
}
