//go:build linux && amd64

package crcore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
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
		mask, pinned := pinTracer()
		var err error
		res, err = restore(ctx, opts, logOrDiscard(opts.Log), func(rs *restorer) {
			if pinned {
				rs.affinity = &mask
			}
		})
		return err
	})
	return res, err
}

// setAffinity gives thread tid the CPU mask. Where the kernel refuses it
// (none of its CPUs left to the thread's cpuset) every CPU is asked for,
// which the kernel narrows to the cpuset, as it does for a task that
// inherited a mask it cannot keep.
func setAffinity(tid int, mask *unix.CPUSet) error {
	err := unix.SchedSetaffinity(tid, mask)
	if errors.Is(err, unix.EINVAL) {
		var all unix.CPUSet
		for cpu := range 1024 {
			all.Set(cpu)
		}
		err = unix.SchedSetaffinity(tid, &all)
	}
	if err != nil {
		return os.NewSyscallError("sched_setaffinity", err)
	}
	return nil
}

// pinTracer binds the calling thread, crhook's tracer (locked, and never
// returned to the scheduler: onLockedThread), to the first CPU it may run
// on, and returns the mask it had. Every restored task descends from a
// husk the tracer starts, so they share that CPU until finish puts their
// mask back: a ptrace stop and resume then needs no wake-up of another
// CPU (a halted vCPU here), while the pages are copied on the others.
// A tree of 200, restore medians over two alternated series: 0.55 and
// 0.59 s before, 0.49 and 0.51 s pinned.
// ok is false when the mask cannot be read or set; nothing is pinned.
func pinTracer() (mask unix.CPUSet, ok bool) {
	if err := unix.SchedGetaffinity(0, &mask); err != nil || mask.Count() < 2 {
		return mask, false
	}
	var one unix.CPUSet
	for cpu := range 1024 {
		if mask.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	return mask, unix.SchedSetaffinity(0, &one) == nil
}

// restorer rebuilds a tree of tasks. Precondition for its methods: OS
// thread locked.
type restorer struct {
	ctx     context.Context
	s       *imageSet
	log     *logrus.Entry
	st      Stats
	wait    time.Duration
	scratch uint64 // scratch area, at the same address in every task
	tasks   []*rtask
	holders map[uint32]fdHolder // file id -> a restored task holding it
	cl      cleanup
	// keepStdio: the root's fds 0-2 are the new container's, whatever
	// the old one's were.
	keepStdio bool
	// nsTarget is a task of the pid namespace the tree is restored in,
	// when that is not ours (a container): pids are then chosen through
	// pids if the tasks may not choose them themselves.
	nsTarget int
	pids     *pidSetter
	// affinity, if set, is the CPU mask the restored threads get back
	// before they run: until then they share the tracer's CPU
	// (pinTracer).
	affinity *unix.CPUSet
	shm      shmemRestore // shared memory objects made so far (shmem.go)
	progress *Progress
	// fills bounds and tracks the page copies running in the background.
	fills   sync.WaitGroup
	fillSem chan struct{}
	fillMu  sync.Mutex
	// shmMarked: SysV segments to mark for removal once attached.
	shmMarked []int
	// shmSize: each restored SysV segment's size, by id.
	shmSize map[uint64]uint64
	// pagesCache holds small parents' pages (parentPages).
	pagesCache map[*taskImage][]byte
	sess       sessionRestore // helper tasks for sessions and groups (sessions.go)
	// fsLeft: by fs_id, the tasks sharing that fs info still to finish
	// (restoreRoot).
	fsLeft map[uint32]int
	// born: what every restored thread was born with, once known
	// (restoreCreds, restoreLoginuid).
	born  birthState
	shape *shapePlan // checkShape's answer for the images
	// outsidePgid: the restorer's process group, which the images'
	// groups from outside stand for (create, groups).
	outsidePgid int
}

// rtask is a task being restored.
type rtask struct {
	// extraClosed: the fds its image does not list are closed
	// (completeMemory).
	extraClosed bool
	ti          *taskImage
	hostPid     int // its pid as we see it (differs in a container)
	t           *ptrace.Task
	r           *remote
	parent      *rtask
	threads     []*rthread // the leader's included, first
	// table is the fd table the task holds once its fds are in place,
	// leftovers included: what a child cloned from it inherits.
	table map[uint32]uint32
	// filled reports the end of the copy of the task's pages, which runs
	// while the rest of the tree is built; memFixes are the protections
	// and advice to apply once it is done (completeMemory).
	filled   chan error
	fillErr  error
	memFixes *batch
	// memReady: the task's pages are all in place; a child cloned now
	// inherits them.
	memReady bool
	// setsidLater: the task leads a session in the images but has
	// children in the session it was born in, cloned before it calls
	// setsid (sessions.go, cloneChildren).
	setsidLater bool
	// memSrc is the task whose memory this one was cloned with, when
	// that is not its parent's (an orphan rebuilt under its session's
	// leader, sessions.go).
	memSrc *rtask
	// filesSrc: the sibling whose fd table this task shares, restored
	// after this task was cloned; create takes its table from there.
	filesSrc *rtask
	// lends: what the task lends its children while it clones them
	// (checkShape's lent), and lentFiles, the first child cloned
	// sharing the lent fd table, which restores its fds.
	lends     *lentObjs
	lentFiles *rtask
	// spare: for a task cloned from a spare helper (an orphan, or one
	// born under another), that helper, its parent until the helper
	// exits (endHelpers).
	spare *rtask
	// reaper, orphans (a spare helper's, sessions.go): the task its
	// orphans are to be reparented to when it exits, and those orphans.
	reaper  *rtask
	orphans []*rtask
	// holds (a helper's): the task it was cloned from, whose fd table
	// and fs info it shares and passes on (objectsOf).
	holds *rtask
	// borrowers: its children cloned right after it, before it was
	// built: with what it shared with its parent for a while
	// (cloneBorrowers), or before its setsid (cloneEarly).
	borrowers []*rtask
}

type rthread struct {
	img *threadImage
	t   *ptrace.Task
}

type fdHolder struct {
	task *rtask
	fd   uint32
}

func newRestorer(ctx context.Context, s *imageSet, opts RestoreOptions, log *logrus.Entry) *restorer {
	wait := opts.PidWait
	if wait == 0 {
		wait = 3 * time.Second
	}
	rs := &restorer{ctx: ctx, s: s, log: log, wait: wait, holders: map[uint32]fdHolder{}, progress: opts.Progress}
	if p := opts.Progress; p != nil {
		var total uint64
		for _, ti := range s.tasks {
			for _, r := range ti.runs {
				total += r.NrPages * uint64(pageSize)
			}
		}
		p.Total.Store(total)
	}
	return rs
}

func restore(ctx context.Context, opts RestoreOptions, log *logrus.Entry, setup ...func(*restorer)) (*Restored, error) {
	start := time.Now()
	imgs, err := loadDeferringPages(opts.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", opts.ImageDir, err)
	}
	defer imgs.dir.Close()
	log.WithFields(logrus.Fields{"tasks": len(imgs.tasks), "took": time.Since(start)}).Debug("images verified and loaded")
	root := imgs.tasks[int(imgs.tree[0].GetPid())]
	if root.zombie() {
		return nil, fmt.Errorf("restore %s: the root is a zombie: %w", opts.ImageDir, ErrBadImage)
	}
	if root.pid == 1 && !opts.NewPidNS {
		return nil, fmt.Errorf("restore %s: the root was its pid namespace's init (pid 1): restore it into a new pid namespace (--pidns new) or a container (crhook's OCI hook): %w", opts.ImageDir, ErrNotSupported)
	}
	if opts.NewPidNS && root.pid != 1 {
		return nil, fmt.Errorf("restore %s: a new pid namespace needs an init, and the image's root was pid %d, not 1: %w", opts.ImageDir, root.pid, ErrNotSupported)
	}
	checked := newPreflightDone()
	for _, ti := range imgs.tasks {
		if err := imgs.preflight(ti, checked); err != nil {
			return nil, fmt.Errorf("restore pid %d: %w", ti.pid, err)
		}
	}
	plan, err := imgs.shape()
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", opts.ImageDir, err)
	}
	rs := newRestorer(ctx, imgs, opts, log)
	for _, f := range setup {
		f(rs)
	}
	if spoilPlan != nil {
		spoilPlan(plan)
	}
	rs.shape = plan
	defer rs.cl.run()
	stdio := [3]uintptr{0, 1, 2}
	for i, f := range []interface{ Fd() uintptr }{opts.Stdin, opts.Stdout, opts.Stderr} {
		if f != nil {
			stdio[i] = f.Fd()
		}
	}
	var t *ptrace.Task
	var gadget uint64
	if opts.NewPidNS {
		// The husk itself is the new namespace's init: the root.
		var regs unix.PtraceRegs
		if t, regs, err = startHuskWith(stdio, true, syscall.CLONE_NEWPID); err == nil {
			gadget = regs.Rip
			err = t.Poke(gadget, ptrace.Gadget)
		}
		if t != nil {
			rs.nsTarget = t.Tid
		}
	} else {
		t, gadget, err = spawnTask(root.pid, stdio, rs.wait)
	}
	if err != nil {
		if t != nil {
			killAndReap(t)
		}
		return nil, fmt.Errorf("restore pid %d: %w", root.pid, err)
	}
	rt := &rtask{ti: root, hostPid: t.Tid, t: t}
	rs.cl.add(func() { killAndReap(t) })
	faultPoint("restore:after-husk")
	log.WithField("pid", root.pid).Debug("husk ready")
	if err := rs.run(rt, gadget); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	rs.cl.release()
	rs.st.TotalTime = time.Since(start)
	log.WithFields(logrus.Fields{"pid": root.pid, "tasks": len(rs.tasks), "pages": rs.st.PagesRestored}).Info("restored")
	return &Restored{Pid: rt.hostPid, Stats: rs.st}, nil
}

