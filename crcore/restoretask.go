//go:build linux && amd64

package crcore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/ptrace"
	pb "github.com/crhook/crhook/proto"
)

// restoreTaskState sets what belongs to the process: working directory,
// umask, personality, signal handlers and interval timers; and, with
// lead (its only thread), that thread's own state (restoreThreadState) in
// the same batch: one stop for both.
func (s *imageSet) restoreTaskState(r *remote, ti *taskImage, lead *threadImage) error {
	tc := ti.core.GetTc()
	r.reset()
	// One batch (batch.go): what its calls point to stays in scratch
	// until it has run.
	bt := r.batch()
	if cwd := s.files[ti.fs.GetCwdId()].GetReg().GetName(); cwd != "" {
		p, err := r.cstring(cwd)
		if err != nil {
			return err
		}
		bt.add("chdir "+cwd, unix.SYS_CHDIR, p)
	}
	bt.add("umask", unix.SYS_UMASK, uint64(ti.fs.GetUmask()))
	bt.add("personality", unix.SYS_PERSONALITY, uint64(tc.GetPersonality()))

	// Signal handlers, in CRIU's order: every signal but SIGKILL and
	// SIGSTOP.
	sas := tc.GetSigactions()
	i := 0
	for sig := 1; sig <= kabi.NSig && i < len(sas); sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		a := sas[i]
		i++
		if a.GetSigaction() == 0 && a.GetFlags() == 0 && a.GetMask() == 0 {
			continue
		}
		var b bytes.Buffer
		putLE(&b, kabi.KSigaction{Handler: a.GetSigaction(), Flags: a.GetFlags(), Restorer: a.GetRestorer(), Mask: a.GetMask()})
		p, err := r.put(b.Bytes())
		if err != nil {
			return err
		}
		bt.add(fmt.Sprintf("rt_sigaction(%d)", sig), unix.SYS_RT_SIGACTION, uint64(sig), p, 0, 8)
	}
	if tm := tc.GetTimers(); tm != nil {
		for which, it := range []*pb.ItimerEntry{tm.GetReal(), tm.GetVirt(), tm.GetProf()} {
			if it.GetVsec() == 0 && it.GetVusec() == 0 {
				continue
			}
			var b [32]byte
			for k, v := range []uint64{it.GetIsec(), it.GetIusec(), it.GetVsec(), it.GetVusec()} {
				binary.LittleEndian.PutUint64(b[8*k:], v)
			}
			p, err := r.put(b[:])
			if err != nil {
				return err
			}
			bt.add("setitimer", unix.SYS_SETITIMER, uint64(which), p, 0)
		}
	}
	if lead != nil {
		if err := addThreadState(bt, r, lead); err != nil {
			return err
		}
	}
	if _, err := bt.run(); err != nil {
		return err
	}
	if lead != nil {
		return r.t.SetSigmask(lead.core.GetThreadCore().GetBlkSigset())
	}
	return nil
}

// restoreThreadState sets what belongs to one thread: its name, signal
// stack, clear-tid address, robust futex list, rseq registration and
// blocked signals. r runs syscalls in that thread.
func restoreThreadState(r *remote, th *threadImage) error {
	r.reset()
	// One batch (batch.go): the strings and structs it points to stay
	// in scratch until it has run.
	b := r.batch()
	if err := addThreadState(b, r, th); err != nil {
		return err
	}
	if _, err := b.run(); err != nil {
		return err
	}
	return r.t.SetSigmask(th.core.GetThreadCore().GetBlkSigset())
}

