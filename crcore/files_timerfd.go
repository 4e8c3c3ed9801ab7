//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/kabi"
	pb "github.com/crhook/crhook/proto"
)

// timerfdDriver handles timerfd, as CRIU's timerfd_entry: clock, the
// settime flags, the expirations not yet read (ticks), and from fdinfo
// the time remaining (it_value, relative however the timer was set) and
// the interval.
//
// Restore arms the timer with the time remaining at dump, so the time
// between dump and restore does not count, and sets the pending ticks
// with TFD_IOC_SET_TICKS. A timer set with TFD_TIMER_ABSTIME is armed
// with an absolute time (now + remaining) and its flags, so that
// TFD_TIMER_CANCEL_ON_SET keeps working.
type timerfdDriver struct{}

func init() { registerFdDriver(timerfdDriver{}) }

func (timerfdDriver) Type() pb.FdTypes { return pb.FdTypes_TIMERFD }

func (timerfdDriver) Match(f *openFd) bool { return f.Link == "anon_inode:[timerfd]" }

// parseTimespec parses fdinfo's "(sec, nsec)".
func parseTimespec(v string) (sec, nsec uint64, err error) {
	v = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "("), ")")
	s, n, ok := strings.Cut(v, ",")
	if !ok {
		return 0, 0, fmt.Errorf("timespec %q", v)
	}
	if sec, err = strconv.ParseUint(strings.TrimSpace(s), 10, 64); err != nil {
		return 0, 0, err
	}
	if nsec, err = strconv.ParseUint(strings.TrimSpace(n), 10, 64); err != nil {
		return 0, 0, err
	}
	if nsec >= 1e9 {
		return 0, 0, fmt.Errorf("timespec %q: nanoseconds out of range", v)
	}
	return sec, nsec, nil
}

func (timerfdDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	clock, err := fdinfoUint(f, "clockid", 10)
	if err != nil {
		return nil, err
	}
	ticks, err := fdinfoUint(f, "ticks", 10)
	if err != nil {
		return nil, err
	}
	stFlags, err := fdinfoUint(f, "settime flags", 8)
	if err != nil {
		return nil, err
	}
	var ts [4]uint64
	for i, k := range []string{"it_value", "it_interval"} {
		v, ok := fdinfoValue(f.Info, k)
		if !ok {
			return nil, fmt.Errorf("fdinfo of %s: no %s line: %w", fileObjectName(f), k, ErrNotSupported)
		}
		if ts[2*i], ts[2*i+1], err = parseTimespec(v); err != nil {
			return nil, fmt.Errorf("fdinfo of %s: %s: %w", fileObjectName(f), k, err)
		}
	}
	return &pb.FileEntry{Tfd: &pb.TimerfdEntry{
		Id:           proto.Uint32(id),
		Flags:        proto.Uint32(f.Flags),
		Fown:         zeroFown(),
		Clockid:      proto.Uint32(uint32(clock)),
		Ticks:        proto.Uint64(ticks),
		SettimeFlags: proto.Uint32(uint32(stFlags)),
		Vsec:         proto.Uint64(ts[0]),
		Vnsec:        proto.Uint64(ts[1]),
		Isec:         proto.Uint64(ts[2]),
		Insec:        proto.Uint64(ts[3]),
	}}, nil
}

func (timerfdDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	t := e.GetTfd()
	if t.GetVnsec() >= 1e9 || t.GetInsec() >= 1e9 || int64(t.GetVsec()) < 0 || int64(t.GetIsec()) < 0 {
		return 0, badImagef("timerfd %d: time out of range", t.GetId())
	}
	fd, err := r.call("timerfd_create", unix.SYS_TIMERFD_CREATE, uint64(t.GetClockid()), unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		return 0, err
	}
	if t.GetVsec() != 0 || t.GetVnsec() != 0 {
		vsec, vnsec := t.GetVsec(), t.GetVnsec()
		flags := uint64(0)
		if t.GetSettimeFlags()&unix.TFD_TIMER_ABSTIME != 0 {
			var now unix.Timespec
			if err := unix.ClockGettime(int32(t.GetClockid()), &now); err != nil {
				return 0, fmt.Errorf("read clock %d: %w", t.GetClockid(), err)
			}
			vsec += uint64(now.Sec)
			vnsec += uint64(now.Nsec)
			if vnsec >= 1e9 {
				vsec, vnsec = vsec+1, vnsec-1e9
			}
			flags = uint64(t.GetSettimeFlags()) & (unix.TFD_TIMER_ABSTIME | unix.TFD_TIMER_CANCEL_ON_SET)
		}
		// struct itimerspec: it_interval, then it_value.
		var b [32]byte
		binary.LittleEndian.PutUint64(b[0:], t.GetIsec())
		binary.LittleEndian.PutUint64(b[8:], t.GetInsec())
		binary.LittleEndian.PutUint64(b[16:], vsec)
		binary.LittleEndian.PutUint64(b[24:], vnsec)
		r.reset()
		addr, err := r.put(b[:])
		if err != nil {
			return 0, err
		}
		if _, err := r.call("timerfd_settime", unix.SYS_TIMERFD_SETTIME, fd, flags, addr, 0); err != nil {
			return 0, err
		}
	}
	if n := t.GetTicks(); n != 0 {
		r.reset()
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		addr, err := r.put(b[:])
		if err != nil {
			return 0, err
		}
		if _, err := r.call("ioctl(TFD_IOC_SET_TICKS)", unix.SYS_IOCTL, fd, kabi.TFD_IOC_SET_TICKS, addr); err != nil {
			return 0, fmt.Errorf("restore %d pending expirations of a timerfd (needs CONFIG_CHECKPOINT_RESTORE): %w", n, err)
		}
	}
	if err := setStatusFlags(r, fd, t.GetFlags()); err != nil {
		return 0, err
	}
	return fd, nil
}