// run rebuilds the whole tree from its root, a task stopped with a
// syscall gadget at gadget0 (a fresh husk or a just-exec'd process).
func (rs *restorer) run(root *rtask, gadget0 uint64) error {
	// Every task's registers are set last (finish): injections need not
	// put them back (ptrace.Task.Scratch).
	root.t.Scratch = true
	// A failed restore must not return with copies still writing.
	defer rs.fills.Wait()
	var all []*pb.VmaEntry
	for _, ti := range rs.s.tasks {
		all = append(all, ti.mm.GetVmas()...)
	}
	scratch, err := chooseScratch(root.hostPid, all)
	if err != nil {
		return err
	}
	rs.scratch = scratch
	r := &remote{t: root.t, gadget: gadget0}
	if _, err := r.call("mmap scratch", unix.SYS_MMAP, scratch, scratchSize,
		unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0); err != nil {
		return err
	}
	if err := writeMem(root.hostPid, scratch, ptrace.Gadget); err != nil {
		return err
	}
	r.gadget, r.scratch, r.size = scratch, scratch+64, scratchSize-64
	// Empty the address space but for the scratch area; children cloned
	// from here inherit just that.
	if _, err := r.call("munmap", unix.SYS_MUNMAP, 0, scratch); err != nil {
		return err
	}
	if _, err := r.call("munmap", unix.SYS_MUNMAP, scratch+scratchSize, taskSizeMax-(scratch+scratchSize)); err != nil {
		return err
	}
	root.r = r
	// The restorer's standard streams stand at 0-2 for the root's
	// external ones.
	root.table = map[uint32]uint32{}
	for _, e := range root.ti.fds {
		if e.GetFd() <= 2 && (e.GetType() == pb.FdTypes_EXT || rs.keepStdio) {
			root.table[e.GetFd()] = e.GetId()
		}
	}
	if err := rs.restoreSysv(root); err != nil {
		return err
	}
	start := time.Now()
	if err := rs.create(root); err != nil {
		return err
	}
	rs.log.WithFields(logrus.Fields{"tasks": len(rs.tasks), "took": time.Since(start)}).Debug("tree created")
	for sid, left := range rs.sess.orphans {
		if len(left) > 0 {
			return fmt.Errorf("pid %d is in session %d, whose leader was not rebuilt as a live task: %w", left[0].ti.pid, sid, ErrNotSupported)
		}
	}
	if len(rs.tasks) != len(rs.s.tasks) {
		// A plan that leaves a task out is crhook's bug; say so
		// rather than restore part of the tree.
		made := map[int]bool{}
		for _, t := range rs.tasks {
			made[t.ti.pid] = true
		}
		for pid := range rs.s.tasks {
			if !made[pid] {
				return fmt.Errorf("pid %d of the images was not created (%d of %d tasks): crhook's plan for the tree is wrong", pid, len(rs.tasks), len(rs.s.tasks))
			}
		}
	}
	for host, left := range rs.sess.births {
		if len(left) > 0 {
			return fmt.Errorf("pid %d was to be born under %d, which was not rebuilt as a live task: %w", left[0].ti.pid, host, ErrNotSupported)
		}
	}
	if err := rs.checkRestoredSharing(); err != nil {
		return err
	}
	if err := rs.markSysvRemoved(root); err != nil {
		return err
	}
	if err := rs.groups(); err != nil {
		return err
	}
	if err := rs.endHelpers(); err != nil {
		return err
	}
	// Zombies die last, once nothing else needs them.
	for _, t := range rs.tasks {
		if t.ti.zombie() {
			if err := rs.die(t); err != nil {
				return fmt.Errorf("pid %d: %w", t.ti.pid, err)
			}
		}
	}
	start = time.Now()
	// No task runs before every pages file has been checked.
	for _, t := range rs.tasks {
		if err := rs.waitFill(t); err != nil {
			return fmt.Errorf("pid %d: %w", t.ti.pid, err)
		}
	}
	if err := rs.checkPages(); err != nil {
		return err
	}
	rs.fsLeft = map[uint32]int{}
	for _, t := range rs.tasks {
		if id := t.ti.core.GetIds().GetFsId(); !t.ti.zombie() && id != 0 {
			rs.fsLeft[id]++
		}
	}
	for i := len(rs.tasks) - 1; i >= 0; i-- {
		t := rs.tasks[i]
		if t.ti.zombie() {
			continue
		}
		if err := rs.finish(t); err != nil {
			return fmt.Errorf("pid %d: %w", t.ti.pid, err)
		}
	}
	rs.log.WithField("took", time.Since(start)).Debug("tree finished")
	return nil
}

