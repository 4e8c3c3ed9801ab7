//go:build linux && amd64

package crcore

import (
	"fmt"
	"github.com/sirupsen/logrus"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// File descriptors are dumped and restored by drivers, one per kind of
// open file (files_*.go). The generic layer here gives every open file an
// id (shared open files are found with kcmp and dumped once), writes the
// fdinfo and files images, and on restore puts each fd at its number.

// fdDriver dumps and restores one kind of open file.
type fdDriver interface {
	// Type is the fd type of the images this driver writes and reads.
	Type() pb.FdTypes
	// Match reports whether the open file is of this driver's kind.
	Match(f *openFd) bool
	// Dump describes the open file as a file_entry with the given id
	// (Type and Id are filled in by the caller). It is called once per
	// open file, for the first fd found to hold it. Extra images (pipe
	// data, socket queues...) go through c.
	Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error)
	// Restore opens the file inside the task with injected syscalls on r
	// and returns its fd there. It may open the files of other ids at
	// the same time (the other end of a pipe) and hand them over with
	// c.Provide.
	Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error)
}

var fdDrivers []fdDriver

// registerFdDriver adds a driver; drivers registered earlier are asked
// first, so a narrow kind (a terminal) registers before a broad one (any
// character device).
func registerFdDriver(d fdDriver) { fdDrivers = append(fdDrivers, d) }

func driverFor(t pb.FdTypes) fdDriver {
	for _, d := range fdDrivers {
		if d.Type() == t {
			return d
		}
	}
	return nil
}

// openFd is one fd of a dumped task, as procfs shows it.
type openFd struct {
	Pid   int // host pid of the task
	Fd    int
	Link  string // readlink /proc/PID/fd/FD
	Stat  unix.Stat_t
	Info  *procfs.FdInfo
	Flags uint32 // file status flags, O_CLOEXEC removed

	local *os.File
}

// Mode is the file type bits of the fd's inode.
func (f *openFd) Mode() uint32 { return f.Stat.Mode & unix.S_IFMT }

// Local returns a duplicate of the fd in our own process (pidfd_getfd),
// for drivers that must look at the file itself (queued data, socket
// options). The duplicate shares the open file: reading from it consumes
// the task's data. It is closed when the dump ends.
func (f *openFd) Local() (*os.File, error) {
	if f.local != nil {
		return f.local, nil
	}
	l, err := takeFd(f.Pid, f.Fd, f.Link)
	if err != nil {
		return nil, err
	}
	f.local = l
	return l, nil
}

// takeFd returns a duplicate of fd of process pid in our own process
// (pidfd_getfd), named name.
func takeFd(pid, fd int, name string) (*os.File, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pfd)
	l, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd fd %d of pid %d: %w", fd, pid, os.NewSyscallError("pidfd_getfd", err))
	}
	return os.NewFile(uintptr(l), name), nil
}

func (f *openFd) close() {
	if f.local != nil {
		_ = f.local.Close()
		f.local = nil
	}
}

// fdDumpCtx is what drivers see of a dump.
type fdDumpCtx struct {
	// pids are the host pids of every live task of the dumped tree.
	pids  []int
	dir   *image.Dir
	extra map[string]*image.Writer
	ft    *fileTable
}

// Extra returns the writer of an image shared by all files of a kind
// (pipes-data.img...), created on first use.
func (c *fdDumpCtx) Extra(name string, k image.Kind) (*image.Writer, error) {
	if w, ok := c.extra[name]; ok {
		return w, nil
	}
	w, err := c.dir.NewWriter(name, k)
	if err != nil {
		return nil, err
	}
	c.extra[name] = w
	return w, nil
}

// File returns the id of another file the driver needs described (an
// epoll target, a socket's peer) if it is known.
func (c *fdDumpCtx) closeExtra() error {
	var first error
	names := make([]string, 0, len(c.extra))
	for n := range c.extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := c.extra[n].Close(); err != nil && first == nil {
			first = err
		}
	}
	c.extra = map[string]*image.Writer{}
	return first
}

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
	ctx     *fdDumpCtx
	log     *logrus.Entry // may be nil
}

type fdRef struct {
	pid, fd int
	id      uint32
}

// KCMP_FILE from include/uapi/linux/kcmp.h.
const kcmpFile = 0

