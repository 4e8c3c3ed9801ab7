//go:build linux && amd64

package crcore

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// KCMP_FILE from include/uapi/linux/kcmp.h.
const kcmpFile = 0

// fileTable assigns ids to open files and collects their entries. An open
// file shared by several fds is dumped once: fds whose cheap identity
// (device, inode, position, flags) agree are compared with
// kcmp(KCMP_FILE).
type fileTable struct {
	next    uint32
	entries []*pb.FileEntry
	byKey   map[string]uint32
	byGen   map[string][]fdRef
	stdio   []*pb.CrhookStdioEntry
}

type fdRef struct {
	pid, fd int
	id      uint32
}

func newFileTable() *fileTable {
	return &fileTable{next: 1, byKey: map[string]uint32{}, byGen: map[string][]fdRef{}}
}

func (ft *fileTable) newID() uint32 {
	id := ft.next
	ft.next++
	return id
}

func isTTY(st *unix.Stat_t) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false
	}
	maj := unix.Major(st.Rdev)
	return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143)
}

// dumpFds describes every fd of pid.
func (ft *fileTable) dumpFds(pid int) ([]*pb.FdinfoEntry, error) {
	fds, err := procfs.Fds(pid)
	if err != nil {
		return nil, err
	}
	var out []*pb.FdinfoEntry
	for _, fd := range fds {
		e, err := ft.dumpFd(pid, fd)
		if err != nil {
			return nil, fmt.Errorf("fd %d: %w", fd, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func (ft *fileTable) dumpFd(pid, fd int) (*pb.FdinfoEntry, error) {
	p := procfs.Path(pid, "fd/"+strconv.Itoa(fd))
	link, err := os.Readlink(p)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nil, os.NewSyscallError("stat", err)
	}
	fi, err := procfs.ReadFdInfo(pid, fd)
	if err != nil {
		return nil, err
	}
	fdFlags := uint32(0)
	if fi.Flags&unix.O_CLOEXEC != 0 {
		fdFlags = unix.FD_CLOEXEC
	}
	flags := fi.Flags &^ unix.O_CLOEXEC
	mode := st.Mode & unix.S_IFMT

	regular := (mode == unix.S_IFREG || mode == unix.S_IFDIR || mode == unix.S_IFCHR || mode == unix.S_IFBLK) &&
		!isTTY(&st) && strings.HasPrefix(link, "/")
	if !regular {
		if fd <= 2 {
			// A standard stream we cannot rebuild (terminal, pipe or
			// socket to the outside): the restorer's own takes its place.
			id := ft.newID()
			ft.entries = append(ft.entries, &pb.FileEntry{
				Type: pb.FdTypes_EXT.Enum(),
				Id:   proto.Uint32(id),
				Ext:  &pb.ExtFileEntry{Id: proto.Uint32(id), Fown: &pb.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)}},
			})
			ft.stdio = append(ft.stdio, &pb.CrhookStdioEntry{
				Fd:     proto.Uint32(uint32(fd)),
				Kind:   stdioKind(&st).Enum(),
				FileId: proto.Uint32(id),
				Ino:    proto.Uint64(st.Ino),
				Path:   proto.String(link),
			})
			return &pb.FdinfoEntry{Id: proto.Uint32(id), Flags: proto.Uint32(fdFlags), Type: pb.FdTypes_EXT.Enum(), Fd: proto.Uint32(uint32(fd))}, nil
		}
		return nil, fmt.Errorf("pid %d fd %d is %s (%s): %w", pid, fd, kindName(&st, link), link, ErrNotSupported)
	}
	if strings.HasSuffix(link, " (deleted)") {
		return nil, fmt.Errorf("pid %d fd %d: %s: files unlinked while open: %w", pid, fd, link, ErrNotSupported)
	}

	// Shared open file? Same cheap identity, then kcmp.
	gen := fmt.Sprintf("%d:%d:%d:%o", st.Dev, st.Ino, fi.Pos, flags)
	for _, ref := range ft.byGen[gen] {
		same, err := kcmp(ref.pid, pid, kcmpFile, uintptr(ref.fd), uintptr(fd))
		if err == nil && same == 0 {
			return &pb.FdinfoEntry{Id: proto.Uint32(ref.id), Flags: proto.Uint32(fdFlags), Type: pb.FdTypes_REG.Enum(), Fd: proto.Uint32(uint32(fd))}, nil
		}
	}
	id := ft.newID()
	ft.byGen[gen] = append(ft.byGen[gen], fdRef{pid: pid, fd: fd, id: id})
	ft.entries = append(ft.entries, &pb.FileEntry{
		Type: pb.FdTypes_REG.Enum(),
		Id:   proto.Uint32(id),
		Reg:  regEntry(id, link, flags, uint64(fi.Pos), &st),
	})
	return &pb.FdinfoEntry{Id: proto.Uint32(id), Flags: proto.Uint32(fdFlags), Type: pb.FdTypes_REG.Enum(), Fd: proto.Uint32(uint32(fd))}, nil
}

func regEntry(id uint32, name string, flags uint32, pos uint64, st *unix.Stat_t) *pb.RegFileEntry {
	e := &pb.RegFileEntry{
		Id:    proto.Uint32(id),
		Flags: proto.Uint32(flags),
		Pos:   proto.Uint64(pos),
		Fown:  &pb.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)},
		Name:  proto.String(name),
	}
	if st != nil {
		e.Mode = proto.Uint32(st.Mode)
		e.Size = proto.Uint64(uint64(st.Size))
	}
	return e
}