// create rebuilds task t and, recursively, its children. On entry t exists
// with an empty address space but for the scratch area, and the fds and
// session it inherited from its parent.
func (rs *restorer) create(t *rtask) error {
	rs.tasks = append(rs.tasks, t)
	pid := t.ti.pid
	if err := rs.ctx.Err(); err != nil {
		return err
	}
	if t.ti.zombie() {
		// A zombie leader's session members orphaned elsewhere are
		// cloned from it while it lives on for the restore. It holds
		// the memory of the task it was cloned from, unchanged.
		memSrc := t.parent
		if t.memSrc != nil {
			memSrc = t.memSrc
		}
		orphans, err := rs.adoptOrphans(t, memSrc, pid)
		if err != nil {
			return err
		}
		for _, o := range orphans {
			if err := rs.create(o); err != nil {
				return err
			}
		}
		return nil
	}
	if t.parent == nil {
		// The group the root is born in, the restorer's, as the tree
		// sees it (0 outside its pid namespace): groups from outside
		// are that one, for a task that must go back to it (groups).
		if rs.rejoinsOutside() {
			g, err := t.r.call("getpgid", unix.SYS_GETPGID, 0)
			if err != nil {
				return fmt.Errorf("pid %d: %w", pid, err)
			}
			rs.outsidePgid = int(g)
		}
		// A group of the tree the root joined, whose leader has
		// exited, gets its helper from the root.
		if err := rs.groupHelper(t); err != nil {
			return err
		}
	}
	if t.ti.sid() == pid && t.parent == nil {
		// A child enters its session as it is cloned; the root
		// here, or once it has cloned its children of the session
		// it was started in (checkShape's pre).
		if rs.shape.pre[pid] != 0 {
			t.setsidLater = true
		} else if err := enterSession(t); err != nil {
			return err
		}
	}
	if t.filesSrc != nil {
		t.table = maps.Clone(t.filesSrc.table)
	}
	if err := rs.dropLentTable(t); err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	if err := rs.restoreFds(t); err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	// Memory before children: they inherit it, copy-on-write
	// (inherit.go).
	if err := rs.buildMemory(t); err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	faultPoint("restore:after-memory")
	// Every child is cloned, in its session (sessions.go), before any
	// is built.
	children, err := rs.cloneChildren(t)
	if err != nil {
		return err
	}
	orphans, err := rs.adoptOrphans(t, t, pid)
	if err != nil {
		return err
	}
	hosted, err := rs.bearUnder(t)
	if err != nil {
		return err
	}
	children = append(children, orphans...)
	for _, child := range append(children, hosted...) {
		if err := rs.create(child); err != nil {
			return err
		}
	}
	// A task of one thread gets its thread's state in the batch of
	// its own.
	var only *threadImage
	if len(t.ti.threads) == 1 {
		only = &t.ti.threads[0]
	}
	if err := rs.s.restoreTaskState(t.r, t.ti, only); err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	if err := rs.createThreads(t, only == nil); err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	return nil
}

// cloneChild creates the image's task c as a child of p, with its pid.
func (rs *restorer) cloneChild(p *rtask, c *taskImage) (*rtask, error) {
	lent := lentTo(p, c)
	flags := sharedWith(p.ti, c) | rs.borrows(p.ti, c) | lent | rs.lentAtBirth(p, c)
	if c.zombie() {
		flags = zombieHolds
	}
	t, hostPid, err := rs.clone(p, c.pid, flags, uint64(unix.SIGCHLD))
	if err != nil {
		return nil, err
	}
	child := &rtask{ti: c, hostPid: hostPid, t: t, parent: p}
	if c.zombie() {
		child.holds = p
	}
	rs.startLending(child)
	child.r = p.r.forTask(t)
	child.table = maps.Clone(p.table)
	if lent&unix.CLONE_FILES != 0 {
		// The first to be built restores the lent table's fds.
		if p.lentFiles == nil {
			p.lentFiles = child
		} else {
			child.filesSrc = p.lentFiles
		}
	}
	return child, nil
}

// lentAtBirth returns the clone flags for what c lends its children or
// siblings and src holds: c's parent's, which c held and dropped after
// cloning them (checkShape's lendBorrowed, lendToSibling). c is cloned
// sharing it.
func (rs *restorer) lentAtBirth(src *rtask, c *taskImage) uint64 {
	l, ok := rs.shape.lent[c.pid]
	if !ok {
		return 0
	}
	o := objectsOf(src)
	files, fs := o.ti.core.GetIds().GetFilesId(), o.ti.core.GetIds().GetFsId()
	if o.lends != nil && o.lends.files != 0 {
		files = o.lends.files
	}
	if o.lends != nil && o.lends.fs != 0 {
		fs = o.lends.fs
	}
	var fl uint64
	if l.files != 0 && l.files == files {
		fl |= unix.CLONE_FILES
	}
	if l.fs != 0 && l.fs == fs {
		fl |= unix.CLONE_FS
	}
	return fl
}

// dropLentTable has t, which lends an fd table that none of the
// children it is yet to clone (cloneChildren) takes, take a copy of its
// own before its fds are restored: the tasks it lent the table to, its
// siblings and early children, are cloned already, and the first of
// them restores the table's fds (lentFiles) from t's view of it then.
func (rs *restorer) dropLentTable(t *rtask) error {
	l := t.lends
	if l == nil || l.files == 0 || t.ti.core.GetIds().GetFilesId() == l.files {
		return nil
	}
	for _, pid := range rs.shape.order[t.ti.pid] {
		if rs.s.tasks[pid].core.GetIds().GetFilesId() == l.files || rs.shape.lent[pid].files == l.files {
			return nil // cloneChildren drops it
		}
	}
	if _, err := t.r.call("unshare", unix.SYS_UNSHARE, unix.CLONE_FILES); err != nil {
		return fmt.Errorf("keep a copy of the fd table it lent: %w", err)
	}
	t.lends = &lentObjs{fs: l.fs}
	return nil
}

// startLending marks a task that lends its children objects as holding
// them from its birth: the tasks cloned from it before it unshares them
// (cloneChildren) get them too.
func (rs *restorer) startLending(t *rtask) {
	if l, ok := rs.shape.lent[t.ti.pid]; ok {
		t.lends = &l
	}
}

// lentTo returns the clone flags for what t, while it lends its children
// objects it drops after (checkShape's lent), lends c.
func lentTo(t *rtask, c *taskImage) uint64 {
	ids := c.core.GetIds()
	if t.lends == nil || ids == nil {
		return 0
	}
	var fl uint64
	if ids.GetFilesId() == t.lends.files {
		fl |= unix.CLONE_FILES
	}
	if ids.GetFsId() == t.lends.fs {
		fl |= unix.CLONE_FS
	}
	return fl & t.lends.flags()
}

// holdsFor returns the clone flags for what c shares with the objects t
// holds now: its own or, for a helper or zombie, its source's, and what
// a lender lends.
func holdsFor(t *rtask, c *taskImage) uint64 {
	o := objectsOf(t)
	return sharedWith(o.ti, c) | lentTo(o, c)
}

// zombieHolds is how a zombie is cloned: sharing the fd table and fs
// info of the task it is cloned from, which it passes on to the
// siblings cloned from it (a session's members, CLONE_PARENT) until it
// dies, before any task runs; it had none of its own left.
const zombieHolds = unix.CLONE_FILES | unix.CLONE_FS

// sharedWith returns the clone flags for what the images say c shares
// with p (CRIU's kobj ids: equal ids, one object).
func sharedWith(p, c *taskImage) uint64 {
	var fl uint64
	pi, ci := p.core.GetIds(), c.core.GetIds()
	if pi == nil || ci == nil {
		return 0
	}
	if ci.GetFilesId() == pi.GetFilesId() {
		fl |= unix.CLONE_FILES
	}
	if ci.GetFsId() == pi.GetFsId() {
		fl |= unix.CLONE_FS
	}
	return fl
}

