//go:build linux && amd64

package crcore

import (
	"bytes"
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/ptrace"
	pb "github.com/crhook/crhook/proto"
)

// restoreTaskState sets what belongs to the task: working directory,
// umask, personality, name, signal handling, timers, futex and rseq
// registrations.
func (s *imageSet) restoreTaskState(r *remote, ti *taskImage) error {
	tc := ti.core.GetTc()
	thc := ti.core.GetThreadCore()
	r.reset()
	if cwd := s.files[ti.fs.GetCwdId()].GetReg().GetName(); cwd != "" {
		p, err := r.cstring(cwd)
		if err != nil {
			return err
		}
		if _, err := r.call("chdir "+cwd, unix.SYS_CHDIR, p); err != nil {
			return err
		}
	}
	if _, err := r.call("umask", unix.SYS_UMASK, uint64(ti.fs.GetUmask())); err != nil {
		return err
	}
	if _, err := r.call("personality", unix.SYS_PERSONALITY, uint64(tc.GetPersonality())); err != nil {
		return err
	}
	r.reset()
	if comm := tc.GetComm(); comm != "" {
		p, err := r.cstring(comm)
		if err != nil {
			return err
		}
		if _, err := r.call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, p); err != nil {
			return err
		}
	}

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
		binary.Write(&b, binary.LittleEndian, kabi.KSigaction{Handler: a.GetSigaction(), Flags: a.GetFlags(), Restorer: a.GetRestorer(), Mask: a.GetMask()})
		r.reset()
		p, err := r.put(b.Bytes())
		if err != nil {
			return err
		}
		if _, err := r.call("rt_sigaction", unix.SYS_RT_SIGACTION, uint64(sig), p, 0, 8); err != nil {
			return err
		}
	}
	if sas := thc.GetSas(); sas != nil && sas.GetSsFlags()&kabi.SS_DISABLE == 0 {
		var b bytes.Buffer
		binary.Write(&b, binary.LittleEndian, kabi.StackT{SP: sas.GetSsSp(), Size: sas.GetSsSize(), Flags: int32(sas.GetSsFlags() &^ kabi.SS_ONSTACK)})
		r.reset()
		p, err := r.put(b.Bytes())
		if err != nil {
			return err
		}
		if _, err := r.call("sigaltstack", unix.SYS_SIGALTSTACK, p, 0); err != nil {
			return err
		}
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
			r.reset()
			p, err := r.put(b[:])
			if err != nil {
				return err
			}
			if _, err := r.call("setitimer", unix.SYS_SETITIMER, uint64(which), p, 0); err != nil {
				return err
			}
		}
	}
	if _, err := r.call("set_tid_address", unix.SYS_SET_TID_ADDRESS, ti.core.GetThreadInfo().GetClearTidAddr()); err != nil {
		return err
	}
	if h := thc.GetFutexRla(); h != 0 {
		if _, err := r.call("set_robust_list", unix.SYS_SET_ROBUST_LIST, h, uint64(thc.GetFutexRlaLen())); err != nil {
			return err
		}
	}
	if rs := thc.GetRseqEntry(); rs != nil && rs.GetRseqAbiPointer() != 0 {
		if _, err := r.call("rseq", unix.SYS_RSEQ, rs.GetRseqAbiPointer(), uint64(rs.GetRseqAbiSize()), 0, uint64(rs.GetSignature())); err != nil {
			return err
		}
	}
	return r.t.SetSigmask(thc.GetBlkSigset())
}

// finish drops the scratch area and sets the dumped registers: the last
// injected syscall unmaps the page that holds the gadget, and at its exit
// stop the task gets its own registers and FPU state back, then runs.
func finish(r *remote, ti *taskImage) error {
	regs := regsFromImage(ti.core.GetThreadInfo().GetGpregs())
	restartFixup(&regs)
	if _, err := r.t.SyscallToExit(r.gadget, unix.SYS_MUNMAP, r.gadget, scratchSize); err != nil {
		return err
	}
	if err := r.t.SetRegs(&regs); err != nil {
		return err
	}
	if ths := ti.ext.GetThreads(); len(ths) > 0 && len(ths[0].GetXsave()) > 0 {
		x := ths[0].GetXsave()
		if err := r.t.SetXState(x); err != nil {
			return err
		}
	}
	if ti.core.GetTc().GetTaskState() == taskStopped {
		unix.Tgkill(r.pid(), r.pid(), unix.SIGSTOP)
	}
	return r.t.Detach(0)
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

var _ = ptrace.Gadget
