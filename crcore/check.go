//go:build linux && amd64

package crcore

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// Probe is the answer of one feature probe: Err is nil when the kernel
// has the feature.
type Probe struct {
	Name string
	Err  error
}

// Check probes every kernel feature the engine relies on, by using it.
func Check(ctx context.Context) []Probe {
	var out []Probe
	add := func(name string, err error) { out = append(out, Probe{Name: name, Err: err}) }

	add("kcmp(KCMP_FILE)", func() error {
		_, err := kcmp(os.Getpid(), os.Getpid(), kcmpFile, 0, 0)
		return err
	}())
	add("pidfd_getfd", func() error {
		pfd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err != nil {
			return os.NewSyscallError("pidfd_open", err)
		}
		defer unix.Close(pfd)
		fd, err := unix.PidfdGetfd(pfd, 0, 0)
		if err != nil {
			return os.NewSyscallError("pidfd_getfd", err)
		}
		return unix.Close(fd)
	}())
	add("pagemap with page frames", func() error {
		pfn, err := procfs.ZeroPFN()
		if err != nil {
			return err
		}
		if pfn == 0 {
			return errors.New("page frame numbers hidden (needs CAP_SYS_ADMIN): zero pages will be dumped")
		}
		return nil
	}())
	add("prctl(PR_SET_MM_MAP)", func() error {
		var size uint32
		if err := prctlMMMapSize(&size); err != nil {
			return err
		}
		if size != kabi.SizeofPrctlMMMap {
			return fmt.Errorf("kernel's prctl_mm_map is %d bytes, crhook's %d", size, kabi.SizeofPrctlMMMap)
		}
		return nil
	}())
	add("openat2(RESOLVE_IN_ROOT)", func() error {
		fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		if err != nil {
			return os.NewSyscallError("openat2", err)
		}
		return unix.Close(fd)
	}())
	add("checkpoint/restore capability", func() error {
		st, err := procfs.ReadStatus(os.Getpid())
		if err != nil {
			return err
		}
		eff, err := st.Uint("CapEff", 16)
		if err != nil {
			return err
		}
		if eff&(1<<unix.CAP_CHECKPOINT_RESTORE) == 0 && eff&(1<<unix.CAP_SYS_ADMIN) == 0 {
			return errors.New("neither CAP_CHECKPOINT_RESTORE nor CAP_SYS_ADMIN: pids cannot be chosen")
		}
		if eff&(1<<unix.CAP_SYS_PTRACE) == 0 {
			return errors.New("no CAP_SYS_PTRACE")
		}
		return nil
	}())
	husk := onLockedThread(func() error { return probeHusk(add) })
	add("traced husk", husk)
	return out
}

// probeHusk starts a husk and uses on it what restore and dump use.
// Precondition: OS thread locked.
func probeHusk(add func(string, error)) error {
	h, regs, err := startHusk([3]uintptr{0, 1, 2})
	if err != nil {
		return err
	}
	defer killAndReap(h)
	if err := h.Poke(regs.Rip, ptrace.Gadget); err != nil {
		return err
	}
	pid, err := h.Call(regs.Rip, "getpid", unix.SYS_GETPID)
	if err == nil && int(pid) != h.Tid {
		err = fmt.Errorf("injected getpid returned %d, want %d", pid, h.Tid)
	}
	add("syscall injection", err)
	x, err := h.GetXState()
	if err == nil && len(x) < 576 {
		err = fmt.Errorf("XSAVE area of %d bytes", len(x))
	}
	add("PTRACE_GETREGSET NT_X86_XSTATE", err)
	_, err = h.GetRseq()
	add("PTRACE_GET_RSEQ_CONFIGURATION", err)
	add("ARCH_MAP_VDSO_64", func() error {
		vmas, err := procfs.ReadMapsFast(h.Tid)
		if err != nil {
			return err
		}
		var lo, hi, vdso uint64
		for _, v := range vmas {
			if v.Path == "[vdso]" || v.Path == "[vvar]" || v.Path == "[vvar_vclock]" {
				if lo == 0 || v.Start < lo {
					lo = v.Start
				}
				hi = max(hi, v.End)
				if v.Path == "[vdso]" {
					vdso = v.Start
				}
			}
		}
		if vdso == 0 {
			return errors.New("no vdso")
		}
		if _, err := h.Call(regs.Rip, "munmap", unix.SYS_MUNMAP, lo, hi-lo); err != nil {
			return err
		}
		if _, err := h.Call(regs.Rip, "arch_prctl", unix.SYS_ARCH_PRCTL, kabi.ARCH_MAP_VDSO_64, lo); err != nil {
			return err
		}
		after, err := procfs.ReadMapsFast(h.Tid)
		if err != nil {
			return err
		}
		for _, v := range after {
			if v.Path == "[vdso]" && v.Start == vdso {
				return nil
			}
		}
		return errors.New("vdso not remapped where asked")
	}())
	return nil
}