// cloneThreads creates the threads imgs in t with their tids, many
// clone3 calls to a batch (batch.go): a thousand threads cost a stop each
// (the clone event) instead of two. After a failure the rest go one at a
// time through clone, which waits for a tid still in use and chooses
// tids from outside in a container.
func (rs *restorer) cloneThreads(t *rtask, imgs []*threadImage, flags uint64) ([]*ptrace.Task, error) {
	const chunk = 128
	var out []*ptrace.Task
	i := 0
	for i < len(imgs) && len(imgs) > 1 {
		n := min(chunk, len(imgs)-i)
		t.r.reset()
		b := t.r.batch()
		var buf bytes.Buffer
		for k := range n {
			argAddr, err := t.r.alloc(kabi.SizeofCloneArgs + 8)
			if err != nil {
				return nil, err
			}
			buf.Reset()
			putLE(&buf, kabi.CloneArgs{
				Flags:      flags,
				SetTid:     argAddr + kabi.SizeofCloneArgs,
				SetTidSize: 1,
			})
			putLE(&buf, int32(imgs[i+k].tid))
			if err := writeMem(t.hostPid, argAddr, buf.Bytes()); err != nil {
				return nil, err
			}
			b.add(fmt.Sprintf("clone3 (thread %d)", imgs[i+k].tid), unix.SYS_CLONE3, argAddr, kabi.SizeofCloneArgs)
		}
		res, err := b.run()
		ev := t.t.Events()
		if len(ev) != len(res) {
			return nil, fmt.Errorf("create threads: %d created, %d clone events", len(res), len(ev))
		}
		for k, ret := range res {
			if int(ret) != imgs[i+k].tid {
				return nil, fmt.Errorf("create thread %d: got tid %d", imgs[i+k].tid, ret)
			}
			pt := ptrace.Adopt(ev[k])
			pt.Scratch = true // its registers are set last (finish)
			rs.cl.add(func() { rs.killUnlessGone(pt) })
			if err := waitFirstStop(pt); err != nil {
				return nil, err
			}
			out = append(out, pt)
		}
		i += len(res)
		if err != nil {
			rs.log.WithError(err).Debug("batched thread creation stopped; going on one at a time")
			break
		}
	}
	for ; i < len(imgs); i++ {
		pt, _, err := rs.clone(t, imgs[i].tid, flags, 0)
		if err != nil {
			return nil, fmt.Errorf("create thread %d: %w", imgs[i].tid, err)
		}
		out = append(out, pt)
	}
	return out, nil
}

// clone runs clone3 in p asking for pid want (set_tid), and returns the
// new task stopped, traced, and its pid as we see it.
func (rs *restorer) clone(p *rtask, want int, flags uint64, exitSignal uint64) (*ptrace.Task, int, error) {
	return rs.cloneWithin(p, want, flags, exitSignal, rs.wait)
}

// cloneWithin is clone waiting at most wait for a pid still in use.
func (rs *restorer) cloneWithin(p *rtask, want int, flags uint64, exitSignal uint64, wait time.Duration) (*ptrace.Task, int, error) {
	var buf bytes.Buffer
	p.r.reset()
	argAddr, err := p.r.alloc(kabi.SizeofCloneArgs + 8)
	if err != nil {
		return nil, 0, err
	}
	putLE(&buf, kabi.CloneArgs{
		Flags:      flags,
		ExitSignal: exitSignal,
		SetTid:     argAddr + kabi.SizeofCloneArgs,
		SetTidSize: 1,
	})
	putLE(&buf, int32(want))
	if err := writeMem(p.hostPid, argAddr, buf.Bytes()); err != nil {
		return nil, 0, err
	}
	deadline := time.Now().Add(wait)
	for {
		ret, err := p.t.Syscall(p.r.gadget, unix.SYS_CLONE3, argAddr, kabi.SizeofCloneArgs)
		if err != nil {
			return nil, 0, err
		}
		if e := ptrace.Errno("clone3", ret); e != nil {
			if errors.Is(e, unix.EEXIST) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if errors.Is(e, unix.EPERM) && rs.nsTarget != 0 {
				// The task may not choose pids in its namespace:
				// choose from outside, then clone without set_tid.
				if err := rs.choosePid(p, want, argAddr, flags, exitSignal); err != nil {
					return nil, 0, err
				}
				break
			}
			return nil, 0, cloneError(want, e, wait)
		}
		if int(ret) != want {
			return nil, 0, fmt.Errorf("create task %d: got pid %d", want, ret)
		}
		break
	}
	ev := p.t.Events()
	if len(ev) == 0 {
		return nil, 0, fmt.Errorf("create task %d: no clone event", want)
	}
	host := ev[len(ev)-1]
	t := ptrace.Adopt(host)
	t.Scratch = true // its registers are set last (finish)
	rs.cl.add(func() { rs.killUnlessGone(t) })
	if err := waitFirstStop(t); err != nil {
		return nil, 0, err
	}
	return t, host, nil
}

func cloneError(pid int, e error, wait time.Duration) error {
	switch {
	case errors.Is(e, unix.EEXIST):
		holder, _ := os.ReadFile(procfs.Path(pid, "comm"))
		return fmt.Errorf("pid %d is used by %q (waited %v): %w", pid, strings.TrimSpace(string(holder)), wait, ErrPidTaken)
	case errors.Is(e, unix.EPERM):
		return fmt.Errorf("choose pid %d: %w (clone3 set_tid needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the pid namespace)", pid, e)
	}
	return fmt.Errorf("create task %d: %w", pid, e)
}

// choosePid clones a task with pid want from p through the namespace's
// ns_last_pid (see pidSetter).
func (rs *restorer) choosePid(p *rtask, want int, argAddr, flags, exitSignal uint64) error {
	if rs.pids == nil {
		need := rs.helperPids()
		for pid, ti := range rs.s.tasks {
			need[pid] = true
			for _, th := range ti.threads {
				need[th.tid] = true
			}
		}
		ps, err := newPidSetter(rs.nsTarget, need)
		if err != nil {
			return fmt.Errorf("choose pid %d: %w", want, err)
		}
		rs.pids = ps
		rs.cl.add(ps.close)
	}
	var buf bytes.Buffer
	putLE(&buf, kabi.CloneArgs{Flags: flags, ExitSignal: exitSignal})
	if err := writeMem(p.hostPid, argAddr, buf.Bytes()); err != nil {
		return err
	}
	if err := rs.pids.set(want); err != nil {
		return err
	}
	got, err := p.t.Call(p.r.gadget, "clone3", unix.SYS_CLONE3, argAddr, kabi.SizeofCloneArgs)
	if err != nil {
		return cloneError(want, err, rs.wait)
	}
	if int(got) != want {
		if ev := p.t.Events(); len(ev) > 0 {
			killAndReap(ptrace.Adopt(ev[len(ev)-1]))
		}
		return fmt.Errorf("create task %d: got pid %d (pid %d is taken in the container?): %w", want, got, want, ErrPidTaken)
	}
	return nil
}

// waitFirstStop waits for the stop of a task auto-attached at its birth.
func waitFirstStop(t *ptrace.Task) error {
	for {
		ws, err := t.WaitStop()
		if err != nil {
			return err
		}
		if ws.Stopped() && (ws.StopSignal() == unix.SIGSTOP || ptrace.Event(ws) == kabi.PTRACE_EVENT_STOP) {
			return nil
		}
		if err := t.Cont(0); err != nil {
			return err
		}
	}
}

// createThreads clones the task's other threads with their tids and gives
// each its own state, the leader's too if leader (else restoreTaskState
// gave it).
func (rs *restorer) createThreads(t *rtask, leader bool) error {
	lead := &rthread{img: &t.ti.threads[0], t: t.t}
	t.threads = []*rthread{lead}
	const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM
	imgs := make([]*threadImage, 0, len(t.ti.threads))
	for i := 1; i < len(t.ti.threads); i++ {
		imgs = append(imgs, &t.ti.threads[i])
	}
	pts, err := rs.cloneThreads(t, imgs, threadFlags)
	if err != nil {
		return err
	}
	for i, pt := range pts {
		t.threads = append(t.threads, &rthread{img: imgs[i], t: pt})
	}
	for i, th := range t.threads {
		if i == 0 && !leader {
			continue
		}
		r := t.r.forTask(th.t)
		if err := restoreThreadState(r, th.img); err != nil {
			return fmt.Errorf("thread %d: %w", th.img.tid, err)
		}
	}
	return nil
}

// rejoinsOutside says whether a task of the images left a group from
// outside for one of its own that others joined, and must go back to it
// (groups, pass 2).
func (rs *restorer) rejoinsOutside() bool {
	used := map[int]bool{}
	for _, ti := range rs.s.tasks {
		used[ti.pgid()] = true
	}
	for pid, ti := range rs.s.tasks {
		if pgid := ti.pgid(); used[pid] && pgid != pid && rs.fromOutside(pgid) {
			return true
		}
	}
	return false
}