func newFileTable(dir *image.Dir) *fileTable {
	ft := &fileTable{next: 1, byKey: map[string]uint32{}, byGen: map[string][]fdRef{}}
	ft.ctx = &fdDumpCtx{dir: dir, extra: map[string]*image.Writer{}, ft: ft}
	return ft
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

// dumpFds describes every fd of pid. It fails on the first fd of a kind
// crhook cannot dump, before anything in the task is changed.
// readFd is what /proc says of one fd (readOpenFd), read ahead of its
// dump, or the error reading it.
type readFd struct {
	fd  int
	f   *openFd
	err error
}

// readFds lists pid's fds and reads what /proc says of each, up to the
// first it cannot read.
func readFds(pid int) ([]readFd, error) {
	fds, err := procfs.Fds(pid)
	if err != nil {
		return nil, err
	}
	out := make([]readFd, 0, len(fds))
	for _, fd := range fds {
		f, err := readOpenFd(pid, fd)
		out = append(out, readFd{fd, f, err})
		if err != nil {
			break
		}
	}
	return out, nil
}

// gatherFds runs readFds for each of pids, on one worker per CPU (at
// most 4): the tasks are stopped, and an fd costs a readlink, a stat and
// an fdinfo read (a tree of 200 spent some 50 ms on them, one after the
// other). The dumps (dumpRead) then go in order, one at a time.
func gatherFds(pids []int) ([][]readFd, []error) {
	fds := make([][]readFd, len(pids))
	errs := parallel(len(pids), func(i int) error {
		var err error
		fds[i], err = readFds(pids[i])
		return err
	})
	return fds, errs
}

// dumpRead describes the fds of pid that readFds read, in order. It
// fails on the first fd of a kind crhook cannot dump, before anything in
// the task is changed.
func (ft *fileTable) dumpRead(pid int, fds []readFd) ([]*pb.FdinfoEntry, error) {
	var out []*pb.FdinfoEntry
	for _, rf := range fds {
		err := rf.err
		var e *pb.FdinfoEntry
		if err == nil {
			e, err = ft.dumpOpen(rf.f)
		}
		if err != nil {
			// Nothing of an fd we could not resolve is logged but its
			// number and an explicit marker.
			if ft.log != nil {
				ft.log.WithFields(logrus.Fields{"pid": pid, "fd": rf.fd, "file": "<invalid>"}).Debug("fd not dumped")
			}
			return nil, fmt.Errorf("fd %d: %w", rf.fd, err)
		}
		if ft.log != nil && ft.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			ft.log.WithFields(logrus.Fields{"pid": pid, "fd": rf.fd, "type": e.GetType().String(), "id": e.GetId()}).Debug("fd")
		}
		out = append(out, e)
	}
	return out, nil
}

// readOpenFd reads what /proc says of pid's fd: its link, the stat of
// its file, its fdinfo.
func readOpenFd(pid, fd int) (*openFd, error) {
	p := procfs.Path(pid, "fd/"+strconv.Itoa(fd))
	f := &openFd{Pid: pid, Fd: fd}
	var err error
	if f.Link, err = os.Readlink(p); err != nil {
		return nil, err
	}
	if err := unix.Stat(p, &f.Stat); err != nil {
		return nil, os.NewSyscallError("stat", err)
	}
	if f.Info, err = procfs.ReadFdInfo(pid, fd); err != nil {
		return nil, err
	}
	return f, nil
}

// dumpOpen dumps the fd f describes (readOpenFd): its file once, by the
// first fd found holding it.
func (ft *fileTable) dumpOpen(f *openFd) (*pb.FdinfoEntry, error) {
	defer f.close()
	pid, fd := f.Pid, f.Fd
	fdFlags := uint32(0)
	if f.Info.Flags&unix.O_CLOEXEC != 0 {
		fdFlags = unix.FD_CLOEXEC
	}
	f.Flags = f.Info.Flags &^ unix.O_CLOEXEC

	var drv fdDriver
	for _, d := range fdDrivers {
		if d.Match(f) {
			drv = d
			break
		}
	}
	if drv == nil {
		if fd <= 2 {
			return ft.externalStdio(f, fdFlags)
		}
		return nil, fmt.Errorf("pid %d fd %d is %s (%s): %w", pid, fd, kindName(&f.Stat, f.Link), f.Link, ErrNotSupported)
	}

	// Shared open file? Same cheap identity, then kcmp.
	gen := fmt.Sprintf("%d:%d:%d:%d:%o", drv.Type(), f.Stat.Dev, f.Stat.Ino, f.Info.Pos, f.Flags)
	known, at, err := ft.find(gen, pid, fd)
	if err != nil {
		return nil, err
	}
	if at < 0 {
		return fdinfo(known, fdFlags, drv.Type(), fd), nil
	}
	id := ft.newID()
	e, err := drv.Dump(ft.ctx, f, id)
	if err != nil {
		if fd <= 2 && isNotSupported(err) {
			return ft.externalStdio(f, fdFlags)
		}
		return nil, fmt.Errorf("pid %d fd %d (%s): %w", pid, fd, f.Link, err)
	}
	e.Type = drv.Type().Enum()
	e.Id = proto.Uint32(id)
	ft.entries = append(ft.entries, e)
	ft.insert(gen, at, fdRef{pid: pid, fd: fd, id: id})
	return fdinfo(id, fdFlags, drv.Type(), fd), nil
}

