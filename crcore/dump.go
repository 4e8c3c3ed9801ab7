//go:build linux && amd64

package crcore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/mem"
	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
	pb "github.com/crhook/crhook/proto"
)

// Task states of task_core_entry (CRIU's TASK_*).
const (
	taskAlive   = 1
	taskDead    = 2
	taskStopped = 3
)

// CRIU's VMA status bits (criu/include/image.h).
const (
	vmaAreaRegular  = 1 << 0
	vmaAreaStack    = 1 << 1
	vmaAreaVsyscall = 1 << 2
	vmaAreaVdso     = 1 << 3
	vmaAreaHeap     = 1 << 5
	vmaFilePrivate  = 1 << 6
	vmaFileShared   = 1 << 7
	vmaAnonShared   = 1 << 8
	vmaAnonPrivate  = 1 << 9
	vmaAreaVvar     = 1 << 12
)

// pagemap_entry flags (CRIU's PE_*).
const pePresent = 1 << 2

// imgVersion is CRIU's CRTOOLS_IMAGES_V1_1.
const imgVersion = 2

// formatVersion is crhook's own image format version.
const formatVersion = 1

const scratchSize = 64 << 10

// Dump checkpoints the process opts.Pid into opts.ImageDir. A dump that
// fails leaves the target running as it was and removes what it wrote.
func Dump(ctx context.Context, opts DumpOptions) (*DumpResult, error) {
	var res *DumpResult
	err := onLockedThread(func() error {
		var err error
		res, err = dump(ctx, opts, logOrDiscard(opts.Log))
		return err
	})
	return res, err
}

type dumper struct {
	log   *logrus.Entry
	dir   *image.Dir
	files *fileTable
	stats Stats
}

func dump(ctx context.Context, opts DumpOptions, log *logrus.Entry) (_ *DumpResult, retErr error) {
	start := time.Now()
	pid := opts.Pid
	if pid <= 0 {
		return nil, fmt.Errorf("dump: bad pid %d", pid)
	}
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if st.State == 'Z' || st.State == 'X' {
		return nil, fmt.Errorf("dump pid %d: process is a zombie", pid)
	}
	tids, err := procfs.Tids(pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if len(tids) > 1 {
		return nil, fmt.Errorf("dump pid %d: %d threads: multi-threaded processes: %w", pid, len(tids), ErrNotSupported)
	}
	if kids, err := procfs.Children(pid, pid); err == nil && len(kids) > 0 {
		return nil, fmt.Errorf("dump pid %d: it has children %v: process trees: %w", pid, kids, ErrNotSupported)
	}

	var cl cleanup
	defer cl.run()
	undoDir, err := prepareImageDir(opts.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	cl.add(undoDir)
	dir, err := image.Create(opts.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	defer dir.Close()
	d := &dumper{log: log, dir: dir, files: newFileTable(dir)}
	defer d.files.ctx.closeExtra()

	t, err := ptrace.Seize(pid, unix.PTRACE_O_TRACESYSGOOD)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	stopped := st.State == 'T'
	cl.add(func() { resume(t, stopped, log) })
	if _, err := t.Interrupt(); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	frozen := time.Now()
	log.WithField("pid", pid).Debug("seized")

	// Files first: an fd we cannot dump fails the dump before anything
	// else is touched.
	fds, err := d.files.dumpFds(pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}

	ts, err := d.dumpTask(t, st, stopped)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	memStart := time.Now()
	mm, runs, vmaExtra, err := d.dumpMM(pid, st, ts.brk)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	d.stats.MemoryTime = time.Since(memStart)

	fs, err := d.dumpFs(pid, ts.umask)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}

	ts.vmas = vmaExtra
	if err := d.writeImages(st, ts, mm, runs, fds, fs); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if err := d.files.ctx.closeExtra(); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if err := syncDir(opts.ImageDir); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}

	// Success: from here on the images stand.
	cl.release()
	if opts.LeaveRunning {
		resume(t, stopped, log)
	} else {
		if err := killTraced(t); err != nil {
			log.WithError(err).Warn("kill dumped task")
		}
	}
	d.stats.FrozenTime = time.Since(frozen)
	d.stats.TotalTime = time.Since(start)
	log.WithFields(logrus.Fields{"pid": pid, "pages": d.stats.PagesWritten, "frozen": d.stats.FrozenTime}).Info("dumped")
	return &DumpResult{Pids: []int{pid}, Stats: d.stats}, nil
}

// resume detaches from t, giving back the signals held during the dump
// and putting a stopped task back in its stop.
func resume(t *ptrace.Task, stopped bool, log *logrus.Entry) {
	for _, s := range t.Deferred() {
		unix.Tgkill(t.Tid, t.Tid, s)
	}
	if stopped {
		unix.Tgkill(t.Tid, t.Tid, unix.SIGSTOP)
	}
	if err := t.Detach(0); err != nil && !errors.Is(err, unix.ESRCH) {
		log.WithError(err).Warn("detach")
	}
}

// killTraced kills a traced task and waits until it is dead, without
// reaping it: its parent (which may be our own caller) collects the
// status once our tracing thread is gone.
func killTraced(t *ptrace.Task) error {
	if err := unix.Kill(t.Tid, unix.SIGKILL); err != nil {
		return os.NewSyscallError("kill", err)
	}
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, t.Tid, &info, unix.WEXITED|unix.WNOWAIT|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("waitid", err)
		}
		return nil
	}
}

