//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	pb "github.com/crhook/crhook/proto"
)

// queueSignals queues again the signals of q in the restored thread r
// (tgid, tid as the task sees them): the process-wide queue with
// rt_sigqueueinfo, the thread's own with rt_tgsigqueueinfo, in their
// order, siginfo unchanged.
//
// Precondition: every signal blocked in every thread of the process, so
// that no injection lets the kernel dequeue what was just queued; the
// final masks are set from outside once nothing is injected any more.
//
// A task may queue any siginfo for itself: the kernel refuses a forged
// si_code >= 0 or SI_TKILL only when the target is another task
// (do_rt_sigqueueinfo, do_rt_tgsigqueueinfo), so kernel-made siginfos
// (SIGCHLD's CLD_*, a fault's, SI_KERNEL) and the sender's si_pid/si_uid
// of a kill/tgkill/sigqueue come back as they were. What is lost is the
// kernel's link between a queued signal and its source: a pending
// SI_TIMER signal is a plain siginfo that no longer belongs to its POSIX
// timer (its si_overrun is the dump's; the restored timer, armed anew,
// may queue a second one before it is taken).
func queueSignals(r *remote, tgid, tid int, q *pb.SignalQueueEntry, shared bool) error {
	for _, e := range q.GetSignals() {
		si := e.GetSiginfo()
		if len(si) != kabi.SizeofSiginfo {
			return fmt.Errorf("queued signal: siginfo of %d bytes, want %d: %w", len(si), kabi.SizeofSiginfo, ErrBadImage)
		}
		sig := siSigno(si)
		if sig <= 0 || sig > kabi.NSig {
			return fmt.Errorf("queued signal %d: %w", sig, ErrBadImage)
		}
		r.reset()
		p, err := r.put(si)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("rt_tgsigqueueinfo(%d, si_code %d)", sig, siCode(si))
		if shared {
			name = fmt.Sprintf("rt_sigqueueinfo(%d, si_code %d)", sig, siCode(si))
			_, err = r.call(name, unix.SYS_RT_SIGQUEUEINFO, uint64(tgid), uint64(sig), p)
		} else {
			_, err = r.call(name, unix.SYS_RT_TGSIGQUEUEINFO, uint64(tgid), uint64(tid), uint64(sig), p)
		}
		if errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("%w (RLIMIT_SIGPENDING reached)", err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
