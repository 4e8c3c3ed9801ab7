//go:build linux && amd64

package crcore

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
	pb "github.com/crhook/crhook/proto"
)

// prepareRemote makes t ready for injected syscalls on the dump side: the
// gadget goes at codeAddr (an executable page of the task) for the one
// mmap of a private scratch area, whose bytes are put back at once; every
// later syscall runs from the scratch area through the crash-safe
// trampoline of safeinject.go. undo unmaps the scratch area and must run
// before the task's memory is read.
func prepareRemote(t *ptrace.Task, codeAddr uint64) (*remote, func() error, error) {
	saved := make([]byte, 8)
	if err := t.Peek(codeAddr, saved); err != nil {
		return nil, nil, err
	}
	patched := append(append([]byte{}, ptrace.Gadget...), saved[len(ptrace.Gadget):]...)
	if err := t.Poke(codeAddr, patched); err != nil {
		return nil, nil, err
	}
	regs, err := t.GetRegs()
	if err != nil {
		if perr := t.Poke(codeAddr, saved); perr != nil {
			return nil, nil, fmt.Errorf("%w (and putting back the code at %#x: %w)", err, codeAddr, perr)
		}
		return nil, nil, err
	}
	// Collected at its syscall-exit stop: the task never reaches the
	// int3, and the code is whole again before anything else runs.
	addr, err := t.SyscallToExit(codeAddr, unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	perr := t.Poke(codeAddr, saved)
	if serr := t.SetRegs(&regs); err == nil {
		err = serr
	}
	if err == nil {
		err = perr
	}
	if err == nil {
		err = ptrace.Errno("mmap", addr)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("inject mmap scratch: %w", err)
	}
	g := &safeGadget{scratch: addr, pid: t.Tid}
	r := &remote{t: t, gadget: addr + plainGadgetOff, scratch: addr + safeArgsOff, size: scratchSize - safeArgsOff, safe: g}
	undo := func() error {
		_, err := r.call("munmap", unix.SYS_MUNMAP, addr, scratchSize)
		return err
	}
	if err := g.install(); err != nil {
		if uerr := undo(); uerr != nil {
			return nil, nil, fmt.Errorf("%w (and unmapping the scratch area: %w)", err, uerr)
		}
		return nil, nil, err
	}
	faultPoint("dump:after-inject")
	return r, undo, nil
}

func protOf(v *procfs.VMA) uint32 {
	var p uint32
	if v.Read {
		p |= unix.PROT_READ
	}
	if v.Write {
		p |= unix.PROT_WRITE
	}
	if v.Exec {
		p |= unix.PROT_EXEC
	}
	return p
}

// vmaEntry describes one VMA; nil for [vsyscall], which is not the
// task's own.
func (d *dumper) vmaEntry(pid int, v *procfs.VMA) (*pb.VmaEntry, error) {
	e := &pb.VmaEntry{
		Start: proto.Uint64(v.Start),
		End:   proto.Uint64(v.End),
		Pgoff: proto.Uint64(v.Offset),
		Shmid: proto.Uint64(0),
		Prot:  proto.Uint32(protOf(v)),
		Fd:    proto.Int64(-1),
	}
	flags := uint32(unix.MAP_PRIVATE)
	if v.Shared {
		flags = unix.MAP_SHARED
	}
	status := uint32(vmaAreaRegular)
	switch {
	case v.Path == "[vsyscall]":
		return nil, nil
	case v.Path == "[vdso]":
		status = vmaAreaRegular | vmaAreaVdso
		flags |= unix.MAP_ANONYMOUS
	case v.Path == "[vvar]" || v.Path == "[vvar_vclock]":
		status = vmaAreaRegular | vmaAreaVvar
		flags |= unix.MAP_ANONYMOUS
	case v.Special():
		return nil, fmt.Errorf("mapping %s: %w", v.Line(), ErrNotSupported)
	case shmemKind(v) != "":
		if err := d.shmemVMA(pid, v, e, &status, &flags); err != nil {
			return nil, fmt.Errorf("mapping %s: %w", v.Line(), err)
		}
	case v.Anon():
		flags |= unix.MAP_ANONYMOUS
		if v.Shared {
			status |= vmaAnonShared
		} else {
			status |= vmaAnonPrivate
		}
		if v.Path == "[stack]" {
			status |= vmaAreaStack
		}
		if v.Path == "[heap]" {
			status |= vmaAreaHeap
		}
	default:
		if v.Deleted {
			return nil, fmt.Errorf("mapping %s of a deleted file: %w", v.Line(), ErrNotSupported)
		}
		if v.Major == 0 && strings.HasPrefix(v.Path, "/memfd:") || strings.HasPrefix(v.Path, "/SYSV") {
			return nil, fmt.Errorf("mapping %s: %w", v.Line(), ErrNotSupported)
		}
		mode := uint32(unix.O_RDONLY)
		if v.Shared && v.Flags["mw"] {
			mode = unix.O_RDWR
		}
		id, err := d.files.mappedFile(pid, v, mode)
		if err != nil {
			return nil, fmt.Errorf("mapping %s: %w", v.Line(), err)
		}
		e.Shmid = proto.Uint64(uint64(id))
		if v.Shared {
			status |= vmaFileShared
		} else {
			status |= vmaFilePrivate
		}
	}
	if v.Flags["gd"] {
		flags |= unix.MAP_GROWSDOWN
	}
	if v.Flags["lo"] {
		flags |= unix.MAP_LOCKED
	}
	if v.Flags["nr"] {
		flags |= unix.MAP_NORESERVE
	}
	e.Flags = proto.Uint32(flags)
	e.Status = proto.Uint32(status)
	e.Madv = proto.Uint64(madvOf(v))
	return e, nil
}

// madvOf collects the madvise() advice visible in VmFlags, as a bit set
// indexed by MADV_* value (CRIU's encoding).
func madvOf(v *procfs.VMA) uint64 {
	var m uint64
	for flag, adv := range map[string]int{
		"dc": unix.MADV_DONTFORK,
		"dd": unix.MADV_DONTDUMP,
		"hg": unix.MADV_HUGEPAGE,
		"nh": unix.MADV_NOHUGEPAGE,
		"mg": unix.MADV_MERGEABLE,
		"wf": unix.MADV_WIPEONFORK,
		"sr": unix.MADV_SEQUENTIAL,
		"rr": unix.MADV_RANDOM,
	} {
		if v.Flags[flag] {
			m |= 1 << uint(adv)
		}
	}
	return m
}

func (d *dumper) dumpFs(pid int, umask uint32) (*pb.FsEntry, error) {
	cwd, err := os.Readlink(procfs.Path(pid, "cwd"))
	if err != nil {
		return nil, err
	}
	root, err := os.Readlink(procfs.Path(pid, "root"))
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(cwd, " (deleted)") {
		return nil, fmt.Errorf("cwd %s: deleted working directory: %w", cwd, ErrNotSupported)
	}
	cwdID, err := d.files.pathFile(cwd, procfs.Path(pid, "cwd"), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	rootID, err := d.files.pathFile(root, procfs.Path(pid, "root"), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	return &pb.FsEntry{CwdId: proto.Uint32(cwdID), RootId: proto.Uint32(rootID), Umask: proto.Uint32(umask)}, nil
}

func pagesName(pid int) string    { return fmt.Sprintf("pages-%d.img", pid) }
func pagemapName(pid int) string  { return fmt.Sprintf("pagemap-%d.img", pid) }
func coreName(pid int) string     { return fmt.Sprintf("core-%d.img", pid) }
func mmName(pid int) string       { return fmt.Sprintf("mm-%d.img", pid) }
func fsName(pid int) string       { return fmt.Sprintf("fs-%d.img", pid) }
func fdinfoName(id uint32) string { return fmt.Sprintf("fdinfo-%d.img", id) }
func extName(pid int) string      { return fmt.Sprintf("crhook-task-%d.img", pid) }
