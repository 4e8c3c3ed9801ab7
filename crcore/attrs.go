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

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// Process attributes beyond memory and files: pending signals, POSIX
// timers, rlimits, prctl flags, credentials and seccomp filters.
//
// Dump: dumpEarly runs before any syscall is injected (pending signals,
// seccomp state), dumpAttrs with the task's remote.
//
// Restore: restoreLast runs in finish, once nothing but the scratch
// area's munmap is left to inject, in this order per process:
//
//  1. every thread blocks every signal (PTRACE_SETSIGMASK), so that what
//     is queued next stays queued through the injections that follow;
//  2. the leader: rlimits, oom_score_adj (procattrs.go), child
//     subreaper, POSIX timers (all threads exist: a SIGEV_THREAD_ID
//     target must);
//  3. pending signals, the process's queue then each thread's;
//  4. each thread: login uid (procattrs.go: CAP_AUDIT_CONTROL may be
//     needed, so before the credentials), no_new_privs, credentials (they reset pdeath_signal
//     and dumpable), then parent-death signal; the leader: dumpable;
//  5. each thread: seccomp, its last injected syscall. The tracees carry
//     PTRACE_O_SUSPEND_SECCOMP from then on, so the scratch area's munmap
//     in finish passes whatever the filter forbids; the filters apply from
//     PTRACE_DETACH.
//
// The final signal masks are set from outside: the threads' in
// restoreLast, the leader's in finishMask, just before its registers.

// taskAttrs is what dumpEarly/dumpAttrs find out about a process.
type taskAttrs struct {
	pending   [][kabi.SizeofSiginfo]byte // the process-wide queue
	rlimits   []*pb.RlimitEntry
	subreaper bool
	dumpable  uint32
	timers    []*pb.PosixTimerEntry
	// oomLogin holds oom_score_adj and loginuid (procattrs.go).
	oomLogin pb.TaskCoreEntry
}

// threadAttrs is what dumpEarly/dumpAttrs find out about a thread.
type threadAttrs struct {
	pending     [][kabi.SizeofSiginfo]byte
	status      procfs.Status
	pdeathsig   uint32
	noNewPrivs  bool
	creds       *pb.CredsEntry
	ambient     uint64
	seccompMode uint32
	filters     []*pb.CrhookSeccompFilter
}

// dumpEarly reads, before any injection, what an injection could change
// or what decides how to inject: the pending signals and the seccomp
// state of every thread.
func dumpEarly(t *dtask, level int) error {
	if err := dumpPending(t); err != nil {
		return err
	}
	for _, th := range t.threads {
		b, err := procfs.ReadFile(procfs.TaskPath(t.pid, th.tid, "status"))
		if err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
		th.attrs.status = procfs.ParseStatus(b)
		if th.nsTid, err = nsAt(th.attrs.status, "NSpid", level); err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
		if err := dumpSeccomp(th); err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
	}
	return nil
}

// dumpAttrs reads the rest of what only the task can tell (dumpTask
// batches the other injected reads): rlimits, POSIX timers, OOM score
// and loginuid.
func (d *dumper) dumpAttrs(t *dtask, r *remote) (err error) {
	if t.attrs.rlimits, err = readRlimits(t.pid, r); err != nil {
		return err
	}
	if err := dumpTimers(t, r); err != nil {
		return err
	}
	if err := dumpOOMLoginuid(&t.attrs.oomLogin, t.pid); err != nil {
		return err
	}
	return nil
}

// attrsToCore adds the attributes to a thread's core entry.
func attrsToCore(c *pb.CoreEntry, t *dtask, th *dthread) {
	if t.zombie {
		return
	}
	tc := c.GetThreadCore()
	tc.SignalsP = signalQueue(th.attrs.pending)
	tc.PdeathSig = proto.Uint32(th.attrs.pdeathsig)
	tc.Creds = th.attrs.creds
	tc.SeccompMode = pb.SeccompMode(th.attrs.seccompMode).Enum()
	if c.Tc == nil {
		return
	}
	c.Tc.SignalsS = signalQueue(t.attrs.pending)
	c.Tc.Rlimits = &pb.TaskRlimitsEntry{Rlimits: t.attrs.rlimits}
	c.Tc.ChildSubreaper = proto.Bool(t.attrs.subreaper)
	c.Tc.OomScoreAdj = t.attrs.oomLogin.OomScoreAdj
	c.Tc.Loginuid = t.attrs.oomLogin.Loginuid
	if c.Tc.Timers != nil {
		c.Tc.Timers.Posix = t.attrs.timers
	}
}

// attrsToThreadExt adds to crhook's thread entry what CRIU's lacks.
func attrsToThreadExt(e *pb.CrhookThreadEntry, th *dthread) {
	e.NoNewPrivs = proto.Bool(th.attrs.noNewPrivs)
	e.CapAmbient = proto.Uint64(th.attrs.ambient)
	e.SeccompFilters = th.attrs.filters
}

// attrsToTaskExt adds to crhook's task entry what CRIU's lacks.
func attrsToTaskExt(e *pb.CrhookTaskEntry, t *dtask) {
	if !t.zombie {
		e.Dumpable = proto.Uint32(t.attrs.dumpable)
	}
}

