//go:build linux && amd64

package crcore

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/crhook/crhook/proto"
)

// signalfdDriver handles signalfd: the mask from fdinfo "sigmask" (hex),
// as CRIU's signalfd_entry. Signals pending for the task are the task's
// state, not the signalfd's, and are restored with it.
type signalfdDriver struct{}

func init() { registerFdDriver(signalfdDriver{}) }

func (signalfdDriver) Type() pb.FdTypes { return pb.FdTypes_SIGNALFD }

func (signalfdDriver) Match(f *openFd) bool { return f.Link == "anon_inode:[signalfd]" }

func (signalfdDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	mask, err := fdinfoUint(f, "sigmask", 16)
	if err != nil {
		return nil, err
	}
	return &pb.FileEntry{Sgfd: &pb.SignalfdEntry{
		Id:      proto.Uint32(id),
		Flags:   proto.Uint32(f.Flags),
		Fown:    zeroFown(),
		Sigmask: proto.Uint64(mask),
	}}, nil
}

func (signalfdDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	sf := e.GetSgfd()
	r.reset()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], sf.GetSigmask())
	addr, err := r.put(b[:])
	if err != nil {
		return 0, err
	}
	negOne := ^uint64(0)
	fd, err := r.call("signalfd4", unix.SYS_SIGNALFD4, negOne, addr, 8, unix.SFD_CLOEXEC)
	if err != nil {
		return 0, err
	}
	if err := setStatusFlags(r, fd, sf.GetFlags()); err != nil {
		return 0, err
	}
	return fd, nil
}
