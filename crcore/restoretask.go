//go:build linux && amd64

package crcore

import (
	"bytes"
	"encoding/binary"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/ptrace"
	pb "github.com/crhook/crhook/proto"
)

// restoreFds puts every fd of the image in place. The task holds the
// restorer's standard streams at 0, 1 and 2 on entry; those the image
// keeps as external stay, the others are closed.
func (s *imageSet) restoreFds(r *remote, ti *taskImage) error {
	fds := append([]*pb.FdinfoEntry{}, ti.fds...)
	sort.Slice(fds, func(i, j int) bool { return fds[i].GetFd() < fds[j].GetFd() })
	placed := map[uint32]uint64{}
	inImage := map[uint32]bool{}
	for _, e := range fds {
		fd := uint64(e.GetFd())
		inImage[e.GetFd()] = true
		cloexec := e.GetFlags()&unix.FD_CLOEXEC != 0
		switch e.GetType() {
		case pb.FdTypes_EXT:
			if fd > 2 {
				return badImagef("fdinfo: external file at fd %d: only standard streams can be external", fd)
			}
			if err := setCloexec(r, fd, cloexec); err != nil {
				return err
			}
		case pb.FdTypes_REG:
			id := e.GetId()
			if src, ok := placed[id]; ok {
				if err := dupTo(r, src, fd, cloexec); err != nil {
					return err
				}
				continue
			}
			f := s.files[id].GetReg()
			flags := f.GetFlags() &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
			r.reset()
			p, err := r.cstring(f.GetName())
			if err != nil {
				return err
			}
			tmp, err := r.call("open "+f.GetName(), unix.SYS_OPENAT, atFdcwd, p, uint64(flags|unix.O_CLOEXEC), 0)
			if err != nil {
				return err
			}
			if pos := f.GetPos(); pos != 0 && flags&unix.O_PATH == 0 {
				if _, err := r.call("lseek "+f.GetName(), unix.SYS_LSEEK, tmp, pos, unix.SEEK_SET); err != nil {
					return err
				}
			}
			if tmp == fd {
				if err := setCloexec(r, fd, cloexec); err != nil {
					return err
				}
			} else {
				if err := dupTo(r, tmp, fd, cloexec); err != nil {
					return err
				}
				if _, err := r.call("close", unix.SYS_CLOSE, tmp); err != nil {
					return err
				}
			}
			placed[id] = fd
		default:
			return notSupportedf("fd %d of type %v", fd, e.GetType())
		}
	}
	for fd := uint32(0); fd <= 2; fd++ {
		if !inImage[fd] {
			if _, err := r.call("close", unix.SYS_CLOSE, uint64(fd)); err != nil {
				return err
			}
		}
	}
	return nil
}

func dupTo(r *remote, src, dst uint64, cloexec bool) error {
	fl := uint64(0)
	if cloexec {
		fl = unix.O_CLOEXEC
	}
	_, err := r.call("dup3", unix.SYS_DUP3, src, dst, fl)
	return err
}

func setCloexec(r *remote, fd uint64, on bool) error {
	v := uint64(0)
	if on {
		v = unix.FD_CLOEXEC
	}
	_, err := r.call("fcntl(F_SETFD)", unix.SYS_FCNTL, fd, unix.F_SETFD, v)
	return err
}

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
