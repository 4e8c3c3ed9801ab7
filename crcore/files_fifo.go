//go:build linux && amd64

package crcore

import (
	"fmt"
	"math"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	pb "github.com/crhook/crhook/proto"
)

// fifoDriver handles named pipes, as CRIU does: a fifo_entry {id,
// pipe_id, regf_id} whose regf_id names a reg_file_entry (path and
// flags) of its own in files.img, and the queued data in fifo-data.img
// (FIFO_DATA, framed as PIPES_DATA), once per FIFO.
//
// Restore opens the path O_RDWR first (that open never blocks and keeps
// the FIFO alive while it is filled), then reopens it once for every open
// file of the image with that file's flags.
type fifoDriver struct{}

func init() { registerFdDriver(fifoDriver{}) }

func (fifoDriver) Type() pb.FdTypes { return pb.FdTypes_FIFO }

func (fifoDriver) Match(f *openFd) bool {
	return f.Mode() == unix.S_IFIFO && strings.HasPrefix(f.Link, "/")
}

const fifoDataImg = "fifo-data.img"

func (fifoDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	if strings.HasSuffix(f.Link, " (deleted)") {
		return nil, fmt.Errorf("%s: FIFO unlinked while open: %w", fileObjectName(f), ErrNotSupported)
	}
	if f.Stat.Ino > math.MaxUint32 {
		return nil, fmt.Errorf("%s: FIFO inode %d above 32 bits: %w", fileObjectName(f), f.Stat.Ino, ErrNotSupported)
	}
	pipeID := uint32(f.Stat.Ino)
	done := dumpedWhere(c, func(e *pb.FileEntry) bool {
		return e.GetType() == pb.FdTypes_FIFO && e.GetFifo().GetPipeId() == pipeID
	})
	if !done {
		if err := dumpPipeData(c, f, fifoDataImg, image.FifoData, pipeID); err != nil {
			return nil, err
		}
	}
	regID := c.ft.newID()
	c.ft.entries = append(c.ft.entries, &pb.FileEntry{
		Type: pb.FdTypes_REG.Enum(),
		Id:   proto.Uint32(regID),
		Reg:  regEntry(regID, f.Link, f.Flags, 0, &f.Stat),
	})
	return &pb.FileEntry{Fifo: &pb.FifoEntry{
		Id:     proto.Uint32(id),
		PipeId: proto.Uint32(pipeID),
		RegfId: proto.Uint32(regID),
	}}, nil
}

func (fifoDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	pipeID := e.GetFifo().GetPipeId()
	reg := func(f *pb.FileEntry) (*pb.RegFileEntry, error) {
		rf := c.Files()[f.GetFifo().GetRegfId()].GetReg()
		if rf == nil {
			return nil, badImagef("fifo %d: no reg file entry %d", f.GetId(), f.GetFifo().GetRegfId())
		}
		return rf, nil
	}
	own, err := reg(e)
	if err != nil {
		return 0, err
	}
	path := own.GetName()

	r.reset()
	p, err := r.cstring(path)
	if err != nil {
		return 0, err
	}
	hold, err := r.call("open "+path, unix.SYS_OPENAT, atFdcwd, p, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	lh, err := taskFd(r.pid(), hold)
	if err != nil {
		return 0, err
	}
	defer lh.Close()
	if err := unix.Fstat(int(lh.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return 0, fmt.Errorf("%s is no longer a FIFO (mode %o): %w", path, st.Mode, ErrNotSupported)
	}
	de, data, err := readPipeData(c, fifoDataImg, image.FifoData, pipeID)
	if err != nil {
		return 0, err
	}
	if err := fillPipe(lh, de, data); err != nil {
		return 0, fmt.Errorf("restore data of FIFO %s: %w", path, err)
	}

	var mine uint64
	found := false
	for _, end := range filesWhere(c, pb.FdTypes_FIFO, func(f *pb.FileEntry) bool { return f.GetFifo().GetPipeId() == pipeID }) {
		rf, err := reg(end)
		if err != nil {
			return 0, err
		}
		flags := rf.GetFlags()
		fd, err := reopenInTask(r, hold, flags&unix.O_ACCMODE|unix.O_NONBLOCK)
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
	if err := closeInTask(r, hold); err != nil {
		return 0, err
	}
	if !found {
		return 0, badImagef("file %d is not among the open files of its FIFO", e.GetId())
	}
	return mine, nil
}