// taskState is what the injected syscalls and ptrace told about a task.
type taskState struct {
	regs        unix.PtraceRegs
	xsave       []byte
	sigmask     uint64
	rseq        kabi.RseqConfiguration
	robustHead  uint64
	robustLen   uint64
	tidAddr     uint64
	brk         uint64
	sigactions  []kabi.KSigaction // index sig-1
	altstack    kabi.StackT
	itimers     [3][4]uint64 // interval sec, usec, value sec, usec
	personality uint64
	umask       uint32
	state       uint32
	comm        string
	vmas        []*pb.CrhookVmaEntry
}

func (d *dumper) dumpTask(t *ptrace.Task, st *procfs.Stat, stopped bool) (*taskState, error) {
	pid := t.Tid
	ts := &taskState{state: taskAlive, comm: st.Comm}
	if stopped {
		ts.state = taskStopped
	}
	var err error
	if ts.regs, err = t.GetRegs(); err != nil {
		return nil, err
	}
	if ts.xsave, err = t.GetXState(); err != nil {
		return nil, err
	}
	if ts.sigmask, err = t.GetSigmask(); err != nil {
		return nil, err
	}
	if ts.rseq, err = t.GetRseq(); err != nil {
		return nil, err
	}
	if ts.robustHead, ts.robustLen, err = getRobustList(pid); err != nil {
		return nil, err
	}
	status, err := procfs.ReadStatus(pid)
	if err != nil {
		return nil, err
	}
	um, err := status.Uint("Umask", 8)
	if err != nil {
		return nil, err
	}
	ts.umask = uint32(um)

	// What only the task can tell: ask it with injected syscalls.
	vmas, err := procfs.ReadMapsFast(pid)
	if err != nil {
		return nil, err
	}
	var code *procfs.VMA
	for _, v := range vmas {
		if v.Start <= ts.regs.Rip && ts.regs.Rip < v.End && v.Exec {
			code = v
		}
	}
	if code == nil {
		return nil, fmt.Errorf("no executable mapping holds rip %#x", ts.regs.Rip)
	}
	r, undo, err := prepareRemote(t, code.Start)
	if err != nil {
		return nil, err
	}
	defer undo()

	if ts.brk, err = r.call("brk", unix.SYS_BRK, 0); err != nil {
		return nil, err
	}
	if ts.personality, err = r.call("personality", unix.SYS_PERSONALITY, 0xffffffff); err != nil {
		return nil, err
	}
	out, err := r.alloc(8)
	if err != nil {
		return nil, err
	}
	if _, err := r.call("prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, out); err != nil {
		return nil, err
	}
	var b8 [8]byte
	if err := r.read(out, b8[:]); err != nil {
		return nil, err
	}
	ts.tidAddr = binary.LittleEndian.Uint64(b8[:])

	sa, err := r.alloc(kabi.NSig * kabi.SizeofKSigaction)
	if err != nil {
		return nil, err
	}
	for sig := 1; sig <= kabi.NSig; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if _, err := r.call("rt_sigaction", unix.SYS_RT_SIGACTION, uint64(sig), 0, sa+uint64(sig-1)*kabi.SizeofKSigaction, 8); err != nil {
			return nil, err
		}
	}
	sab := make([]byte, kabi.NSig*kabi.SizeofKSigaction)
	if err := r.read(sa, sab); err != nil {
		return nil, err
	}
	ts.sigactions = make([]kabi.KSigaction, kabi.NSig)
	for i := range ts.sigactions {
		b := sab[i*kabi.SizeofKSigaction:]
		ts.sigactions[i] = kabi.KSigaction{
			Handler:  binary.LittleEndian.Uint64(b),
			Flags:    binary.LittleEndian.Uint64(b[8:]),
			Restorer: binary.LittleEndian.Uint64(b[16:]),
			Mask:     binary.LittleEndian.Uint64(b[24:]),
		}
	}

	ss, err := r.alloc(kabi.SizeofStackT)
	if err != nil {
		return nil, err
	}
	if _, err := r.call("sigaltstack", unix.SYS_SIGALTSTACK, 0, ss); err != nil {
		return nil, err
	}
	var ssb [kabi.SizeofStackT]byte
	if err := r.read(ss, ssb[:]); err != nil {
		return nil, err
	}
	ts.altstack = kabi.StackT{
		SP:    binary.LittleEndian.Uint64(ssb[:]),
		Flags: int32(binary.LittleEndian.Uint32(ssb[8:])),
		Size:  binary.LittleEndian.Uint64(ssb[16:]),
	}

	it, err := r.alloc(32)
	if err != nil {
		return nil, err
	}
	for which := 0; which < 3; which++ {
		if _, err := r.call("getitimer", unix.SYS_GETITIMER, uint64(which), it); err != nil {
			return nil, err
		}
		var ib [32]byte
		if err := r.read(it, ib[:]); err != nil {
			return nil, err
		}
		for k := 0; k < 4; k++ {
			ts.itimers[which][k] = binary.LittleEndian.Uint64(ib[k*8:])
		}
	}
	return ts, nil
}