// restoreLast puts back the attributes of task t (see the order above).
// Precondition: every thread created, nothing left to inject but the
// scratch area's munmap.
func (rs *restorer) restoreLast(t *rtask) error {
	for _, th := range t.threads {
		if err := th.t.SetSigmask(blockableSigs); err != nil {
			return err
		}
	}
	tc := t.ti.core.GetTc()
	lead := t.r
	if err := restoreRlimits(lead, tc.GetRlimits().GetRlimits()); err != nil {
		return err
	}
	if err := rs.restoreOOM(t); err != nil {
		return err
	}
	if tc.GetChildSubreaper() {
		if _, err := lead.call("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return err
		}
	}
	if err := restoreTimers(lead, t.ti); err != nil {
		return err
	}
	remotes := make([]*remote, len(t.threads))
	for i, th := range t.threads {
		remotes[i] = t.r.forTask(th.t)
	}
	if err := queueSignals(lead, t.ti.pid, t.ti.pid, tc.GetSignalsS(), true); err != nil {
		return err
	}
	for i, th := range t.threads {
		if err := queueSignals(remotes[i], t.ti.pid, th.img.tid, th.img.core.GetThreadCore().GetSignalsP(), false); err != nil {
			return fmt.Errorf("thread %d: %w", th.img.tid, err)
		}
	}
	if err := rs.restoreLoginuid(t, remotes); err != nil {
		return err
	}
	for i, th := range t.threads {
		if th.img.ext.GetNoNewPrivs() {
			if _, err := remotes[i].call("prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				return fmt.Errorf("thread %d: %w", th.img.tid, err)
			}
		}
		err := restoreCreds(remotes[i], th.img, rs.s.root != "", &rs.born)
		if errors.Is(err, errLessPrivileged) {
			rs.log.WithField("tid", th.img.tid).Warn(err.Error())
			err = nil
		}
		if err != nil {
			return fmt.Errorf("thread %d: %w", th.img.tid, err)
		}
	}
	for i, th := range t.threads {
		if sig := th.img.core.GetThreadCore().GetPdeathSig(); sig != 0 {
			if _, err := remotes[i].call("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(sig)); err != nil {
				return fmt.Errorf("thread %d: %w", th.img.tid, err)
			}
		}
	}
	if d := t.ti.ext.Dumpable; d != nil {
		if _, err := lead.call("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(*d)); err != nil {
			return err
		}
	}
	if err := restoreSeccomp(t, remotes); err != nil {
		return err
	}
	for _, th := range t.threads[1:] {
		if err := th.t.SetSigmask(th.img.core.GetThreadCore().GetBlkSigset()); err != nil {
			return err
		}
	}
	return nil
}

// finishMask gives the leader its own signal mask back, once nothing
// more is injected into it.
func finishMask(t *rtask) error {
	return t.t.SetSigmask(t.threads[0].img.core.GetThreadCore().GetBlkSigset())
}

// readRlimits returns pid's resource limits, for a dump and for a
// restore's comparison. prlimit64 from crhook costs a syscall each, where
// the task asked costs a stop; it is refused (EPERM) for a task of
// another uid when crhook lacks CAP_SYS_RESOURCE in its user namespace,
// and then the task is asked, in one batch.
func readRlimits(pid int, r *remote) ([]*pb.RlimitEntry, error) {
	if !rlimitsFromHere {
		return readRlimitsInside(r)
	}
	out := make([]*pb.RlimitEntry, 0, rlimNLimits)
	for res := 0; res < rlimNLimits; res++ {
		var old unix.Rlimit
		if err := unix.Prlimit(pid, res, nil, &old); err != nil {
			if errors.Is(err, unix.EPERM) {
				return readRlimitsInside(r)
			}
			return nil, os.NewSyscallError("prlimit64", err)
		}
		out = append(out, &pb.RlimitEntry{Cur: proto.Uint64(old.Cur), Max: proto.Uint64(old.Max)})
	}
	return out, nil
}

// rlimitsFromHere: readRlimits tries prlimit(2) from crhook first. Off
// only in tests (SetRlimitsInside), to run the path of a refusal.
var rlimitsFromHere = true

func readRlimitsInside(r *remote) ([]*pb.RlimitEntry, error) {
	out, err := r.alloc(16 * rlimNLimits)
	if err != nil {
		return nil, err
	}
	get := r.batch() // one stop for all (batch.go)
	for res := 0; res < rlimNLimits; res++ {
		get.add("prlimit64", unix.SYS_PRLIMIT64, 0, uint64(res), 0, out+uint64(16*res))
	}
	if _, err := get.run(); err != nil {
		return nil, err
	}
	b := make([]byte, 16*rlimNLimits)
	if err := r.read(out, b); err != nil {
		return nil, err
	}
	var lims []*pb.RlimitEntry
	for res := 0; res < rlimNLimits; res++ {
		lims = append(lims, &pb.RlimitEntry{
			Cur: proto.Uint64(binary.LittleEndian.Uint64(b[16*res:])),
			Max: proto.Uint64(binary.LittleEndian.Uint64(b[16*res+8:])),
		})
	}
	return lims, nil
}

// readPersonality reads /proc/PID/personality (hex), or asks the task
// when procfs refuses.
func readPersonality(pid int, r *remote) (uint64, error) {
	b, err := procfs.ReadFile(procfs.Path(pid, "personality"))
	if err == nil {
		if v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32); perr == nil {
			return v, nil
		}
	}
	return r.call("personality", unix.SYS_PERSONALITY, 0xffffffff)
}