// groups puts every task in its process group: the groups' leaders
// first, then the members (a group must exist in the session before one
// can join it). A task whose pid is a group's that it has left since
// (it joined another of its session) leads that group again for the
// while, and joins its own last, once the group has its members. Zombies
// too: they die after this. A group from outside the tree is the
// restorer's, which the tasks in it were born in: only a task that led
// a group of its own for the while goes back to it.
func (rs *restorer) groups() error {
	used := map[int]bool{}
	for _, t := range rs.tasks {
		used[t.ti.pgid()] = true
	}
	// Those that led a group for the while go to their own (pass 2),
	// each once its group is no longer needed for others of them to
	// join, or keeps a member that stays: a group lives as long as it
	// has a task. kept counts, by group, the tasks that are in it for
	// good: those placed in passes 0 and 1, and those moved back.
	var back, wait []*rtask
	kept := map[int]int{}
	for _, t := range rs.tasks {
		pid, pgid := t.ti.pid, t.ti.pgid()
		if t.ti.sid() != pid && used[pid] && pgid != pid {
			wait = append(wait, t)
		} else {
			kept[pgid]++
		}
	}
	for len(wait) > 0 {
		var still []*rtask
		for _, g := range wait {
			needed := false
			for _, h := range wait {
				needed = needed || h != g && h.ti.pgid() == g.ti.pid
			}
			if !needed || kept[g.ti.pid] > 0 {
				back = append(back, g)
				kept[g.ti.pgid()]++
			} else {
				still = append(still, g)
			}
		}
		if len(still) == len(wait) {
			return fmt.Errorf("pid %d: process groups whose leaders joined each other's, with no other member: %w", wait[0].ti.pid, ErrBadImage)
		}
		wait = still
	}
	for pass := 0; pass < 3; pass++ {
		list := rs.tasks
		if pass == 2 {
			list = back
		}
		for _, t := range list {
			pid, pgid, sid := t.ti.pid, t.ti.pgid(), t.ti.sid()
			if sid == pid {
				continue
			}
			left := used[pid] && pgid != pid // left its group for another
			join := pgid
			if rs.fromOutside(pgid) {
				join = rs.outsidePgid
			}
			switch {
			case pass == 0 && (pgid == pid || left):
				join = pid
			case pass == 1 && pgid != pid && !left && !rs.fromOutside(pgid), pass == 2 && left:
			default:
				continue
			}
			if join == 0 {
				return fmt.Errorf("pid %d: rejoin process group %d from outside the tree, which is outside the new pid namespace: %w", pid, pgid, ErrNotSupported)
			}
			if _, err := t.r.call("setpgid", unix.SYS_SETPGID, 0, uint64(join)); err != nil {
				return fmt.Errorf("pid %d: join process group %d: %w", pid, join, err)
			}
		}
	}
	return nil
}

