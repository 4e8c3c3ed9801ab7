//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/crhook/crhook/proto"
)

// eventfdDriver handles eventfd: the counter from fdinfo "eventfd-count"
// (hex), the semaphore mode from "eventfd-semaphore".
//
// Image: eventfd_file_entry as CRIU writes it, except that EFD_SEMAPHORE
// (bit 0, which is O_WRONLY and so never set in an eventfd's f_flags,
// always O_RDWR) is kept in flags: CRIU's schema has no field for it.
type eventfdDriver struct{}

func init() { registerFdDriver(eventfdDriver{}) }

func (eventfdDriver) Type() pb.FdTypes { return pb.FdTypes_EVENTFD }

func (eventfdDriver) Match(f *openFd) bool { return f.Link == "anon_inode:[eventfd]" }

func (eventfdDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	count, err := fdinfoUint(f, "eventfd-count", 16)
	if err != nil {
		return nil, err
	}
	flags := f.Flags &^ unix.EFD_SEMAPHORE
	if v, ok := fdinfoValue(f.Info, "eventfd-semaphore"); ok && v == "1" {
		flags |= unix.EFD_SEMAPHORE
	}
	return &pb.FileEntry{Efd: &pb.EventfdFileEntry{
		Id:      proto.Uint32(id),
		Flags:   proto.Uint32(flags),
		Fown:    zeroFown(),
		Counter: proto.Uint64(count),
	}}, nil
}

func (eventfdDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	ef := e.GetEfd()
	if ef.GetCounter() == ^uint64(0) {
		return 0, badImagef("eventfd %d: counter %#x above the maximum", ef.GetId(), ef.GetCounter())
	}
	fl := uint64(unix.EFD_CLOEXEC | unix.EFD_NONBLOCK)
	if ef.GetFlags()&unix.EFD_SEMAPHORE != 0 {
		fl |= unix.EFD_SEMAPHORE
	}
	// eventfd2 takes a 32-bit initial value: the counter is written.
	fd, err := r.call("eventfd2", unix.SYS_EVENTFD2, 0, fl)
	if err != nil {
		return 0, err
	}
	local, err := taskFd(r.pid(), fd)
	if err != nil {
		return 0, err
	}
	defer local.Close()
	if n := ef.GetCounter(); n != 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		if err := writeAllNonblock(local, b[:]); err != nil {
			return 0, fmt.Errorf("set eventfd counter: %w", err)
		}
	}
	if err := setLocalFlags(local, ef.GetFlags()); err != nil {
		return 0, err
	}
	return fd, nil
}
