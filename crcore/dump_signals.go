//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	pb "github.com/crhook/crhook/proto"
)

// dumpPending reads the signals queued for t: each thread's own queue and
// the process-wide one, with their whole siginfo, oldest first. It runs
// before any syscall is injected: an injection lets the kernel dequeue an
// unblocked signal (the tracer then holds it, without its siginfo).
func dumpPending(t *dtask) error {
	for i, th := range t.threads {
		q, err := th.t.PeekSiginfo(false)
		if err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
		th.attrs.pending = q
		if i == 0 {
			if t.attrs.pending, err = th.t.PeekSiginfo(true); err != nil {
				return err
			}
		}
	}
	return nil
}

func signalQueue(q [][kabi.SizeofSiginfo]byte) *pb.SignalQueueEntry {
	if len(q) == 0 {
		return nil
	}
	e := &pb.SignalQueueEntry{}
	for _, si := range q {
		e.Signals = append(e.Signals, &pb.SiginfoEntry{Siginfo: append([]byte(nil), si[:]...)})
	}
	return e
}

// siginfo fields (include/uapi/asm-generic/siginfo.h, x86_64).
func siSigno(si []byte) int32 { return int32(binary.LittleEndian.Uint32(si[0:])) }
func siCode(si []byte) int32  { return int32(binary.LittleEndian.Uint32(si[8:])) }

// blockableSigs is every signal but SIGKILL and SIGSTOP.
const blockableSigs = ^uint64(0) &^ (1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1))