// die turns a restored task into the zombie it was: it exits with its
// recorded status and stays unreaped for its parent.
func (rs *restorer) die(t *rtask) error {
	ws := unix.WaitStatus(t.ti.core.GetTc().GetExitCode())
	if comm := t.ti.core.GetTc().GetComm(); comm != "" {
		t.r.reset()
		if p, err := t.r.cstring(comm); err == nil {
			t.r.callBestEffort("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, p) // a zombie's name: cosmetic
		}
	}
	switch {
	case ws.Signaled():
		if err := t.t.Detach(ws.Signal()); err != nil {
			return err
		}
	default:
		if _, err := t.t.Syscall(t.r.gadget, unix.SYS_EXIT_GROUP, uint64(ws.ExitStatus())); err != nil {
			var ex *ptrace.ExitedError
			if !errors.As(err, &ex) {
				return err
			}
		}
	}
	return nil
}

// buildMemory maps every VMA of the task and starts the copy of its pages
// in the background: a copy needs no ptrace, and copies of a tree's tasks
// overlap each other and the injected syscalls of the next tasks.
// completeMemory waits for it and finishes the address space.
func (rs *restorer) buildMemory(t *rtask) error {
	s, ti, r := rs.s, t.ti, t.r
	vmas := ti.mm.GetVmas()
	var plan *inheritPlan
	src := t.parent
	if t.memSrc != nil {
		src = t.memSrc
	}
	if src != nil && src.memReady {
		plan = planInherit(src.ti, ti)
		if !inheritCopyOnWrite {
			plan = unmapAll(src.ti)
		}
	}
	if plan != nil {
		pre := r.batch()
		for _, u := range plan.unmap {
			pre.add("munmap inherited", unix.SYS_MUNMAP, u[0], u[1])
		}
		for _, d := range plan.drop {
			pre.add("madvise(MADV_DONTNEED) inherited", unix.SYS_MADVISE, d[0], d[1], unix.MADV_DONTNEED)
		}
		if _, err := pre.run(); err != nil {
			return err
		}
	}
	if plan == nil || !plan.keepVdso {
		if err := s.mapVdso(r, vmas); err != nil {
			return err
		}
	}
	fileFds := map[uint32]uint64{}
	closeAll := func() {
		b := r.batch()
		for _, fd := range fileFds {
			b.add("close", unix.SYS_CLOSE, fd)
		}
		_, _ = b.run() // closes of our own fds: they fail only if the task is gone
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

	// A VMA the kernel accounts (VM_ACCOUNT: it was writable once) is
	// mapped writable, filled, then protected; one it does not is mapped
	// with its final protection and filled through /proc/PID/mem, so the
	// kernel keeps the two kinds apart as it did.
	vmFlags := map[uint64]string{}
	for _, e := range ti.ext.GetVmas() {
		vmFlags[e.GetStart()] = e.GetVmFlags()
	}
	type fix struct{ start, len, prot uint64 }
	var fixes []fix
	force := map[uint64]bool{}
	// fresh: the anonymous mappings made here, empty until filled.
	var fresh [][2]uint64
	// rseqIn: the mappings holding a thread's rseq area. Registering
	// rseq, done while the fill runs, writes there from the kernel, and
	// so does every return to user mode after it (a failure is a
	// SIGSEGV): they stay writable and out of the userfaultfd.
	rseqIn := make([]bool, len(vmas))
	for _, th := range ti.threads {
		if e := th.core.GetThreadCore().GetRseqEntry(); e != nil && e.GetRseqAbiPointer() != 0 {
			a := e.GetRseqAbiPointer()
			if i := sort.Search(len(vmas), func(i int) bool { return vmas[i].GetEnd() > a }); i < len(vmas) && vmas[i].GetStart() <= a {
				rseqIn[i] = true
			}
		}
	}
	// The plain mappings go in one batch; a mapping of shared memory and
	// the opening of a mapped file run at once, which is safe as every
	// mapping is MAP_FIXED over its own range.
	maps := r.batch()
	for i, v := range vmas {
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
		case prot&unix.PROT_WRITE != 0 && i > 0 && touchesLike(vmas[i-1], v) && (plan == nil || !plan.kept[v.GetStart()]) && !rseqIn[i]:
			// The kernel kept it apart from the mapping it touches
			// (their anon_vmas differ); mapped like it, it would
			// merge into it. Mapped without write, it stays apart,
			// gets an anon_vma of its own as it is filled through
			// /proc/PID/mem, and the mprotect that makes it
			// writable (and accounted, as it was) cannot merge it.
			mprot = prot &^ unix.PROT_WRITE
			force[v.GetStart()] = true
		case accounted || prot&unix.PROT_WRITE != 0:
			mprot |= unix.PROT_READ | unix.PROT_WRITE
		default:
			force[v.GetStart()] = true
		}
		if plan != nil && plan.kept[v.GetStart()] {
			if mprot != prot {
				fixes = append(fixes, fix{v.GetStart(), v.GetEnd() - v.GetStart(), prot})
			}
			continue
		}
		if used, ok, err := rs.mapShared(t, v, mprot); ok || err != nil {
			if err != nil {
				return err
			}
			if used != prot {
				fixes = append(fixes, fix{v.GetStart(), v.GetEnd() - v.GetStart(), prot})
			}
			continue
		}
		if status&(vmaFilePrivate|vmaFileShared) != 0 {
			f := s.files[uint32(v.GetShmid())].GetReg()
			var err error
			if fd, err = openFile(uint32(v.GetShmid()), f.GetFlags()&unix.O_ACCMODE); err != nil {
				return err
			}
		}
		maps.add(fmt.Sprintf("mmap %#x-%#x", v.GetStart(), v.GetEnd()), unix.SYS_MMAP,
			v.GetStart(), v.GetEnd()-v.GetStart(), mprot, flags, fd, v.GetPgoff())
		if status&vmaAnonPrivate != 0 && fd == ^uint64(0) && mprot&unix.PROT_WRITE != 0 && !rseqIn[i] &&
			flags&(unix.MAP_POPULATE|unix.MAP_LOCKED|unix.MAP_GROWSDOWN) == 0 && !mergeableNeighbour(vmas, i) {
			fresh = append(fresh, [2]uint64{v.GetStart(), v.GetEnd()})
		}
		if mprot != prot {
			fixes = append(fixes, fix{v.GetStart(), v.GetEnd() - v.GetStart(), prot})
		}
	}
	if _, err := maps.run(); err != nil {
		return err
	}
	if err := rs.ctx.Err(); err != nil {
		return err
	}

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
	uf, registered, err := rs.userfault(t, fresh, runs)
	if err != nil {
		_ = pages.Close()
		return err
	}
	fin := r.batch()
	for _, f := range fixes {
		fin.add("mprotect", unix.SYS_MPROTECT, f.start, f.len, f.prot)
	}
	for _, v := range vmas {
		for adv := 0; adv < 64; adv++ {
			if v.GetMadv()&(1<<adv) != 0 {
				fin.add("madvise", unix.SYS_MADVISE, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(adv))
			}
		}
	}
	t.memFixes = fin
	t.filled = make(chan error, 1)
	if rs.fillSem == nil {
		rs.fillSem = make(chan struct{}, max(1, min(runtime.GOMAXPROCS(0), 4)))
	}
	sum := rs.pagesSum(ti)
	rs.fillSem <- struct{}{}
	rs.fills.Add(1)
	go func() {
		defer rs.fills.Done()
		defer func() { <-rs.fillSem }()
		var err error
		runs, copied, inherited := s.splitParentRuns(plan, ti, runs)
		if c := rs.progress.counter(); c != nil {
			c.Add(inherited * pgSize)
		}
		if plan != nil {
			runs, err = rs.inheritedRuns(plan, ti, runs, pages)
		}
		var ms mem.Stats
		if err == nil {
			if uf != nil {
				runs = markMissing(runs, registered)
			}
			ms, err = mem.FillWith(t.hostPid, runs, pages, mem.FillOptions{Progress: rs.progress.counter(), Sum: sum, Userfault: uf})
		}
		if err == nil && len(copied) > 0 {
			var n uint64
			n, err = rs.parentFill(t, copied, uf, registered)
			ms.PagesWritten += n
		}
		var installed uint64
		if uf != nil {
			installed = uf.Installed() / pgSize
			// Before the task may run or be cloned from.
			err = errors.Join(err, uf.Close())
		}
		_ = pages.Close()
		if err == nil {
			rs.fillMu.Lock()
			rs.st.PagesRestored += ms.PagesWritten
			rs.st.PagesUserfault += installed
			rs.fillMu.Unlock()
		}
		t.filled <- err
	}()
	return nil
}

// userfaultMin is the bytes of fresh anonymous memory from which a
// task's fill goes through a userfaultfd (mem.Userfault): setting one up
// costs two stops of the task and a pidfd_getfd.
var userfaultMin uint64 = 8 << 20

// userfault sets up a userfaultfd for the fill of t (mem.Userfault): the
// fresh mappings, anonymous and empty since they were just mapped, are
// registered; it returns them, for markMissing. It returns nil, leaving
// every run to process_vm_writev, where that does not pay or the kernel
// refuses one (an older kernel, a seccomp filter); that is no error. Nor
// is it used where the kernel would back fresh memory with transparent
// huge pages (THP "always"): UFFDIO_COPY installs small pages.
// buildMemory leaves out of fresh the mappings holding an rseq area and
// those touching a like neighbour (mergeableNeighbour).
func (rs *restorer) userfault(t *rtask, fresh [][2]uint64, runs []mem.Run) (*mem.Userfault, [][2]uint64, error) {
	if len(fresh) == 0 || thpAlways() {
		return nil, nil, nil
	}
	var total uint64
	used := make([]bool, len(fresh))
	for _, r := range splitRunsAt(runs, fresh) {
		if i := rangeHolding(fresh, r.Addr, r.NrPages*pgSize); i >= 0 && !r.Force {
			total += r.NrPages * pgSize
			used[i] = true
		}
	}
	if total < userfaultMin {
		return nil, nil, nil
	}
	log := rs.log.WithField("pid", t.ti.pid)
	r := t.r
	fd, err := r.call("userfaultfd", unix.SYS_USERFAULTFD, unix.O_CLOEXEC|kabi.UFFD_USER_MODE_ONLY)
	if err != nil {
		log.WithError(err).Debug("no userfaultfd: pages go in with process_vm_writev")
		return nil, nil, nil
	}
	f, err := takeFd(t.hostPid, int(fd), "userfaultfd")
	// The task must not keep it: its children would inherit it.
	if _, cerr := r.call("close userfaultfd", unix.SYS_CLOSE, fd); cerr != nil {
		if f != nil {
			_ = f.Close()
		}
		return nil, nil, cerr
	}
	if err != nil {
		log.WithError(err).Debug("no userfaultfd: pages go in with process_vm_writev")
		return nil, nil, nil
	}
	uf, err := mem.NewUserfault(f)
	if err != nil {
		log.WithError(err).Debug("no userfaultfd: pages go in with process_vm_writev")
		return nil, nil, nil
	}
	var registered [][2]uint64
	for i, g := range fresh {
		if !used[i] {
			continue
		}
		if err := uf.Register(g[0], g[1]-g[0]); err != nil {
			log.WithError(err).Debug("no userfaultfd: pages go in with process_vm_writev")
			return nil, nil, uf.Close()
		}
		registered = append(registered, g)
	}
	return uf, registered, nil
}

// markMissing cuts runs where a registered range starts or ends and marks
// Missing the pieces inside one (Force runs excepted): a UFFDIO_COPY must
// stay inside one mapping.
func markMissing(runs []mem.Run, registered [][2]uint64) []mem.Run {
	out := splitRunsAt(runs, registered)
	for i, r := range out {
		if !r.Force && !r.Skip && rangeHolding(registered, r.Addr, r.NrPages*pgSize) >= 0 {
			out[i].Missing = true
		}
	}
	return out
}

// mergeableNeighbour reports whether vmas[i] touches an anonymous
// private mapping with its protection and flags. The kernel could merge
// the two, and registering or unregistering a userfaultfd range tries
// to, where filling them otherwise leaves them apart as dumped.
func mergeableNeighbour(vmas []*pb.VmaEntry, i int) bool {
	return (i > 0 && touchesLike(vmas[i-1], vmas[i])) || (i+1 < len(vmas) && touchesLike(vmas[i], vmas[i+1]))
}

// touchesLike reports whether the anonymous private mappings a and b
// touch (a ends where b starts) with one protection and one set of flags:
// the kernel would merge them unless their anon_vmas differ.
func touchesLike(a, b *pb.VmaEntry) bool {
	return a.GetEnd() == b.GetStart() && a.GetStatus()&vmaAnonPrivate != 0 && b.GetStatus()&vmaAnonPrivate != 0 &&
		a.GetProt() == b.GetProt() && a.GetFlags() == b.GetFlags()
}

// rangeHolding returns the index of the range of rs (sorted, disjoint
// [start, end) pairs) that holds all of [a, a+n), or -1.
func rangeHolding(rs [][2]uint64, a, n uint64) int {
	i := sort.Search(len(rs), func(i int) bool { return rs[i][1] > a })
	if i < len(rs) && rs[i][0] <= a && a+n <= rs[i][1] {
		return i
	}
	return -1
}

// splitRunsAt cuts runs (in pages-file order) where a range of rs starts
// or ends, so that each piece lies wholly inside one range or outside
// all; the pieces keep the file order.
func splitRunsAt(runs []mem.Run, rs [][2]uint64) []mem.Run {
	out := make([]mem.Run, 0, len(runs))
	for _, r := range runs {
		a, end := r.Addr, r.Addr+r.NrPages*pgSize
		for a < end {
			cut := end
			i := sort.Search(len(rs), func(i int) bool { return rs[i][1] > a })
			if i < len(rs) {
				if rs[i][0] > a {
					cut = min(cut, rs[i][0])
				} else {
					cut = min(cut, rs[i][1])
				}
			}
			p := r
			p.Addr, p.NrPages = a, (cut-a)/pgSize
			out = append(out, p)
			a = cut
		}
	}
	return out
}

// thpAlways reports whether the kernel backs anonymous memory with
// transparent huge pages without being asked (THP "always").
var thpAlways = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && strings.Contains(string(b), "[always]")
})