// prepareRemote makes t ready for injected syscalls on the dump side: the
// gadget goes at codeAddr (an executable page of the task; its bytes are
// saved) and a private scratch mapping holds arguments. undo removes both
// and must run before the task's memory is read.
func prepareRemote(t *ptrace.Task, codeAddr uint64) (*remote, func(), error) {
	saved := make([]byte, 8)
	if err := t.Peek(codeAddr, saved); err != nil {
		return nil, nil, err
	}
	patched := append(append([]byte{}, ptrace.Gadget...), saved[len(ptrace.Gadget):]...)
	if err := t.Poke(codeAddr, patched); err != nil {
		return nil, nil, err
	}
	r := &remote{t: t, gadget: codeAddr}
	restoreCode := func() { t.Poke(codeAddr, saved) }
	addr, err := r.call("mmap", unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		restoreCode()
		return nil, nil, err
	}
	r.scratch, r.size = addr, scratchSize
	undo := func() {
		r.call("munmap", unix.SYS_MUNMAP, addr, scratchSize)
		restoreCode()
	}
	return r, undo, nil
}

func (d *dumper) dumpMM(pid int, st *procfs.Stat, brk uint64) (*pb.MmEntry, []mem.Run, []*pb.CrhookVmaEntry, error) {
	vmas, err := procfs.ReadMaps(pid)
	if err != nil {
		return nil, nil, nil, err
	}
	auxv, err := procfs.ReadAuxv(pid)
	if err != nil {
		return nil, nil, nil, err
	}
	exe, err := os.Readlink(procfs.Path(pid, "exe"))
	if err != nil {
		return nil, nil, nil, err
	}
	if strings.HasSuffix(exe, " (deleted)") {
		return nil, nil, nil, fmt.Errorf("executable %s: deleted executables: %w", exe, ErrNotSupported)
	}
	exeID, err := d.files.pathFile(exe, unix.O_RDONLY)
	if err != nil {
		return nil, nil, nil, err
	}
	mm := &pb.MmEntry{
		MmStartCode:  proto.Uint64(st.StartCode),
		MmEndCode:    proto.Uint64(st.EndCode),
		MmStartData:  proto.Uint64(st.StartData),
		MmEndData:    proto.Uint64(st.EndData),
		MmStartStack: proto.Uint64(st.StartStack),
		MmStartBrk:   proto.Uint64(st.StartBrk),
		MmBrk:        proto.Uint64(brk),
		MmArgStart:   proto.Uint64(st.ArgStart),
		MmArgEnd:     proto.Uint64(st.ArgEnd),
		MmEnvStart:   proto.Uint64(st.EnvStart),
		MmEnvEnd:     proto.Uint64(st.EnvEnd),
		ExeFileId:    proto.Uint32(exeID),
		MmSavedAuxv:  auxv,
	}

	pages, err := d.dir.CreatePages(pagesName(pid))
	if err != nil {
		return nil, nil, nil, err
	}
	defer pages.Close()
	bw := newBufWriter(pages)
	md, err := mem.NewDumper(pid, bw)
	if err != nil {
		return nil, nil, nil, err
	}
	defer md.Close()
	var runs []mem.Run
	var extra []*pb.CrhookVmaEntry
	for _, v := range vmas {
		e, err := d.vmaEntry(pid, v, st, brk)
		if err != nil {
			return nil, nil, nil, err
		}
		if e == nil {
			continue
		}
		mm.Vmas = append(mm.Vmas, e)
		extra = append(extra, &pb.CrhookVmaEntry{Start: proto.Uint64(v.Start), VmFlags: proto.String(v.FlagsText)})
		r, err := md.Dump(v, mem.PolicyFor(v))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("dump memory %s: %w", v.Line(), err)
		}
		runs = append(runs, r...)
	}
	if err := md.Flush(); err != nil {
		return nil, nil, nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, nil, err
	}
	d.stats.PagesScanned += md.Stats.PagesScanned
	d.stats.PagesSkipped += md.Stats.PagesZero
	d.stats.PagesWritten += md.Stats.PagesWritten
	return mm, runs, extra, nil
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
func (d *dumper) vmaEntry(pid int, v *procfs.VMA, st *procfs.Stat, brk uint64) (*pb.VmaEntry, error) {
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
	cwdID, err := d.files.pathFile(cwd, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	rootID, err := d.files.pathFile(root, unix.O_RDONLY|unix.O_DIRECTORY)
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
