//go:build linux && amd64

package crcore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// memfdDriver handles memfd_create files.
//
// Images: each open file is a memfd_file_entry (files.img) naming its
// inode; each inode is dumped once as a memfd_inode_entry in memfd.img
// (MEMFD_INODE, CRIU's name and message; inode_id and shmid are the
// inode number). The contents are NOT in CRIU's shmem pagemap: they are
// crhook's own raw file pages-memfd-<inode_id>.img, a copy of the memfd
// with its holes (sparse, the file's size), so CRIU tools do not see the
// contents (the "pages-" prefix marks it raw, like pages-N.img).
//
// Restore: memfd_create with the name, contents written and the owner
// set through a pidfd_getfd copy, then the seals; every other open file
// of the inode is reopened from the first through /proc.
type memfdDriver struct{}

func init() { registerFdDriver(memfdDriver{}) }

func (memfdDriver) Type() pb.FdTypes { return pb.FdTypes_MEMFD }

const (
	memfdPrefix = "/memfd:"
	deletedSfx  = " (deleted)"
	memfdImg    = "memfd.img"
	// Longest name memfd_create takes (MFD_NAME_MAX_LEN).
	memfdNameMax = 249
)

func (memfdDriver) Match(f *openFd) bool {
	if f.Mode() != unix.S_IFREG || f.Stat.Nlink != 0 ||
		!strings.HasPrefix(f.Link, memfdPrefix) || !strings.HasSuffix(f.Link, deletedSfx) {
		return false
	}
	// A deleted file someone named /memfd:... lives on a mount the task
	// sees; a memfd lives on the kernel's internal shm mount.
	seen, err := mountVisible(f.Pid, f.Info.MntID)
	return err == nil && !seen
}

// mountVisible reports whether mount id is in the task's mountinfo.
func mountVisible(pid, id int) (bool, error) {
	fh, err := os.Open(procfs.Path(pid, "mountinfo"))
	if err != nil {
		return false, err
	}
	defer fh.Close()
	want := strconv.Itoa(id) + " "
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), want) {
			return true, nil
		}
	}
	return false, sc.Err()
}

func memfdData(ino uint64) string { return "pages-memfd-" + strconv.FormatUint(ino, 10) + ".img" }

func (memfdDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	ino := f.Stat.Ino
	local, err := f.Local()
	if err != nil {
		return nil, err
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(local.Fd()), &sfs); err != nil {
		return nil, fmt.Errorf("%s: %w", fileObjectName(f), os.NewSyscallError("fstatfs", err))
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		return nil, fmt.Errorf("%s: memfd on a filesystem of magic %#x (MFD_HUGETLB): %w", fileObjectName(f), sfs.Type, ErrNotSupported)
	}
	done := dumpedWhere(c, func(e *pb.FileEntry) bool {
		return e.GetType() == pb.FdTypes_MEMFD && uint64(e.GetMemfd().GetInodeId()) == ino
	})
	if !done {
		if err := dumpMemfdInode(c, f, local); err != nil {
			return nil, fmt.Errorf("dump memfd %s: %w", fileObjectName(f), err)
		}
	}
	return &pb.FileEntry{Memfd: &pb.MemfdFileEntry{
		Id:      proto.Uint32(id),
		Flags:   proto.Uint32(f.Flags),
		Pos:     proto.Uint64(uint64(f.Info.Pos)),
		Fown:    zeroFown(),
		InodeId: proto.Uint32(uint32(ino)),
	}}, nil
}

