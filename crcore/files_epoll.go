//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// epollDriver handles epoll instances, as CRIU's eventpoll_file_entry
// with its targets inline: for each, from fdinfo, the fd number it was
// added under, its events and data. A target is restored by that fd
// number, so the dump checks (kcmp KCMP_EPOLL_TFD) that the number still
// holds the registered file in the task; a target closed or replaced
// since is refused with ErrNotSupported.
//
// Restore creates the instance and registers the targets with
// EPOLL_CTL_ADD once every fd of the task is placed (fdRestoreCtx.Defer),
// whatever the order of their numbers. Readiness is recomputed by the
// kernel; a pending edge of an EPOLLET target is lost.
//
// Process trees: the numbers are those of the task whose fd was dumped
// first; the task that restores the instance must be that one.
type epollDriver struct{}

func init() { registerFdDriver(epollDriver{}) }

func (epollDriver) Type() pb.FdTypes { return pb.FdTypes_EVENTPOLL }

func (epollDriver) Match(f *openFd) bool { return f.Link == "anon_inode:[eventpoll]" }

func (epollDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	e := &pb.EventpollFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(f.Flags), Fown: zeroFown()}
	for _, l := range f.Info.Lines {
		if !strings.HasPrefix(l, "tfd:") {
			continue
		}
		t, err := epollTarget(f, id, fdinfoFields(l))
		if err != nil {
			return nil, fmt.Errorf("epoll %s: %w", fileObjectName(f), err)
		}
		e.Tfd = append(e.Tfd, t)
	}
	return &pb.FileEntry{Epfd: e}, nil
}

func epollTarget(f *openFd, id uint32, m map[string]string) (*pb.EventpollTfdEntry, error) {
	tfd, err := strconv.ParseUint(m["tfd"], 10, 31)
	if err != nil {
		return nil, fmt.Errorf("target fd %q: %w", m["tfd"], err)
	}
	var v [4]uint64
	for i, k := range []string{"events", "data", "ino", "sdev"} {
		if v[i], err = hexField(m, k); err != nil {
			return nil, fmt.Errorf("target fd %d: %w", tfd, err)
		}
	}
	pos, _ := strconv.ParseInt(m["pos"], 10, 64)
	same, err := kcmpEpollTfd(f.Pid, int(tfd), f.Fd, int(tfd))
	if errors.Is(err, unix.EBADF) || errors.Is(err, unix.ENOENT) {
		same, err = false, nil
	}
	if err != nil {
		return nil, fmt.Errorf("target fd %d: %w", tfd, err)
	}
	if !same {
		return nil, fmt.Errorf("target fd %d was closed or replaced since it was added (%s): %w", tfd, targetName(f.Pid, int(tfd)), ErrNotSupported)
	}
	return &pb.EventpollTfdEntry{
		Id:     proto.Uint32(id),
		Tfd:    proto.Uint32(uint32(tfd)),
		Events: proto.Uint32(uint32(v[0])),
		Data:   proto.Uint64(v[1]),
		Dev:    proto.Uint32(uint32(v[3])),
		Inode:  proto.Uint64(v[2]),
		Pos:    proto.Uint64(uint64(pos)),
	}, nil
}

func targetName(pid, fd int) string {
	l, err := readlinkFd(pid, fd)
	if err != nil {
		return "fd now closed"
	}
	return "fd now " + l
}

func readlinkFd(pid, fd int) (string, error) {
	return os.Readlink(procfs.Path(pid, "fd/"+strconv.Itoa(fd)))
}

func (epollDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	ep := e.GetEpfd()
	fd, err := r.call("epoll_create1", unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, err
	}
	if err := setStatusFlags(r, fd, ep.GetFlags()); err != nil {
		return 0, err
	}
	if len(ep.GetTfd()) == 0 {
		return fd, nil
	}
	id := e.GetId()
	c.Defer(func() error {
		// The instance is at its numbers now; any of them will do.
		at, here := ^uint64(0), map[uint32]bool{}
		for _, fi := range c.ti.fds {
			here[fi.GetFd()] = true
			if fi.GetId() == id {
				at = min(at, uint64(fi.GetFd()))
			}
		}
		if at == ^uint64(0) {
			return fmt.Errorf("epoll %d is at no fd of pid %d: %w", id, c.ti.pid, ErrNotSupported)
		}
		for _, t := range ep.GetTfd() {
			if !here[t.GetTfd()] {
				return badImagef("epoll at fd %d: target fd %d is not in the fd table of pid %d", at, t.GetTfd(), c.ti.pid)
			}
			// struct epoll_event is packed on x86_64: events, data.
			var b [12]byte
			binary.LittleEndian.PutUint32(b[0:], t.GetEvents())
			binary.LittleEndian.PutUint64(b[4:], t.GetData())
			r.reset()
			addr, err := r.put(b[:])
			if err != nil {
				return err
			}
			if _, err := r.call(fmt.Sprintf("epoll_ctl(ADD) fd %d to epoll at fd %d", t.GetTfd(), at), unix.SYS_EPOLL_CTL, at, unix.EPOLL_CTL_ADD, uint64(t.GetTfd()), addr); err != nil {
				return err
			}
		}
		return nil
	})
	return fd, nil
}