// addThreadState adds to b the calls of restoreThreadState but the mask.
func addThreadState(b *batch, r *remote, th *threadImage) error {
	thc := th.core.GetThreadCore()
	if comm := thc.GetComm(); comm != "" {
		p, err := r.cstring(comm)
		if err != nil {
			return err
		}
		b.add("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, p)
	}
	if sas := thc.GetSas(); sas != nil && sas.GetSsFlags()&kabi.SS_DISABLE == 0 {
		var buf bytes.Buffer
		putLE(&buf, kabi.StackT{SP: sas.GetSsSp(), Size: sas.GetSsSize(), Flags: int32(sas.GetSsFlags() &^ kabi.SS_ONSTACK)})
		p, err := r.put(buf.Bytes())
		if err != nil {
			return err
		}
		b.add("sigaltstack", unix.SYS_SIGALTSTACK, p, 0)
	}
	b.add("set_tid_address", unix.SYS_SET_TID_ADDRESS, th.core.GetThreadInfo().GetClearTidAddr())
	if h := thc.GetFutexRla(); h != 0 {
		b.add("set_robust_list", unix.SYS_SET_ROBUST_LIST, h, uint64(thc.GetFutexRlaLen()))
	}
	if rs := thc.GetRseqEntry(); rs != nil && rs.GetRseqAbiPointer() != 0 {
		b.add("rseq", unix.SYS_RSEQ, rs.GetRseqAbiPointer(), uint64(rs.GetRseqAbiSize()), 0, uint64(rs.GetSignature()))
	}
	return nil
}

// closeExtraFds adds to b what closes every fd of the task that its image
// does not list: what it inherited from its parent during the restore,
// and files opened for others.
func closeExtraFds(b *batch, ti *taskImage) {
	keep := make([]uint32, 0, len(ti.fds))
	for _, e := range ti.fds {
		keep = append(keep, e.GetFd())
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i] < keep[j] })
	next := uint64(0)
	for _, fd := range keep {
		if uint64(fd) > next {
			b.add("close_range", unix.SYS_CLOSE_RANGE, next, uint64(fd)-1, 0)
		}
		next = uint64(fd) + 1
	}
	b.add("close_range", unix.SYS_CLOSE_RANGE, next, uint64(^uint32(0)), 0)
}

// setFinalRegs gives a thread its dumped registers and FPU state.
func setFinalRegs(t *ptrace.Task, th *threadImage) error {
	regs := regsFromImage(th.core.GetThreadInfo().GetGpregs())
	restartFixup(&regs)
	if err := t.SetRegs(&regs); err != nil {
		return err
	}
	if x := th.ext.GetXsave(); len(x) > 0 {
		return t.SetXState(x)
	}
	return nil
}

// restartFixup turns a task dumped inside an interrupted syscall into one
// about to reissue it: the kernel-internal restart codes must never reach
// user code, and the kernel's restart block did not survive the dump.
func restartFixup(r *unix.PtraceRegs) {
	if int64(r.Orig_rax) >= 0 {
		switch int64(r.Rax) {
		case -kabi.ERESTARTSYS, -kabi.ERESTARTNOINTR, -kabi.ERESTARTNOHAND, -kabi.ERESTARTRESTARTBLOCK:
			r.Rax = r.Orig_rax
			r.Rip -= 2
		}
	}
	r.Orig_rax = ^uint64(0)
}

func regsFromImage(g *pb.UserX86RegsEntry) unix.PtraceRegs {
	return unix.PtraceRegs{
		R15: g.GetR15(), R14: g.GetR14(), R13: g.GetR13(), R12: g.GetR12(),
		Rbp: g.GetBp(), Rbx: g.GetBx(), R11: g.GetR11(), R10: g.GetR10(),
		R9: g.GetR9(), R8: g.GetR8(), Rax: g.GetAx(), Rcx: g.GetCx(),
		Rdx: g.GetDx(), Rsi: g.GetSi(), Rdi: g.GetDi(), Orig_rax: g.GetOrigAx(),
		Rip: g.GetIp(), Cs: g.GetCs(), Eflags: g.GetFlags(), Rsp: g.GetSp(),
		Ss: g.GetSs(), Fs_base: g.GetFsBase(), Gs_base: g.GetGsBase(),
		Ds: g.GetDs(), Es: g.GetEs(), Fs: g.GetFs(), Gs: g.GetGs(),
	}
}
