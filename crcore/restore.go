//go:build linux && amd64

package crcore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/mem"
	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
	pb "github.com/crhook/crhook/proto"
)

var pageSize = os.Getpagesize()

// taskSizeMax is the top of the 47-bit user address space.
const taskSizeMax = 0x7ffffffff000

var atFdcwd = func() uint64 { v := int64(unix.AT_FDCWD); return uint64(v) }()

// Restore brings back the tree in opts.ImageDir. The restored root is a
// child of the calling process and runs when Restore returns. A restore
// that fails leaves no process behind.
func Restore(ctx context.Context, opts RestoreOptions) (*Restored, error) {
	var res *Restored
	err := onLockedThread(func() error {
		var err error
		res, err = restore(ctx, opts, logOrDiscard(opts.Log))
		return err
	})
	return res, err
}

func restore(ctx context.Context, opts RestoreOptions, log *logrus.Entry) (*Restored, error) {
	start := time.Now()
	imgs, err := loadImages(opts.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", opts.ImageDir, err)
	}
	defer imgs.dir.Close()
	if len(imgs.tree) != 1 {
		return nil, fmt.Errorf("restore %s: %d processes: process trees: %w", opts.ImageDir, len(imgs.tree), ErrNotSupported)
	}
	root := imgs.tasks[int(imgs.tree[0].GetPid())]
	if n := len(imgs.tree[0].GetThreads()); n != 1 {
		return nil, fmt.Errorf("restore %s: %d threads: %w", opts.ImageDir, n, ErrNotSupported)
	}
	if err := imgs.preflight(root); err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", root.pid, err)
	}
	wait := opts.PidWait
	if wait == 0 {
		wait = 3 * time.Second
	}

	var cl cleanup
	defer cl.run()
	stdio := [3]uintptr{0, 1, 2}
	for i, f := range []interface{ Fd() uintptr }{opts.Stdin, opts.Stdout, opts.Stderr} {
		if f != nil {
			stdio[i] = f.Fd()
		}
	}
	t, gadget, err := spawnTask(root.pid, stdio, wait, &cl)
	if err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", root.pid, err)
	}
	log.WithField("pid", root.pid).Debug("husk ready")
	var st Stats
	if err := imgs.build(ctx, t, gadget, root, &st, log); err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", root.pid, err)
	}
	cl.release()
	st.TotalTime = time.Since(start)
	log.WithFields(logrus.Fields{"pid": root.pid, "pages": st.PagesRestored}).Info("restored")
	return &Restored{Pid: root.pid, Stats: st}, nil
}

// preflight checks, before any process exists, what can be checked: the
// files the task needs are there.
func (s *imageSet) preflight(ti *taskImage) error {
	need := []uint32{ti.mm.GetExeFileId(), ti.fs.GetCwdId()}
	for _, v := range ti.mm.GetVmas() {
		if v.GetStatus()&(vmaFilePrivate|vmaFileShared) != 0 {
			need = append(need, uint32(v.GetShmid()))
		}
	}
	for _, fd := range ti.fds {
		if fd.GetType() == pb.FdTypes_REG {
			need = append(need, fd.GetId())
		}
	}
	for _, id := range need {
		f, ok := s.files[id]
		if !ok || f.GetReg() == nil {
			return fmt.Errorf("files.img: no regular file with id %d: %w", id, ErrBadImage)
		}
		name := f.GetReg().GetName()
		if !strings.HasPrefix(name, "/") {
			return fmt.Errorf("files.img: file %d has a relative path %q: %w", id, name, ErrBadImage)
		}
		if _, err := os.Lstat(name); err != nil {
			return fmt.Errorf("file %d needed by the image: %w", id, err)
		}
	}
	return nil
}