func dumpMemfdInode(c *fdDumpCtx, f *openFd, local *os.File) error {
	ino := f.Stat.Ino
	if ino > 1<<32-1 {
		return fmt.Errorf("inode %d above 32 bits: %w", ino, ErrNotSupported)
	}
	name := strings.TrimSuffix(strings.TrimPrefix(f.Link, memfdPrefix), deletedSfx)
	seals, err := unix.FcntlInt(local.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return os.NewSyscallError("fcntl(F_GET_SEALS)", err)
	}
	// A file of our own (new position) to look for holes: the task's
	// open file keeps its position.
	p := procfs.Path(f.Pid, "fd/"+strconv.Itoa(f.Fd))
	src, err := os.OpenFile(p, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := c.dir.CreatePages(memfdData(ino))
	if err != nil {
		return err
	}
	size := f.Stat.Size
	if err := copyExtents(dst, src, size); err != nil {
		_ = dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	w, err := c.Extra(memfdImg, image.MemfdInode)
	if err != nil {
		return err
	}
	return w.Write(&pb.MemfdInodeEntry{
		Name:    proto.String(name),
		Uid:     proto.Uint32(f.Stat.Uid),
		Gid:     proto.Uint32(f.Stat.Gid),
		Size:    proto.Uint64(uint64(size)),
		Shmid:   proto.Uint32(uint32(ino)),
		Seals:   proto.Uint32(uint32(seals)),
		InodeId: proto.Uint64(ino),
	})
}

// copyExtents copies the data of src (size bytes) to the same offsets of
// dst, skipping holes, and gives dst the size.
func copyExtents(dst, src *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	off := int64(0)
	for off < size {
		start, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return os.NewSyscallError("lseek(SEEK_DATA)", err)
		}
		end, err := unix.Seek(int(src.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return os.NewSyscallError("lseek(SEEK_HOLE)", err)
		}
		end = min(end, size)
		for pos := start; pos < end; {
			n := int(min(int64(len(buf)), end-pos))
			m, err := src.ReadAt(buf[:n], pos)
			if err != nil && (!errors.Is(err, io.EOF) || m != n) {
				return err
			}
			if _, err := dst.WriteAt(buf[:n], pos); err != nil {
				return err
			}
			pos += int64(n)
		}
		off = end
	}
	return dst.Truncate(size)
}

func readMemfdInode(c *fdRestoreCtx, ino uint64) (*pb.MemfdInodeEntry, error) {
	rd, err := c.Dir().NewReader(memfdImg, image.MemfdInode)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	for {
		e := &pb.MemfdInodeEntry{}
		err := rd.Read(e)
		if errors.Is(err, io.EOF) {
			return nil, badImagef("%s: no inode %d", memfdImg, ino)
		}
		if err != nil {
			return nil, err
		}
		if e.GetInodeId() == ino {
			return e, nil
		}
	}
}

func (memfdDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	ino := uint64(e.GetMemfd().GetInodeId())
	in, err := readMemfdInode(c, ino)
	if err != nil {
		return 0, err
	}
	name := in.GetName()
	if len(name) > memfdNameMax || strings.ContainsRune(name, 0) {
		return 0, badImagef("%s: memfd name of %d bytes", memfdImg, len(name))
	}
	if int64(in.GetSize()) < 0 {
		return 0, badImagef("%s: memfd size %d", memfdImg, in.GetSize())
	}
	fl := uint64(unix.MFD_CLOEXEC)
	if in.GetSeals() != unix.F_SEAL_SEAL {
		fl |= unix.MFD_ALLOW_SEALING
	}
	r.reset()
	p, err := r.cstring(name)
	if err != nil {
		return 0, err
	}
	mfd, err := r.call("memfd_create "+name, unix.SYS_MEMFD_CREATE, p, fl)
	if err != nil {
		return 0, err
	}
	if err := fillMemfd(c, r.pid(), mfd, in); err != nil {
		return 0, fmt.Errorf("restore memfd %q: %w", name, err)
	}

	var mine uint64
	found, used := false, false
	for _, of := range filesWhere(c, pb.FdTypes_MEMFD, func(f *pb.FileEntry) bool { return uint64(f.GetMemfd().GetInodeId()) == ino }) {
		m := of.GetMemfd()
		var fd uint64
		if m.GetFlags()&unix.O_ACCMODE == unix.O_RDWR && !used {
			fd, used = mfd, true
		} else if fd, err = reopenInTask(r, mfd, m.GetFlags()&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC)); err != nil {
			return 0, err
		}
		if err := setStatusFlags(r, fd, m.GetFlags()); err != nil {
			return 0, err
		}
		if pos := m.GetPos(); pos != 0 {
			if _, err := r.call("lseek", unix.SYS_LSEEK, fd, pos, unix.SEEK_SET); err != nil {
				return 0, err
			}
		}
		if of.GetId() == e.GetId() {
			mine, found = fd, true
		} else {
			c.Provide(of.GetId(), fd)
		}
	}
	if !used {
		if err := closeInTask(r, mfd); err != nil {
			return 0, err
		}
	}
	if !found {
		return 0, badImagef("file %d is not among the open files of its memfd", e.GetId())
	}
	return mine, nil
}

// fillMemfd gives the task's new memfd its size, contents, owner and
// seals, through a local copy.
func fillMemfd(c *fdRestoreCtx, pid int, mfd uint64, in *pb.MemfdInodeEntry) error {
	local, err := taskFd(pid, mfd)
	if err != nil {
		return err
	}
	defer local.Close()
	src, err := c.Dir().OpenPages(memfdData(in.GetInodeId()))
	if err != nil {
		return err
	}
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if uint64(st.Size) != in.GetSize() {
		return badImagef("%s holds %d bytes, the memfd %d", memfdData(in.GetInodeId()), st.Size, in.GetSize())
	}
	if err := copyExtents(local, src, st.Size); err != nil {
		return err
	}
	if err := local.Chown(int(in.GetUid()), int(in.GetGid())); err != nil {
		return err
	}
	if s := in.GetSeals(); s != unix.F_SEAL_SEAL && s != 0 {
		if _, err := unix.FcntlInt(local.Fd(), unix.F_ADD_SEALS, int(s)); err != nil {
			return fmt.Errorf("add seals %#x: %w", s, os.NewSyscallError("fcntl(F_ADD_SEALS)", err))
		}
	}
	return nil
}
