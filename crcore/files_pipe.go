//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// pipeDriver handles anonymous pipes. A pipe is named by its inode
// (pipe_id); each end is a pipe_entry in files.img. The data queued in a
// pipe is copied at dump without being consumed (tee(2) into a pipe of
// ours) and written once per pipe to pipes-data.img, as CRIU does:
// pipe_data_entry {pipe_id, bytes, size = F_GETPIPE_SZ}, then the bytes.
//
// Restore makes the pipe with one pipe2 in the first task that needs an
// end of it, fills it, and hands every other end of the image (Provide)
// to the framework, which places those the task uses and keeps the rest
// for the tasks that fetch them. More than one open file per end (an end
// reopened through /proc) is reopened the same way.
//
// A pipe at fd 0-2 whose other end the task does not hold leads outside
// the dump: it is refused with ErrNotSupported, so that the framework
// records it as an external standard stream.
type pipeDriver struct{}

func init() { registerFdDriver(pipeDriver{}) }

func (pipeDriver) Type() pb.FdTypes { return pb.FdTypes_PIPE }

func (pipeDriver) Match(f *openFd) bool {
	return f.Mode() == unix.S_IFIFO && strings.HasPrefix(f.Link, "pipe:")
}

const pipesDataImg = "pipes-data.img"

// oLargefile is O_LARGEFILE as the kernel sets it in f_flags on x86_64
// (x/sys has 0 there: it is implied for 64-bit callers).
const oLargefile = 0o100000

func (pipeDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	if f.Stat.Ino > math.MaxUint32 {
		return nil, fmt.Errorf("%s: pipe inode %d above 32 bits: %w", fileObjectName(f), f.Stat.Ino, ErrNotSupported)
	}
	pipeID := uint32(f.Stat.Ino)
	if f.Fd <= 2 {
		inside, err := otherEndHeld(c, f)
		if err != nil {
			return nil, err
		}
		if !inside {
			return nil, fmt.Errorf("%s: the other end is outside the dumped task: %w", fileObjectName(f), ErrNotSupported)
		}
	}
	done := dumpedWhere(c, func(e *pb.FileEntry) bool {
		return e.GetType() == pb.FdTypes_PIPE && e.GetPipe().GetPipeId() == pipeID
	})
	if !done {
		if err := dumpPipeData(c, f, pipesDataImg, image.PipesData, pipeID); err != nil {
			return nil, err
		}
	}
	return &pb.FileEntry{Pipe: &pb.PipeEntry{
		Id:     proto.Uint32(id),
		PipeId: proto.Uint32(pipeID),
		Flags:  proto.Uint32(f.Flags),
		Fown:   zeroFown(),
	}}, nil
}

// otherEndHeld reports whether a task of the dumped tree can read from
// the pipe f writes to, or write to the pipe f reads from (a shell
// pipeline "a | b" has one end in each task).
func otherEndHeld(c *fdDumpCtx, f *openFd) (bool, error) {
	acc := f.Flags & unix.O_ACCMODE
	if acc == unix.O_RDWR {
		return true, nil
	}
	pids := c.pids
	if len(pids) == 0 {
		pids = []int{f.Pid}
	}
	for _, pid := range pids {
		fds, err := procfs.Fds(pid)
		if err != nil {
			return false, err
		}
		for _, fd := range fds {
			if pid == f.Pid && fd == f.Fd {
				continue
			}
			var st unix.Stat_t
			if err := unix.Stat(procfs.Path(pid, "fd/"+strconv.Itoa(fd)), &st); err != nil {
				continue // closed meanwhile: cannot happen in a stopped task
			}
			if st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Ino != f.Stat.Ino || st.Dev != f.Stat.Dev {
				continue
			}
			fi, err := procfs.ReadFdInfo(pid, fd)
			if err != nil {
				return false, err
			}
			if other := fi.Flags & unix.O_ACCMODE; other != acc {
				return true, nil
			}
		}
	}
	return false, nil
}

// dumpPipeData copies the data queued in the pipe or FIFO of f, without
// consuming it, into image name (PIPES_DATA or FIFO_DATA).
func dumpPipeData(c *fdDumpCtx, f *openFd, name string, k image.Kind, pipeID uint32) error {
	src, err := readablePipe(f)
	if err != nil {
		return err
	}
	if src != f.local {
		defer src.Close()
	}
	size, err := unix.FcntlInt(src.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", fileObjectName(f), os.NewSyscallError("fcntl(F_GETPIPE_SZ)", err))
	}
	queued, err := unix.IoctlGetInt(int(src.Fd()), unix.TIOCINQ) // FIONREAD
	if err != nil {
		return fmt.Errorf("%s: %w", fileObjectName(f), os.NewSyscallError("ioctl(FIONREAD)", err))
	}
	var data []byte
	if queued > 0 {
		if data, err = teePipe(src, size, queued); err != nil {
			return fmt.Errorf("copy data of %s: %w", fileObjectName(f), err)
		}
	}
	w, err := c.Extra(name, k)
	if err != nil {
		return err
	}
	if err := w.Write(&pb.PipeDataEntry{PipeId: proto.Uint32(pipeID), Bytes: proto.Uint32(uint32(len(data))), Size: proto.Uint32(uint32(size))}); err != nil {
		return err
	}
	return w.WriteRaw(data)
}