// spawnTask creates a stopped, traced, empty-handed process with the given
// pid, a child of ours: a husk is exec'd stopped (it never runs an
// instruction) and clones the task with clone3(set_tid) and CLONE_PARENT.
// Precondition: OS thread locked.
func spawnTask(pid int, stdio [3]uintptr, wait time.Duration, cl *cleanup) (*ptrace.Task, uint64, error) {
	h, regs, err := startHusk(stdio)
	if err != nil {
		return nil, 0, err
	}
	hpid := h.Tid
	defer killAndReap(h)
	gadget := regs.Rip
	if err := h.Poke(gadget, ptrace.Gadget); err != nil {
		return nil, 0, err
	}
	// clone_args and the pid array go below the husk's stack pointer.
	argAddr := (regs.Rsp - 4096) &^ 15
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, kabi.CloneArgs{
		Flags:      unix.CLONE_PARENT,
		SetTid:     argAddr + kabi.SizeofCloneArgs,
		SetTidSize: 1,
	})
	binary.Write(&buf, binary.LittleEndian, int32(pid))
	if err := writeMem(hpid, argAddr, buf.Bytes()); err != nil {
		return nil, 0, err
	}
	deadline := time.Now().Add(wait)
	var child int
	for {
		ret, err := h.Syscall(gadget, unix.SYS_CLONE3, argAddr, kabi.SizeofCloneArgs)
		if err != nil {
			return nil, 0, err
		}
		if e := ptrace.Errno("clone3", ret); e != nil {
			if errors.Is(e, unix.EEXIST) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if errors.Is(e, unix.EEXIST) {
				holder, _ := os.ReadFile(procfs.Path(pid, "comm"))
				return nil, 0, fmt.Errorf("pid %d is used by %q (waited %v): %w", pid, strings.TrimSpace(string(holder)), wait, ErrPidTaken)
			}
			if errors.Is(e, unix.EPERM) {
				return nil, 0, fmt.Errorf("choose pid %d: %w (clone3 set_tid needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the pid namespace)", pid, e)
			}
			return nil, 0, fmt.Errorf("create task %d: %w", pid, e)
		}
		child = int(ret)
		break
	}
	if child != pid {
		unix.Kill(child, unix.SIGKILL)
		return nil, 0, fmt.Errorf("create task %d: got pid %d", pid, child)
	}
	t := ptrace.Adopt(child)
	cl.add(func() { killAndReap(t) })
	// The auto-attached child starts in a SIGSTOP stop.
	for {
		ws, err := t.WaitStop()
		if err != nil {
			return nil, 0, err
		}
		if ws.Stopped() && (ws.StopSignal() == unix.SIGSTOP || ptrace.Event(ws) == kabi.PTRACE_EVENT_STOP) {
			break
		}
		if err := t.Cont(0); err != nil {
			return nil, 0, err
		}
	}
	return t, gadget, nil
}