func stdioKind(st *unix.Stat_t) pb.CrhookStdioKind {
	switch {
	case isTTY(st):
		return pb.CrhookStdioKind_STDIO_TTY
	case st.Mode&unix.S_IFMT == unix.S_IFIFO:
		return pb.CrhookStdioKind_STDIO_PIPE
	case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
		return pb.CrhookStdioKind_STDIO_SOCKET
	}
	return pb.CrhookStdioKind_STDIO_UNKNOWN
}

func kindName(st *unix.Stat_t, link string) string {
	switch {
	case isTTY(st):
		return "terminal"
	case st.Mode&unix.S_IFMT == unix.S_IFIFO:
		return "pipe"
	case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
		return "socket"
	case strings.HasPrefix(link, "anon_inode:"):
		return strings.TrimPrefix(link, "anon_inode:")
	}
	return "file of mode " + strconv.FormatUint(uint64(st.Mode), 8)
}

// pathFile returns the id of a file named by path (executable, cwd,
// root), created once per path and flags.
func (ft *fileTable) pathFile(path string, flags uint32) (uint32, error) {
	key := fmt.Sprintf("%s\x00%o", path, flags)
	if id, ok := ft.byKey[key]; ok {
		return id, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	id := ft.newID()
	ft.byKey[key] = id
	ft.entries = append(ft.entries, &pb.FileEntry{Type: pb.FdTypes_REG.Enum(), Id: proto.Uint32(id), Reg: regEntry(id, path, flags, 0, &st)})
	return id, nil
}

// mappedFile returns the id of the file behind a VMA.
func (ft *fileTable) mappedFile(pid int, v *procfs.VMA, flags uint32) (uint32, error) {
	key := fmt.Sprintf("%s\x00%d:%d:%d\x00%o", v.Path, v.Major, v.Minor, v.Inode, flags)
	if id, ok := ft.byKey[key]; ok {
		return id, nil
	}
	var st unix.Stat_t
	mf := procfs.Path(pid, fmt.Sprintf("map_files/%x-%x", v.Start, v.End))
	if err := unix.Stat(mf, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: mf, Err: err}
	}
	id := ft.newID()
	ft.byKey[key] = id
	ft.entries = append(ft.entries, &pb.FileEntry{Type: pb.FdTypes_REG.Enum(), Id: proto.Uint32(id), Reg: regEntry(id, v.Path, flags, 0, &st)})
	return id, nil
}
