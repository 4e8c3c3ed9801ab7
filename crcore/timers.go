//go:build linux && amd64

package crcore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// procTimer is one entry of /proc/PID/timers.
type procTimer struct {
	id       int32
	signo    int32
	value    uint64
	notify   int32 // SIGEV_*, with SIGEV_THREAD_ID for a thread target
	targetID int   // pid or tid, as the reader of /proc sees it
	clock    int32
}

// parseProcTimers reads the format of show_timer (kernel/time/posix-timers.c):
//
//	ID: 0
//	signal: 34/0000000000001234
//	notify: signal/tid.28436
//	ClockID: 1
func parseProcTimers(b []byte) ([]procTimer, error) {
	var out []procTimer
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		bad := func(err error) error { return fmt.Errorf("/proc timers: %q: %w", sc.Text(), err) }
		if k == "ID" {
			id, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, bad(err)
			}
			out = append(out, procTimer{id: int32(id)})
			continue
		}
		if len(out) == 0 {
			return nil, bad(errors.New("field before ID"))
		}
		t := &out[len(out)-1]
		switch k {
		case "signal":
			s, val, _ := strings.Cut(v, "/")
			n, err := strconv.ParseInt(s, 10, 32)
			if err != nil {
				return nil, bad(err)
			}
			p, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return nil, bad(err)
			}
			t.signo, t.value = int32(n), p
		case "notify":
			how, target, _ := strings.Cut(v, "/")
			switch how {
			case "signal":
				t.notify = kabi.SIGEV_SIGNAL
			case "none":
				t.notify = kabi.SIGEV_NONE
			case "thread":
				t.notify = kabi.SIGEV_THREAD
			default:
				return nil, bad(errors.New("unknown notify"))
			}
			kind, n, _ := strings.Cut(target, ".")
			if kind == "tid" {
				t.notify |= kabi.SIGEV_THREAD_ID
			}
			id, err := strconv.Atoi(n)
			if err != nil {
				return nil, bad(err)
			}
			t.targetID = id
		case "ClockID":
			c, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, bad(err)
			}
			t.clock = int32(c)
		}
	}
	return out, sc.Err()
}

// dumpTimers lists the POSIX timers of t and reads, from inside the
// task, each one's interval, remaining time and overrun.
func dumpTimers(t *dtask, r *remote) error {
	b, err := procfs.ReadFile(procfs.Path(t.pid, "timers"))
	if err != nil {
		return err
	}
	pts, err := parseProcTimers(b)
	if err != nil {
		return err
	}
	if len(pts) == 0 {
		return nil
	}
	out, err := r.alloc(kabi.SizeofItimerspec)
	if err != nil {
		return err
	}
	for _, pt := range pts {
		e := &pb.PosixTimerEntry{
			ItId:          proto.Uint32(uint32(pt.id)),
			ClockId:       proto.Uint32(uint32(pt.clock)),
			SiSigno:       proto.Uint32(uint32(pt.signo)),
			ItSigevNotify: proto.Uint32(uint32(pt.notify)),
			SivalPtr:      proto.Uint64(pt.value),
		}
		if pt.notify&kabi.SIGEV_THREAD_ID != 0 {
			var tid int
			for _, th := range t.threads {
				if th.tid == pt.targetID {
					tid = th.nsTid
				}
			}
			if tid == 0 {
				return fmt.Errorf("POSIX timer %d signals thread %d, not one of the process's", pt.id, pt.targetID)
			}
			e.NotifyThreadId = proto.Int32(int32(tid))
		}
		if _, err := r.call("timer_gettime", unix.SYS_TIMER_GETTIME, uint64(pt.id), out); err != nil {
			return err
		}
		var ib [kabi.SizeofItimerspec]byte
		if err := r.read(out, ib[:]); err != nil {
			return err
		}
		e.Isec = proto.Uint64(binary.LittleEndian.Uint64(ib[0:]))
		e.Insec = proto.Uint64(binary.LittleEndian.Uint64(ib[8:]))
		e.Vsec = proto.Uint64(binary.LittleEndian.Uint64(ib[16:]))
		e.Vnsec = proto.Uint64(binary.LittleEndian.Uint64(ib[24:]))
		ov, err := r.call("timer_getoverrun", unix.SYS_TIMER_GETOVERRUN, uint64(pt.id))
		if err != nil {
			return err
		}
		e.Overrun = proto.Uint32(uint32(ov))
		t.attrs.timers = append(t.attrs.timers, e)
	}
	return nil
}

// restoreTimers creates the POSIX timers of the image with their ids
// (prctl PR_TIMER_CREATE_RESTORE_IDS: timer_create then takes the id the
// timer_t it is given holds), sigevent and clock, and arms each with the
// time that remained and its interval.
//
// Lost: the overrun count of the last delivered expiry (timer_getoverrun
// reads 0 until the next one); a TIMER_ABSTIME timer comes back
// relative; a CLOCK_THREAD_CPUTIME_ID timer measures the leader's CPU
// time (/proc does not say which thread created it).
// Precondition: every thread exists (a SIGEV_THREAD_ID target must).
func restoreTimers(r *remote, ti *taskImage) error {
	ts := ti.core.GetTc().GetTimers().GetPosix()
	if len(ts) == 0 {
		return nil
	}
	if _, err := r.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_ON); err != nil {
		return fmt.Errorf("POSIX timers with their ids: %w", err)
	}
	for _, e := range ts {
		sev := kabi.Sigevent{
			Value:  e.GetSivalPtr(),
			Signo:  int32(e.GetSiSigno()),
			Notify: int32(e.GetItSigevNotify()),
		}
		if sev.Notify&kabi.SIGEV_THREAD_ID != 0 {
			sev.ThreadID = e.GetNotifyThreadId()
		}
		var b bytes.Buffer
		putLE(&b, sev)
		putLE(&b, [2]int32{int32(e.GetItId()), 0})
		putLE(&b, kabi.Itimerspec{
			IntervalSec: int64(e.GetIsec()), IntervalNsec: int64(e.GetInsec()),
			ValueSec: int64(e.GetVsec()), ValueNsec: int64(e.GetVnsec()),
		})
		r.reset()
		p, err := r.put(b.Bytes())
		if err != nil {
			return err
		}
		idp := p + kabi.SizeofSigevent
		name := fmt.Sprintf("timer_create(id %d, clock %d)", e.GetItId(), int32(e.GetClockId()))
		if _, err := r.call(name, unix.SYS_TIMER_CREATE, uint64(int64(int32(e.GetClockId()))), p, idp); err != nil {
			return err
		}
		var got [4]byte
		if err := r.read(idp, got[:]); err != nil {
			return err
		}
		if id := binary.LittleEndian.Uint32(got[:]); id != e.GetItId() {
			return fmt.Errorf("%s: got id %d", name, id)
		}
		if e.GetVsec() == 0 && e.GetVnsec() == 0 {
			continue
		}
		if _, err := r.call(fmt.Sprintf("timer_settime(id %d)", e.GetItId()), unix.SYS_TIMER_SETTIME, uint64(e.GetItId()), 0, idp+8, 0); err != nil {
			return err
		}
	}
	_, err := r.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_OFF)
	return err
}