// startHusk execs a husk: a copy of our own binary, traced from its first
// instruction, which it never gets to run.
// Precondition: OS thread locked.
func startHusk(stdio [3]uintptr) (*ptrace.Task, unix.PtraceRegs, error) {
	var regs unix.PtraceRegs
	hpid, err := syscall.ForkExec("/proc/self/exe", []string{"crhook-husk"}, &syscall.ProcAttr{
		Env:   []string{},
		Files: stdio[:],
		Sys:   &syscall.SysProcAttr{Ptrace: true, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		return nil, regs, fmt.Errorf("start husk: %w", err)
	}
	h := ptrace.Adopt(hpid)
	ws, err := h.WaitStop()
	if err != nil {
		return nil, regs, fmt.Errorf("start husk: %w", err)
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		killAndReap(h)
		return nil, regs, fmt.Errorf("start husk: unexpected status %#x", uint32(ws))
	}
	opts := unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACECLONE |
		unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK
	if err := h.SetOptions(opts); err != nil {
		killAndReap(h)
		return nil, regs, err
	}
	if regs, err = h.GetRegs(); err != nil {
		killAndReap(h)
		return nil, regs, err
	}
	return h, regs, nil
}

func killAndReap(t *ptrace.Task) {
	if unix.Kill(t.Tid, unix.SIGKILL) != nil {
		return
	}
	for {
		_, err := t.WaitStop()
		if err != nil {
			return
		}
		t.Cont(0)
	}
}

// build turns the fresh task t into the image's task ti.
func (s *imageSet) build(ctx context.Context, t *ptrace.Task, gadget0 uint64, ti *taskImage, st *Stats, log *logrus.Entry) error {
	vmas := ti.mm.GetVmas()
	scratch, err := chooseScratch(t.Tid, vmas)
	if err != nil {
		return err
	}
	r := &remote{t: t, gadget: gadget0}
	if _, err := r.call("mmap scratch", unix.SYS_MMAP, scratch, scratchSize,
		unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0); err != nil {
		return err
	}
	if err := writeMem(t.Tid, scratch, ptrace.Gadget); err != nil {
		return err
	}
	r.gadget, r.scratch, r.size = scratch, scratch+64, scratchSize-64

	// Empty the address space but for the scratch page.
	if _, err := r.call("munmap", unix.SYS_MUNMAP, 0, scratch); err != nil {
		return err
	}
	if _, err := r.call("munmap", unix.SYS_MUNMAP, scratch+scratchSize, taskSizeMax-(scratch+scratchSize)); err != nil {
		return err
	}
	if err := s.mapVdso(r, vmas); err != nil {
		return err
	}
	fileFds := map[uint32]uint64{}
	closeAll := func() {
		for _, fd := range fileFds {
			r.call("close", unix.SYS_CLOSE, fd)
		}
		clear(fileFds)
	}
	defer closeAll()
	openFile := func(id uint32, flags uint32) (uint64, error) {
		if fd, ok := fileFds[id]; ok {
			return fd, nil
		}
		f := s.files[id].GetReg()
		r.reset()
		p, err := r.cstring(f.GetName())
		if err != nil {
			return 0, err
		}
		fd, err := r.call("open "+f.GetName(), unix.SYS_OPENAT, atFdcwd, p, uint64(flags|unix.O_CLOEXEC), 0)
		if err != nil {
			return 0, err
		}
		fileFds[id] = fd
		return fd, nil
	}

	// Map every VMA. A VMA the kernel accounts (VM_ACCOUNT: it was
	// writable once) is mapped writable, filled, then protected; one it
	// does not is mapped with its final protection and filled through
	// /proc/PID/mem, so the kernel keeps the two kinds apart as it did.
	vmFlags := map[uint64]string{}
	for _, e := range ti.ext.GetVmas() {
		vmFlags[e.GetStart()] = e.GetVmFlags()
	}
	type fix struct{ start, len, prot uint64 }
	var fixes []fix
	force := map[uint64]bool{}
	for _, v := range vmas {
		status := v.GetStatus()
		if status&(vmaAreaVdso|vmaAreaVvar) != 0 {
			continue
		}
		prot := uint64(v.GetProt())
		flags := uint64(v.GetFlags()) | unix.MAP_FIXED
		mprot := prot
		fd := ^uint64(0)
		shared := v.GetFlags()&unix.MAP_SHARED != 0
		fl, known := vmFlags[v.GetStart()]
		accounted := !known || strings.Contains(" "+fl+" ", " ac ")
		switch {
		case shared && status&vmaFileShared != 0:
		case accounted || prot&unix.PROT_WRITE != 0:
			mprot |= unix.PROT_READ | unix.PROT_WRITE
		default:
			force[v.GetStart()] = true
		}
		if status&(vmaFilePrivate|vmaFileShared) != 0 {
			f := s.files[uint32(v.GetShmid())].GetReg()
			fd, err = openFile(uint32(v.GetShmid()), f.GetFlags()&unix.O_ACCMODE)
			if err != nil {
				return err
			}
		}
		if _, err := r.call(fmt.Sprintf("mmap %#x-%#x", v.GetStart(), v.GetEnd()), unix.SYS_MMAP,
			v.GetStart(), v.GetEnd()-v.GetStart(), mprot, flags, fd, v.GetPgoff()); err != nil {
			return err
		}
		if mprot != prot {
			fixes = append(fixes, fix{v.GetStart(), v.GetEnd() - v.GetStart(), prot})
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// Memory contents.
	pages, err := s.dir.OpenPages(pagesName(int(ti.pages)))
	if err != nil {
		return err
	}
	runs := make([]mem.Run, len(ti.runs))
	for i, run := range ti.runs {
		runs[i] = run
		for _, v := range vmas {
			if v.GetStart() <= run.Addr && run.Addr < v.GetEnd() {
				runs[i].Force = force[v.GetStart()]
				break
			}
		}
	}
	ms, err := mem.Fill(t.Tid, runs, pages)
	pages.Close()
	if err != nil {
		return fmt.Errorf("fill memory: %w", err)
	}
	st.PagesRestored = ms.PagesWritten
	for _, f := range fixes {
		if _, err := r.call("mprotect", unix.SYS_MPROTECT, f.start, f.len, f.prot); err != nil {
			return err
		}
	}
	for _, v := range vmas {
		for adv := 0; adv < 64; adv++ {
			if v.GetMadv()&(1<<adv) != 0 {
				if _, err := r.call("madvise", unix.SYS_MADVISE, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(adv)); err != nil {
					return err
				}
			}
		}
	}

	// mm fields, with the executable.
	exeFd := ^uint64(0)
	if !s.keepExe {
		if exeFd, err = openFile(ti.mm.GetExeFileId(), unix.O_RDONLY); err != nil {
			return err
		}
	} else {
		log.WithField("pid", ti.pid).Warn("no CAP_CHECKPOINT_RESTORE in the target: /proc/PID/exe keeps naming the program the runtime started")
	}
	if err := setMM(r, ti.mm, exeFd); err != nil {
		return err
	}
	closeAll()

	if err := s.restoreFds(r, ti); err != nil {
		return err
	}
	if err := s.restoreTaskState(r, ti); err != nil {
		return err
	}
	return finish(r, ti)
}

// chooseScratch finds room for the scratch area free both in the image and
// in the fresh task.
func chooseScratch(pid int, vmas []*pb.VmaEntry) (uint64, error) {
	cur, err := procfs.ReadMapsFast(pid)
	if err != nil {
		return 0, err
	}
	type rng struct{ s, e uint64 }
	var used []rng
	for _, v := range vmas {
		used = append(used, rng{v.GetStart(), v.GetEnd()})
	}
	for _, v := range cur {
		used = append(used, rng{v.Start, v.End})
	}
	sort.Slice(used, func(i, j int) bool { return used[i].s < used[j].s })
	const guard = 1 << 20
	cand := uint64(1 << 24) // above mmap_min_addr and the usual low mappings
	for _, u := range used {
		if cand+scratchSize+guard <= u.s {
			return cand, nil
		}
		if u.e+guard > cand {
			cand = (u.e + guard + 0xfff) &^ 0xfff
		}
	}
	if cand+scratchSize < taskSizeMax {
		return cand, nil
	}
	return 0, errors.New("no room for the scratch area")
}

func (s *imageSet) mapVdso(r *remote, vmas []*pb.VmaEntry) error {
	var vvar, vdso *pb.VmaEntry
	for _, v := range vmas {
		st := v.GetStatus()
		if st&vmaAreaVvar != 0 && (vvar == nil || v.GetStart() < vvar.GetStart()) {
			vvar = v
		}
		if st&vmaAreaVdso != 0 {
			vdso = v
		}
	}
	if vdso == nil {
		return nil
	}
	base := vdso.GetStart()
	if vvar != nil && vvar.GetStart() < base {
		base = vvar.GetStart()
	}
	if _, err := r.call("arch_prctl(ARCH_MAP_VDSO_64)", unix.SYS_ARCH_PRCTL, kabi.ARCH_MAP_VDSO_64, base); err != nil {
		return err
	}
	now, err := procfs.ReadMapsFast(r.pid())
	if err != nil {
		return err
	}
	for _, v := range now {
		if v.Path == "[vdso]" {
			if v.Start != vdso.GetStart() || v.End != vdso.GetEnd() {
				return fmt.Errorf("vdso landed at %#x-%#x, the image has it at %#x-%#x (another kernel?): %w",
					v.Start, v.End, vdso.GetStart(), vdso.GetEnd(), ErrNotSupported)
			}
			return nil
		}
	}
	return errors.New("vdso not mapped")
}

func setMM(r *remote, mm *pb.MmEntry, exeFd uint64) error {
	auxv := mm.GetMmSavedAuxv()
	ab := make([]byte, 8*len(auxv))
	for i, w := range auxv {
		binary.LittleEndian.PutUint64(ab[8*i:], w)
	}
	r.reset()
	auxAddr, err := r.put(ab)
	if err != nil {
		return err
	}
	m := kabi.PrctlMMMap{
		StartCode: mm.GetMmStartCode(), EndCode: mm.GetMmEndCode(),
		StartData: mm.GetMmStartData(), EndData: mm.GetMmEndData(),
		StartBrk: mm.GetMmStartBrk(), Brk: mm.GetMmBrk(),
		StartStack: mm.GetMmStartStack(),
		ArgStart:   mm.GetMmArgStart(), ArgEnd: mm.GetMmArgEnd(),
		EnvStart: mm.GetMmEnvStart(), EnvEnd: mm.GetMmEnvEnd(),
		Auxv: auxAddr, AuxvSize: uint32(len(ab)), ExeFD: uint32(exeFd),
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, m)
	addr, err := r.put(b.Bytes())
	if err != nil {
		return err
	}
	if _, err := r.call("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, kabi.SizeofPrctlMMMap, 0); err != nil {
		return err
	}
	return nil
}