// readablePipe returns a file that reads the pipe of f: f's own local
// copy when f reads, else a new read-only open of the same pipe through
// /proc (the caller closes it). Opening it does not block: the task
// holds a writer.
func readablePipe(f *openFd) (*os.File, error) {
	if f.Flags&unix.O_ACCMODE != unix.O_WRONLY {
		return f.Local()
	}
	p := procfs.Path(f.Pid, "fd/"+strconv.Itoa(f.Fd))
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// teePipe duplicates the queued bytes of src into a pipe of ours as big
// as src (tee copies buffers, so it needs as many slots) and reads them
// from there: src keeps its data.
func teePipe(src *os.File, size, queued int) ([]byte, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	r, w := os.NewFile(uintptr(p[0]), "pipe"), os.NewFile(uintptr(p[1]), "pipe")
	defer r.Close()
	defer w.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, fmt.Errorf("size our pipe to %d bytes: %w", size, os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err))
	}
	var n int64
	for {
		var err error
		n, err = unix.Tee(int(src.Fd()), int(w.Fd()), queued, unix.SPLICE_F_NONBLOCK)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("tee", err)
		}
		break
	}
	// A second tee would copy the same bytes again: one call must get all.
	if n != int64(queued) {
		return nil, fmt.Errorf("tee copied %d of %d queued bytes", n, queued)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read teed data: %w", err)
	}
	return buf, nil
}

// readPipeData finds the data entry of pipeID in image name; a missing
// image or entry means an empty pipe of the default size.
func readPipeData(c *fdRestoreCtx, name string, k image.Kind, pipeID uint32) (*pb.PipeDataEntry, []byte, error) {
	rd, err := c.Dir().NewReader(name, k)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer rd.Close()
	for {
		e := &pb.PipeDataEntry{}
		err := rd.Read(e)
		if errors.Is(err, io.EOF) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if e.GetSize() != 0 && e.GetBytes() > e.GetSize() {
			return nil, nil, badImagef("%s: pipe %d holds %d bytes, more than its size %d", name, e.GetPipeId(), e.GetBytes(), e.GetSize())
		}
		data, err := rd.ReadRaw(int(e.GetBytes()))
		if err != nil {
			return nil, nil, err
		}
		if e.GetPipeId() == pipeID {
			return e, data, nil
		}
	}
}

// fillPipe sizes the pipe that w (a local copy of a non-blocking write
// end) writes to and queues data in it.
func fillPipe(w *os.File, e *pb.PipeDataEntry, data []byte) error {
	if e == nil {
		return nil
	}
	if sz := e.GetSize(); sz != 0 {
		if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, int(sz)); err != nil {
			return fmt.Errorf("set pipe size %d: %w", sz, os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err))
		}
	}
	return writeAllNonblock(w, data)
}

func (pipeDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	pipeID := e.GetPipe().GetPipeId()
	ends := filesWhere(c, pb.FdTypes_PIPE, func(f *pb.FileEntry) bool { return f.GetPipe().GetPipeId() == pipeID })

	fl := uint64(unix.O_CLOEXEC | unix.O_NONBLOCK)
	if e.GetPipe().GetFlags()&unix.O_DIRECT != 0 {
		fl |= unix.O_DIRECT
	}
	r.reset()
	arr, err := r.alloc(8)
	if err != nil {
		return 0, err
	}
	if _, err := r.call("pipe2", unix.SYS_PIPE2, arr, fl); err != nil {
		return 0, err
	}
	var b [8]byte
	if err := r.read(arr, b[:]); err != nil {
		return 0, err
	}
	rfd := uint64(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
	wfd := uint64(uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24)

	de, data, err := readPipeData(c, pipesDataImg, image.PipesData, pipeID)
	if err != nil {
		return 0, err
	}
	if de != nil {
		lw, err := taskFd(r.pid(), wfd)
		if err != nil {
			return 0, err
		}
		err = fillPipe(lw, de, data)
		_ = lw.Close()
		if err != nil {
			return 0, fmt.Errorf("restore data of pipe %d: %w", pipeID, err)
		}
	}
	return placeEnds(c, r, e, ends, rfd, wfd, func(f *pb.FileEntry) uint32 { return f.GetPipe().GetFlags() })
}

// placeEnds gives each open file of a pipe or FIFO an fd in the task:
// the first reader gets rfd, the first writer wfd, any other is reopened
// from those through /proc. It returns e's fd and Provides the others;
// rfd or wfd left unused are closed.
func placeEnds(c *fdRestoreCtx, r *remote, e *pb.FileEntry, ends []*pb.FileEntry, rfd, wfd uint64, flagsOf func(*pb.FileEntry) uint32) (uint64, error) {
	usedR, usedW := false, false
	var mine uint64
	found := false
	for _, end := range ends {
		flags := flagsOf(end)
		var fd uint64
		var err error
		// An end opened through /proc has O_LARGEFILE, which only
		// such an open gives: it is reopened, pipe2's ends are not.
		reopened := flags&oLargefile != 0
		switch acc := flags & unix.O_ACCMODE; {
		case acc == unix.O_RDONLY && !usedR && !reopened:
			fd, usedR = rfd, true
		case acc == unix.O_WRONLY && !usedW && !reopened:
			fd, usedW = wfd, true
		default:
			// O_NONBLOCK: a FIFO open must not wait; F_SETFL sets
			// the flags the image wants below.
			fd, err = reopenInTask(r, rfd, acc|unix.O_NONBLOCK)
		}
		if err != nil {
			return 0, err
		}
		if err := setStatusFlags(r, fd, flags); err != nil {
			return 0, err
		}
		if end.GetId() == e.GetId() {
			mine, found = fd, true
		} else {
			c.Provide(end.GetId(), fd)
		}
	}
	if !usedR {
		if err := closeInTask(r, rfd); err != nil {
			return 0, err
		}
	}
	if !usedW && wfd != rfd {
		if err := closeInTask(r, wfd); err != nil {
			return 0, err
		}
	}
	if !found {
		return 0, badImagef("file %d is not among the open files of its pipe", e.GetId())
	}
	return mine, nil
}