// find looks (pid, fd) up among the open files already seen with the same
// genid. The files of one genid are kept in the order kcmp(KCMP_FILE)
// gives them (the kernel's order of file objects), so a lookup is a binary
// search of kcmp calls: equal gives the known file's id; otherwise find
// returns where a new file goes (at >= 0).
func (ft *fileTable) find(gen string, pid, fd int) (id uint32, at int, err error) {
	refs := ft.byGen[gen]
	lo, hi := 0, len(refs)
	for lo < hi {
		mid := (lo + hi) / 2
		r, err := kcmp(refs[mid].pid, pid, kcmpFile, uintptr(refs[mid].fd), uintptr(fd))
		if err != nil {
			return 0, 0, fmt.Errorf("compare fd %d of pid %d with fd %d of pid %d: %w", refs[mid].fd, refs[mid].pid, fd, pid, err)
		}
		switch r {
		case 0:
			return refs[mid].id, -1, nil
		case 1: // the known file orders before this one
			lo = mid + 1
		case 2:
			hi = mid
		default:
			return 0, 0, fmt.Errorf("kcmp cannot order fd %d of pid %d", fd, pid)
		}
	}
	return 0, lo, nil
}

func (ft *fileTable) insert(gen string, at int, ref fdRef) {
	refs := ft.byGen[gen]
	refs = append(refs, fdRef{})
	copy(refs[at+1:], refs[at:])
	refs[at] = ref
	ft.byGen[gen] = refs
}

func fdinfo(id, fdFlags uint32, t pb.FdTypes, fd int) *pb.FdinfoEntry {
	return &pb.FdinfoEntry{Id: proto.Uint32(id), Flags: proto.Uint32(fdFlags), Type: t.Enum(), Fd: proto.Uint32(uint32(fd))}
}

// externalStdio records a standard stream crhook does not rebuild (a
// terminal, or a pipe or socket to the outside): the restorer's own
// stream takes its place.
func (ft *fileTable) externalStdio(f *openFd, fdFlags uint32) (*pb.FdinfoEntry, error) {
	// The same outside file at several fds or in several tasks (a
	// shell's children share its terminal) is one external file.
	gen := fmt.Sprintf("ext:%d:%d", f.Stat.Dev, f.Stat.Ino)
	known, at, err := ft.find(gen, f.Pid, f.Fd)
	if err != nil {
		return nil, err
	}
	if at < 0 {
		return fdinfo(known, fdFlags, pb.FdTypes_EXT, f.Fd), nil
	}
	id := ft.newID()
	ft.insert(gen, at, fdRef{pid: f.Pid, fd: f.Fd, id: id})
	ft.entries = append(ft.entries, &pb.FileEntry{
		Type: pb.FdTypes_EXT.Enum(),
		Id:   proto.Uint32(id),
		Ext:  &pb.ExtFileEntry{Id: proto.Uint32(id), Fown: zeroFown()},
	})
	ft.stdio = append(ft.stdio, &pb.CrhookStdioEntry{
		Fd:     proto.Uint32(uint32(f.Fd)),
		Kind:   stdioKind(&f.Stat).Enum(),
		FileId: proto.Uint32(id),
		Ino:    proto.Uint64(f.Stat.Ino),
		Path:   proto.String(f.Link),
	})
	return fdinfo(id, fdFlags, pb.FdTypes_EXT, f.Fd), nil
}

func zeroFown() *pb.FownEntry {
	return &pb.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)}
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
		return "a terminal"
	case st.Mode&unix.S_IFMT == unix.S_IFIFO:
		return "a pipe"
	case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
		return "a socket"
	case strings.HasPrefix(link, "anon_inode:"):
		return "an " + strings.TrimPrefix(link, "anon_inode:")
	}
	return "a file of mode " + strconv.FormatUint(uint64(st.Mode), 8)
}