// waitFill waits for the copy of the task's pages, once.
func (rs *restorer) waitFill(t *rtask) error {
	if t.filled != nil {
		if err := <-t.filled; err != nil {
			t.fillErr = fmt.Errorf("fill memory: %w", err)
		}
		t.filled = nil
	}
	return t.fillErr
}

// parentFill copies into t the pages of runs (Parent runs it does not
// inherit) from the pages files of the ancestors holding them, and
// returns how many it wrote.
func (rs *restorer) parentFill(t *rtask, runs []mem.Run, uf *mem.Userfault, registered [][2]uint64) (uint64, error) {
	srcs, err := rs.s.parentSources(t.ti, runs)
	if err != nil {
		return 0, err
	}
	var n uint64
	for from, pieces := range srcs {
		faultPoint("restore:in-parent-fill")
		pruns := parentRunsFor(from, pieces)
		if uf != nil {
			pruns = markMissing(pruns, registered)
		}
		f, err := rs.s.openPages(from)
		if err != nil {
			return n, err
		}
		ms, err := mem.FillWith(t.hostPid, pruns, f, mem.FillOptions{Progress: rs.progress.counter(), Userfault: uf})
		_ = f.Close()
		n += ms.PagesWritten
		if err != nil {
			return n, fmt.Errorf("pages of pid %d's parent %d: %w", t.ti.pid, from.pid, err)
		}
	}
	rs.log.WithFields(logrus.Fields{"pid": t.ti.pid, "pages": n}).Debug("pages copied from the parent's image")
	return n, nil
}

// inheritedRuns marks the pages a child holds already (inherit.go).
func (rs *restorer) inheritedRuns(plan *inheritPlan, ti *taskImage, runs []mem.Run, pages *os.File) ([]mem.Run, error) {
	pp, err := rs.parentPages(plan.parent)
	if err != nil {
		return nil, err
	}
	if c, ok := pp.(io.Closer); ok {
		defer c.Close()
	}
	out, err := plan.splitInherited(ti, runs, pages, pp, rs.pagesSum(ti))
	if err == nil {
		var skip, write uint64
		for _, r := range out {
			if r.Skip {
				skip += r.NrPages
			} else {
				write += r.NrPages
			}
		}
		if c := rs.progress.counter(); c != nil {
			c.Add(skip * uint64(pageSize))
		}
		rs.log.WithFields(logrus.Fields{"pid": ti.pid, "kept_vmas": len(plan.kept), "unmapped": len(plan.unmap),
			"dropped": len(plan.drop), "pages_inherited": skip, "pages_written": write}).Debug("copy-on-write inheritance")
	}
	return out, err
}

// smallPages: a parent's pages file up to this size is read once and
// kept while its children compare against it, instead of once per child.
const smallPages = 8 << 20

// parentPages returns the pages of parent for its children to compare
// with: in memory when small, else the open file.
func (rs *restorer) parentPages(parent *taskImage) (io.ReaderAt, error) {
	rs.fillMu.Lock()
	b, ok := rs.pagesCache[parent]
	rs.fillMu.Unlock()
	if ok {
		return memPages(b), nil
	}
	f, err := rs.s.openPages(parent)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || st.Size() > smallPages {
		return f, err
	}
	b, err = io.ReadAll(f)
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	rs.fillMu.Lock()
	if rs.pagesCache == nil {
		rs.pagesCache = map[*taskImage][]byte{}
	}
	rs.pagesCache[parent] = b
	rs.fillMu.Unlock()
	return memPages(b), nil
}

// completeMemory waits for the task's pages, then protects and advises
// its mappings as they were and sets its mm (exe link, brk, arg and env
// areas, auxv).
func (rs *restorer) completeMemory(t *rtask) error {
	if err := rs.waitFill(t); err != nil {
		return err
	}
	if t.memFixes == nil {
		return nil
	}
	r, s := t.r, rs.s
	fixes := t.memFixes
	t.memFixes = nil
	// The executable is opened in the batch of the protections and
	// advice: one stop for both.
	exeFd := ^uint64(0)
	if !s.keepExe {
		f := s.files[t.ti.mm.GetExeFileId()].GetReg()
		r.reset()
		p, err := r.cstring(f.GetName())
		if err != nil {
			return err
		}
		fixes.add("open "+f.GetName(), unix.SYS_OPENAT, atFdcwd, p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	res, err := fixes.run()
	if err != nil {
		return err
	}
	if !s.keepExe {
		exeFd = res[len(res)-1]
	}
	// One more stop: the mm's fields and exe link, then every fd the
	// image does not list closed, the exe's among them.
	last := r.batch()
	if err := addSetMM(last, r, t.ti.mm, exeFd); err != nil {
		return err
	}
	closeExtraFds(last, t.ti)
	if _, err := last.run(); err != nil {
		return err
	}
	t.extraClosed = true
	return nil
}

// restoreRoot puts a task that was chrooted back in its root directory:
// after every path crhook opens in the task (the exe link is the last),
// before its credentials may drop CAP_SYS_CHROOT. Its cwd was set by
// path before, and chroot(2) leaves the cwd alone.
func (rs *restorer) restoreRoot(t *rtask) error {
	if t.ti.fs == nil {
		return nil
	}
	// Tasks that share their fs info (CLONE_FS) share the root too: the
	// last of them to finish chroots, once every one has opened its
	// paths (a second chroot would look for the path inside the first).
	if id := t.ti.core.GetIds().GetFsId(); id != 0 {
		rs.fsLeft[id]--
		if rs.fsLeft[id] > 0 {
			return nil
		}
	}
	root := rs.s.files[t.ti.fs.GetRootId()].GetReg().GetName()
	if root == "" || root == "/" {
		return nil
	}
	t.r.reset()
	p, err := t.r.cstring(root)
	if err != nil {
		return err
	}
	if _, err := t.r.call("chroot "+root, unix.SYS_CHROOT, p); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("root directory %s: chroot needs CAP_SYS_CHROOT: %w", root, err)
		}
		return fmt.Errorf("root directory %s: %w", root, err)
	}
	return nil
}

