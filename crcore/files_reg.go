//go:build linux && amd64

package crcore

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// regDriver handles files reached by a path: regular files, directories,
// and character and block devices other than terminals (/dev/null,
// /dev/zero, /dev/urandom).
type regDriver struct{}

func init() { registerFdDriver(regDriver{}) }

func (regDriver) Type() pb.FdTypes { return pb.FdTypes_REG }

func (regDriver) Match(f *openFd) bool {
	switch f.Mode() {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFCHR, unix.S_IFBLK:
		return !isTTY(&f.Stat) && strings.HasPrefix(f.Link, "/")
	}
	return false
}

func (regDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	name := f.Link
	if strings.HasSuffix(f.Link, deletedSuffix) {
		var err error
		if name, err = dumpGhost(c, f, id); err != nil {
			return nil, err
		}
	} else {
		if f.Fd <= 2 && !reachableInRoot(f) {
			// A standard stream the runtime's caller gave (a `runc
			// exec` process's, opened outside the container): the
			// framework records it as an external stream.
			return nil, fmt.Errorf("%s: not reachable at its path in the task's root: %w", f.Link, ErrNotSupported)
		}
		// A device node stands for its device, not for its inode:
		// every container gets fresh nodes on its own /dev tmpfs, so
		// the new container's /dev/null is not the old one's inode.
		if m := f.Mode(); m != unix.S_IFCHR && m != unix.S_IFBLK {
			if err := dumpRegIdent(c, id, &f.Stat); err != nil {
				return nil, err
			}
		}
	}
	return &pb.FileEntry{Reg: regEntry(id, name, f.Flags, uint64(f.Info.Pos), &f.Stat)}, nil
}

func (regDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	f := e.GetReg()
	flags := f.GetFlags() &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	remap, ghost, err := ghostOf(c.Dir(), e.GetId())
	if err != nil {
		return 0, err
	}
	var fd uint64
	if ghost {
		if fd, err = restoreGhost(r, c.Dir(), remap, f, flags); err != nil {
			return 0, fmt.Errorf("restore deleted file %s: %w", f.GetName(), err)
		}
	} else {
		r.reset()
		p, err := r.cstring(f.GetName())
		if err != nil {
			return 0, err
		}
		if fd, err = r.call("open "+f.GetName(), unix.SYS_OPENAT, atFdcwd, p, uint64(flags|unix.O_CLOEXEC), 0); err != nil {
			return 0, err
		}
		if err := checkRegIdent(r, c.Dir(), f, fd); err != nil {
			r.callBestEffort("close", unix.SYS_CLOSE, fd)
			return 0, err
		}
	}
	if pos := f.GetPos(); pos != 0 && flags&unix.O_PATH == 0 {
		if _, err := r.call("lseek "+f.GetName(), unix.SYS_LSEEK, fd, pos, unix.SEEK_SET); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

func regEntry(id uint32, name string, flags uint32, pos uint64, st *unix.Stat_t) *pb.RegFileEntry {
	e := &pb.RegFileEntry{
		Id:    proto.Uint32(id),
		Flags: proto.Uint32(flags),
		Pos:   proto.Uint64(pos),
		Fown:  zeroFown(),
		Name:  proto.String(name),
	}
	if st != nil {
		e.Mode = proto.Uint32(st.Mode)
		e.Size = proto.Uint64(uint64(st.Size))
	}
	return e
}

// reachableInRoot reports whether f's path, resolved inside its task's
// root, is the file f is: what a restore, which opens it there, gets.
func reachableInRoot(f *openFd) bool {
	root, err := unix.Open(procfs.Path(f.Pid, "root"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, f.Link, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return false
	}
	return st.Dev == f.Stat.Dev && st.Ino == f.Stat.Ino
}