// pathFile returns the id of a file named by path (executable, cwd,
// root), created once per path and flags. The path is the task's view
// (inside its container); statPath reaches the same file from here, a
// /proc/PID link.
func (ft *fileTable) pathFile(path, statPath string, flags uint32) (uint32, error) {
	key := fmt.Sprintf("%s\x00%o", path, flags)
	if id, ok := ft.byKey[key]; ok {
		return id, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(statPath, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: statPath, Err: err}
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

// fdRestoreCtx is what drivers see of a restore.
type fdRestoreCtx struct {
	s        *imageSet
	ti       *taskImage
	provided map[uint32]uint64 // file id -> fd in the task, not yet placed
	deferred []func() error    // run once every fd of the task is placed
}

// Files returns every file entry of the image (to find a pipe's other
// end, a socket's peer).
func (c *fdRestoreCtx) Files() map[uint32]*pb.FileEntry { return c.s.files }

// Provide hands over an fd the driver opened for another file id.
func (c *fdRestoreCtx) Provide(id uint32, fd uint64) { c.provided[id] = fd }

// Dir is the image directory, for extra images.
func (c *fdRestoreCtx) Dir() *image.Dir { return c.s.dir }

// Defer runs f once every fd of the task is at its number, in the order
// of the calls: an epoll registers its targets then, whatever their fd
// numbers.
func (c *fdRestoreCtx) Defer(f func() error) { c.deferred = append(c.deferred, f) }

// restoreFds puts every fd of t's image in place. On entry the task holds
// what it inherited from its parent (t.table; for the root, the
// restorer's standard streams at 0-2). An fd already holding the right
// file is kept; otherwise the file is taken from another fd of the task,
// fetched from another restored task with pidfd_getfd, or opened by its
// driver.
//
// Files are opened at any free number, moved above every number in use,
// and only then dup3'd into place, so that placing one fd never clobbers
// a file that is still needed. What the task holds beyond its image is
// closed when it is finished, after every other task got what it needed
// from it.
func (rs *restorer) restoreFds(t *rtask) error {
	r, s, ti := t.r, rs.s, t.ti
	fds := append([]*pb.FdinfoEntry{}, ti.fds...)
	sort.Slice(fds, func(i, j int) bool { return fds[i].GetFd() < fds[j].GetFd() })
	base := uint64(3)
	wantAt := map[uint32]uint32{}
	for _, e := range fds {
		wantAt[e.GetFd()] = e.GetId()
		base = max(base, uint64(e.GetFd())+1)
	}
	inherited := t.table
	for fd := range inherited {
		base = max(base, uint64(fd)+1)
	}
	needed := map[uint32]bool{}
	for _, e := range fds {
		if id, ok := inherited[e.GetFd()]; !ok || id != e.GetId() {
			needed[e.GetId()] = true
		}
	}
	lift := func(fd uint64) (uint64, error) {
		if fd >= base {
			return fd, nil
		}
		hi, err := r.call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, base)
		if err != nil {
			return 0, err
		}
		if _, err := r.call("close", unix.SYS_CLOSE, fd); err != nil {
			return 0, err
		}
		return hi, nil
	}
	// open: file id -> an fd of this task holding it that no placement
	// will overwrite (kept in place, or above base).
	open := map[uint32]uint64{}
	inh := make([]uint32, 0, len(inherited))
	for fd := range inherited {
		inh = append(inh, fd)
	}
	sort.Slice(inh, func(i, j int) bool { return inh[i] < inh[j] })
	for _, fd := range inh {
		id := inherited[fd]
		if want, ok := wantAt[fd]; ok && want == id {
			if _, have := open[id]; !have {
				open[id] = uint64(fd)
			}
			continue
		}
		if !needed[id] {
			continue
		}
		if _, have := open[id]; have {
			continue
		}
		hi, err := r.call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, uint64(fd), unix.F_DUPFD_CLOEXEC, base)
		if err != nil {
			return err
		}
		open[id] = hi
	}

	c := &fdRestoreCtx{s: s, ti: ti, provided: map[uint32]uint64{}}
	inPlace := r.batch()
	for _, e := range fds {
		fd := uint64(e.GetFd())
		id := e.GetId()
		cloexec := e.GetFlags()&unix.FD_CLOEXEC != 0
		if inherited[e.GetFd()] == id {
			// In place already and never touched again: its flag
			// goes in one batch with the others (batch.go).
			v := uint64(0)
			if cloexec {
				v = unix.FD_CLOEXEC
			}
			inPlace.add("fcntl(F_SETFD)", unix.SYS_FCNTL, fd, unix.F_SETFD, v)
			continue
		}
		src, ok := open[id]
		if !ok {
			if _, held := rs.holders[id]; !held && e.GetType() == pb.FdTypes_EXT {
				// An outside stream no restored task holds (a `runc
				// exec` process's pipe): the restorer's own stream at
				// that number takes its place, as for the root.
				if sid, ok := rs.rootStream(e.GetFd()); ok {
					if sh, sheld := rs.holders[sid]; sheld && sh.task != t {
						rs.holders[id] = sh
					}
				}
			}
			if h, held := rs.holders[id]; held && h.task != t {
				got, err := rs.fetch(t, h)
				if err != nil {
					return fmt.Errorf("fd %d: %w", fd, err)
				}
				if src, err = lift(got); err != nil {
					return err
				}
			} else {
				if e.GetType() == pb.FdTypes_EXT {
					return fmt.Errorf("fd %d: external file %d is held by no restored task: %w", fd, id, ErrNotSupported)
				}
				f, known := s.files[id]
				if !known || f.GetType() != e.GetType() {
					return badImagef("fdinfo: fd %d names file %d of type %v, which files.img lacks", fd, id, e.GetType())
				}
				drv := driverFor(e.GetType())
				if drv == nil {
					return notSupportedf("fd %d of type %v", fd, e.GetType())
				}
				got, err := drv.Restore(c, r, f)
				if err != nil {
					return fmt.Errorf("fd %d: %w", fd, err)
				}
				if src, err = lift(got); err != nil {
					return err
				}
				for pid, pfd := range c.provided {
					if _, dup := open[pid]; dup {
						continue
					}
					if open[pid], err = lift(pfd); err != nil {
						return err
					}
				}
				clear(c.provided)
			}
			open[id] = src
		}
		if src == fd {
			if err := setCloexec(r, fd, cloexec); err != nil {
				return err
			}
			continue
		}
		if err := dupTo(r, src, fd, cloexec); err != nil {
			return err
		}
	}

	if _, err := inPlace.run(); err != nil {
		return err
	}
	for _, f := range c.deferred {
		if err := f(); err != nil {
			return err
		}
	}

	// What children inherit, and where other tasks find these files.
	table := map[uint32]uint32{}
	for fd, id := range inherited {
		if _, over := wantAt[fd]; !over {
			table[fd] = id
		}
	}
	for fd, id := range wantAt {
		table[fd] = id
		if _, held := rs.holders[id]; !held {
			rs.holders[id] = fdHolder{task: t, fd: fd}
		}
	}
	for id, fd := range open {
		table[uint32(fd)] = id
		if _, held := rs.holders[id]; !held {
			rs.holders[id] = fdHolder{task: t, fd: uint32(fd)}
		}
	}
	t.table = table
	return nil
}