// finish closes what the task holds beyond its image's fds, sets every
// thread's registers and lets the task run. The leader's last injected
// syscall unmaps the scratch area (the gadget with it); at its exit stop
// the leader gets its own registers back.
func (rs *restorer) finish(t *rtask) error {
	if err := rs.completeMemory(t); err != nil {
		return err
	}
	if err := rs.restoreRoot(t); err != nil {
		return err
	}
	if !t.extraClosed {
		b := t.r.batch()
		closeExtraFds(b, t.ti)
		if _, err := b.run(); err != nil {
			return err
		}
	}
	if err := rs.restoreLast(t); err != nil {
		return err
	}
	for _, th := range t.threads[1:] {
		if err := setFinalRegs(th.t, th.img); err != nil {
			return fmt.Errorf("thread %d: %w", th.img.tid, err)
		}
	}
	if _, err := t.t.SyscallToExit(t.r.gadget, unix.SYS_MUNMAP, rs.scratch, scratchSize); err != nil {
		return err
	}
	if err := finishMask(t); err != nil {
		return err
	}
	if err := setFinalRegs(t.t, t.threads[0].img); err != nil {
		return err
	}
	if t.ti.core.GetTc().GetTaskState() == taskStopped {
		if err := unix.Tgkill(t.hostPid, t.hostPid, unix.SIGSTOP); err != nil {
			return fmt.Errorf("stop pid %d as it was: %w", t.hostPid, os.NewSyscallError("tgkill", err))
		}
	}
	if rs.affinity != nil {
		for _, th := range t.threads {
			if err := setAffinity(th.t.Tid, rs.affinity); err != nil {
				return fmt.Errorf("thread %d: %w", th.t.Tid, err)
			}
		}
	}
	for _, th := range t.threads {
		if err := th.t.Detach(0); err != nil {
			return err
		}
	}
	return nil
}

// spawnTask creates a stopped, traced, empty-handed process with the given
// pid, a child of ours: a husk is exec'd stopped (it never runs an
// instruction) and clones the task with clone3(set_tid) and CLONE_PARENT.
// It returns the task and the address of a syscall gadget in it.
// Precondition: OS thread locked.
func spawnTask(pid int, stdio [3]uintptr, wait time.Duration) (*ptrace.Task, uint64, error) {
	h, regs, err := startHusk(stdio)
	if err != nil {
		return nil, 0, err
	}
	defer killAndReap(h)
	gadget := regs.Rip
	if err := h.Poke(gadget, ptrace.Gadget); err != nil {
		return nil, 0, err
	}
	// clone_args and the pid array go below the husk's stack pointer.
	argAddr := (regs.Rsp - 4096) &^ 15
	var buf bytes.Buffer
	putLE(&buf, kabi.CloneArgs{
		Flags:      unix.CLONE_PARENT,
		SetTid:     argAddr + kabi.SizeofCloneArgs,
		SetTidSize: 1,
	})
	putLE(&buf, int32(pid))
	if err := writeMem(h.Tid, argAddr, buf.Bytes()); err != nil {
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
			return nil, 0, cloneError(pid, e, wait)
		}
		child = int(ret)
		break
	}
	t := ptrace.Adopt(child)
	if child != pid {
		killAndReap(t)
		return nil, 0, fmt.Errorf("create task %d: got pid %d", pid, child)
	}
	if err := waitFirstStop(t); err != nil {
		killAndReap(t)
		return nil, 0, err
	}
	return t, gadget, nil
}

// startHusk execs a husk: a copy of our own binary, traced from its first
// instruction, which it never gets to run.
// Precondition: OS thread locked.
func startHusk(stdio [3]uintptr) (*ptrace.Task, unix.PtraceRegs, error) {
	return startHuskIn(stdio, true)
}

// startHuskIn is startHusk; sameNS false says the husk is born in another
// pid namespace (our thread setns'd), where Go's parent-death check
// (getppid against our pid) would kill it, so it goes without
// Pdeathsig and relies on PTRACE_O_EXITKILL alone.
func startHuskIn(stdio [3]uintptr, sameNS bool) (*ptrace.Task, unix.PtraceRegs, error) {
	return startHuskWith(stdio, sameNS, 0)
}

// startHuskWith is startHuskIn with extra clone flags (CLONE_NEWPID: the
// husk is the init of a new pid namespace).
func startHuskWith(stdio [3]uintptr, sameNS bool, cloneflags uintptr) (*ptrace.Task, unix.PtraceRegs, error) {
	var regs unix.PtraceRegs
	sys := &syscall.SysProcAttr{Ptrace: true, Cloneflags: cloneflags}
	if sameNS && cloneflags&syscall.CLONE_NEWPID == 0 {
		sys.Pdeathsig = syscall.SIGKILL
	}
	hpid, err := syscall.ForkExec("/proc/self/exe", []string{"crhook-husk"}, &syscall.ProcAttr{
		Env:   []string{},
		Files: stdio[:],
		Sys:   sys,
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
		_ = t.Cont(0) // if the task is gone, the next WaitStop says so
	}
}

// lookup checks that a path of the image exists where the restored tasks
// will look for it: on this host, or inside the target's root
// (RESOLVE_IN_ROOT: an image cannot name a file outside it).
func (s *imageSet) lookup(name string) error {
	if s.root == "" {
		_, err := os.Lstat(name)
		return err
	}
	dir, err := unix.Open(s.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: s.root, Err: err}
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, name, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return &os.PathError{Op: "open in the target's root", Path: name, Err: err}
	}
	return unix.Close(fd)
}

// preflightDone holds the file ids preflight found in the root and
// present already, for another task: a tree's tasks map the same
// libraries (a tree of 200 made 1200 lookups of a handful of paths).
type preflightDone struct{ inRoot, found map[uint32]bool }

func newPreflightDone() *preflightDone {
	return &preflightDone{inRoot: map[uint32]bool{}, found: map[uint32]bool{}}
}

// preflight checks, before any process exists, what can be checked: the
// files the task needs are there.
func (s *imageSet) preflight(ti *taskImage, done *preflightDone) error {
	if ti.zombie() {
		return nil
	}
	need := []uint32{ti.mm.GetExeFileId(), ti.fs.GetCwdId()}
	for _, v := range ti.mm.GetVmas() {
		if v.GetStatus()&(vmaFilePrivate|vmaFileShared) != 0 && v.GetStatus()&vmaAreaMemfd == 0 {
			need = append(need, uint32(v.GetShmid()))
		}
	}
	// Every path the task will open, its fds' too, stays in its root.
	for _, id := range append(slices.Clone(need), fdIDs(ti)...) {
		if r := s.files[id].GetReg(); r != nil && !done.inRoot[id] {
			if err := s.checkInRoot(id, r.GetName()); err != nil {
				return err
			}
			done.inRoot[id] = true
		}
	}
	for _, id := range need {
		if done.found[id] {
			continue
		}
		f, ok := s.files[id]
		if !ok || f.GetReg() == nil {
			return fmt.Errorf("files.img: no regular file with id %d: %w", id, ErrBadImage)
		}
		name := f.GetReg().GetName()
		if !strings.HasPrefix(name, "/") {
			return fmt.Errorf("files.img: file %d has a relative path %q: %w", id, name, ErrBadImage)
		}
		if err := s.lookup(name); err != nil && !s.isGhost(id) {
			return fmt.Errorf("file %d needed by the image: %w", id, err)
		}
		done.found[id] = true
	}
	for _, fd := range ti.fds {
		if _, ok := s.files[fd.GetId()]; !ok && fd.GetType() != pb.FdTypes_EXT {
			return fmt.Errorf("fdinfo: fd %d names file %d, which files.img lacks: %w", fd.GetFd(), fd.GetId(), ErrBadImage)
		}
	}
	return nil
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

// addSetMM adds to b the prctl(PR_SET_MM_MAP) that gives the task the
// image's mm fields, auxv and (exeFd, unless ^0) exe link; the map and
// auxv go into r's scratch area, which must stay as it is until b runs.
func addSetMM(b *batch, r *remote, mm *pb.MmEntry, exeFd uint64) error {
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
	var mb bytes.Buffer
	putLE(&mb, m)
	addr, err := r.put(mb.Bytes())
	if err != nil {
		return err
	}
	b.add("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, kabi.SizeofPrctlMMMap, 0)
	return nil
}