// rootStream returns the file the root's fd (0-2) stands for when that
// is the restorer's own stream: an external one, or any in a container
// restore, where the root keeps the new container's stdio.
func (rs *restorer) rootStream(fd uint32) (uint32, bool) {
	if fd > 2 || len(rs.tasks) == 0 {
		return 0, false
	}
	for _, e := range rs.tasks[0].ti.fds {
		if e.GetFd() == fd && (e.GetType() == pb.FdTypes_EXT || rs.keepStdio) {
			return e.GetId(), true
		}
	}
	return 0, false
}

// fetch copies a file another restored task holds into t, with
// pidfd_getfd run by t itself.
func (rs *restorer) fetch(t *rtask, h fdHolder) (uint64, error) {
	pfd, err := t.r.call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(h.task.ti.pid), 0)
	if err != nil {
		return 0, err
	}
	fd, err := t.r.call(fmt.Sprintf("pidfd_getfd of fd %d of pid %d", h.fd, h.task.ti.pid), unix.SYS_PIDFD_GETFD, pfd, uint64(h.fd), 0)
	if _, cerr := t.r.call("close", unix.SYS_CLOSE, pfd); cerr != nil && err == nil {
		err = cerr
	}
	return fd, err
}

func dupTo(r *remote, src, dst uint64, cloexec bool) error {
	fl := uint64(0)
	if cloexec {
		fl = unix.O_CLOEXEC
	}
	_, err := r.call("dup3", unix.SYS_DUP3, src, dst, fl)
	return err
}

func setCloexec(r *remote, fd uint64, on bool) error {
	v := uint64(0)
	if on {
		v = unix.FD_CLOEXEC
	}
	_, err := r.call("fcntl(F_SETFD)", unix.SYS_FCNTL, fd, unix.F_SETFD, v)
	return err
}
