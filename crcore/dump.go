//go:build linux && amd64

package crcore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
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

// pagemap_entry flags: CRIU's PE_PRESENT (the pages are in this task's
// pages file, in entry order), and crhook's own peInParent (mem.Run.Parent:
// the pages are the parent process's at the same address, and have no
// room in this task's file). CRIU's PE_PARENT means another thing (a
// previous dump's image) and is not used.
const (
	pePresent  = 1 << 2
	peInParent = 1 << 16
)

// imgVersion is CRIU's CRTOOLS_IMAGES_V1_1.
const imgVersion = 2

// formatVersion is crhook's own image format version: 2 added
// peInParent; a version 1 image (without it) reads as before.
const formatVersion = 2

const scratchSize = 64 << 10

// kcmp types from include/uapi/linux/kcmp.h.
const (
	kcmpVM      = 1
	kcmpFiles   = 2
	kcmpFs      = 3
	kcmpSighand = 4
)

// Dump checkpoints the process tree rooted at opts.Pid into
// opts.ImageDir. A dump that fails leaves the tree running as it was and
// removes what it wrote.
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
	level int // index of the root's pid namespace in NSpid lists
	// outside: the session and group the root was started in, when no
	// task of the tree leads them (outsideIDs).
	outside outsideIDs
	shm     shmemDump // shared memory objects (shmem.go)
	ipc     sysvDump  // SysV IPC of the tree's namespace (sysvipc.go)
	// progress counts the bytes of memory written (nil: not counted).
	progress *Progress
}

// dthread is one thread of a dumped task.
type dthread struct {
	tid, nsTid int
	t          *ptrace.Task
	regs       unix.PtraceRegs
	xsave      []byte
	sigmask    uint64
	rseq       kabi.RseqConfiguration
	robustHead uint64
	robustLen  uint64
	tidAddr    uint64
	altstack   kabi.StackT
	comm       string
	attrs      threadAttrs // signals, credentials, seccomp (attrs.go)
}

// dtask is one process of the dumped tree.
type dtask struct {
	pid, nsPid  int
	st          *procfs.Stat
	status      procfs.Status
	parent      *dtask
	children    []*dtask
	threads     []*dthread // the leader first
	stopped     bool
	zombie      bool
	nsPpid      int
	nsPgid      int
	nsSid       int
	brk         uint64
	personality uint64
	umask       uint32
	sigactions  []kabi.KSigaction // index sig-1
	itimers     [3][4]uint64      // interval sec, usec, value sec, usec
	vmas        []*pb.CrhookVmaEntry
	fds         []*pb.FdinfoEntry
	maps        []*procfs.VMA // as dumpTask read them, with VmFlags
	mm          *pb.MmEntry
	runs        []mem.Run
	fs          *pb.FsEntry
	attrs       taskAttrs // signals, timers, rlimits, prctl (attrs.go)
	// filesID, fsID: the images' files_id and fs_id, the ns pid of one
	// holder of the table or fs info (checkSharing): equal ids, one
	// object. The task with the files_id as its pid writes the table.
	filesID, fsID uint32
}

func (t *dtask) state() uint32 {
	switch {
	case t.zombie:
		return taskDead
	case t.stopped:
		return taskStopped
	}
	return taskAlive
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
	d := &dumper{log: log, dir: dir, files: newFileTable(dir), progress: opts.Progress}
	d.files.log = log
	// For the error paths; the success path checks closeExtra below.
	defer func() { _ = d.files.ctx.closeExtra() }()

	tasks, err := d.seizeTree(pid, opts.ExtraRoots, opts.Thaw, &cl)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	frozen := time.Now()
	faultPoint("dump:after-seize")
	log.WithFields(logrus.Fields{"pid": pid, "tasks": len(tasks), "took": frozen.Sub(start)}).Debug("seized")
	if err := d.checkSharing(tasks); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}

	for _, t := range tasks {
		if !t.zombie {
			d.files.ctx.pids = append(d.files.ctx.pids, t.pid)
		}
	}
	// Files first: an fd we cannot dump fails the dump before anything
	// else in the tree is touched. What /proc says of each fd is read
	// for every task at once; the files are then dumped in tree order.
	live := make([]*dtask, 0, len(tasks))
	for _, t := range tasks {
		if !t.zombie {
			live = append(live, t)
		}
	}
	livePids := make([]int, len(live))
	for i, t := range live {
		livePids[i] = t.pid
	}
	read, readErrs := gatherFds(livePids)
	for i, t := range live {
		if readErrs[i] == nil {
			t.fds, err = d.files.dumpRead(t.pid, read[i])
		} else {
			err = readErrs[i]
		}
		if err != nil {
			return nil, fmt.Errorf("dump pid %d: %w", t.pid, err)
		}
	}
	log.WithField("took", time.Since(frozen)).Debug("files dumped")
	phase := time.Now()
	// Each task's pages are copied by a worker while the tracer goes on
	// to the next task, its state and then the scan of its address
	// space: the copies need no ptrace, and the tracer mostly waits for
	// the tasks' stops. (A tree of 200 once took its task states and its
	// memory one after the other: 189 + 250 ms.)
	copies := newCopyGroup(ctx)
	var memStart time.Time
	for _, t := range tasks {
		if t.zombie {
			continue
		}
		err := d.dumpTask(t)
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			if memStart.IsZero() {
				memStart = time.Now()
			}
			err = d.dumpMM(t, copies)
		}
		if err == nil {
			t.fs, err = d.dumpFs(t.pid, t.umask)
		}
		if err != nil {
			_ = copies.wait() // let the started copies end; this error is the one to report
			if errors.Is(err, ctx.Err()) {
				return nil, err
			}
			return nil, fmt.Errorf("dump pid %d: %w", t.pid, err)
		}
	}
	if err := copies.wait(); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if err := d.dumpSysv(pid); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if memStart.IsZero() {
		memStart = time.Now()
	}
	d.stats.MemoryTime = time.Since(memStart)
	log.WithFields(logrus.Fields{"took": time.Since(phase), "memory": d.stats.MemoryTime}).Debug("task state and memory dumped")
	phase = time.Now()
	faultPoint("dump:after-memory")

	if err := d.writeImages(tasks); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if err := d.files.ctx.closeExtra(); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	faultPoint("dump:before-checksums")
	if err := dir.WriteChecksums(); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if err := syncDir(opts.ImageDir); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}

	log.WithField("took", time.Since(phase)).Debug("images written")

	// Success: from here on the images stand.
	cl.release()
	if opts.LeaveRunning {
		for _, t := range tasks {
			resumeTask(t, log)
		}
	} else {
		if err := killTree(tasks); err != nil {
			log.WithError(err).Warn("kill dumped tree")
		}
	}
	d.stats.FrozenTime = time.Since(frozen)
	d.stats.TotalTime = time.Since(start)
	pids := make([]int, len(tasks))
	for i, t := range tasks {
		pids[i] = t.pid
	}
	log.WithFields(logrus.Fields{"pid": pid, "tasks": len(tasks), "pages": d.stats.PagesWritten, "frozen": d.stats.FrozenTime}).Info("dumped")
	return &DumpResult{Pids: pids, Stats: d.stats}, nil
}

// nsLevel returns entry level of a NSpid-like status list.
func nsAt(st procfs.Status, key string, level int) (int, error) {
	v, err := st.Ints(key)
	if err != nil {
		return 0, err
	}
	if len(v) <= level {
		return 0, fmt.Errorf("%s %v has no entry for pid namespace level %d", key, v, level)
	}
	return v[level], nil
}

// seizeTree seizes and stops every thread of every process in the tree of
// root, parents before children. With thaw set (the caller froze the
// tree's cgroup), interrupts are queued while the tree is frozen and
// collected after thaw; otherwise each task is stopped before its
// children are listed, so that it cannot fork behind our back. The extra
// roots join the tree as children of root (see DumpOptions.ExtraRoots).
func (d *dumper) seizeTree(root int, extra []int, thaw func() error, cl *cleanup) ([]*dtask, error) {
	rst, err := procfs.ReadStatus(root)
	if err != nil {
		return nil, err
	}
	rns, err := rst.Ints("NSpid")
	if err != nil || len(rns) == 0 {
		return nil, fmt.Errorf("no NSpid for pid %d", root)
	}
	d.level = len(rns) - 1
	if err := samePidNS(root, extra); err != nil {
		return nil, err
	}

	var tasks []*dtask
	byPid := map[int]*dtask{}
	cl.add(func() {
		for _, t := range tasks {
			resumeTask(t, d.log)
		}
	})
	queue := []*dtask{{pid: root}}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		if byPid[t.pid] != nil {
			continue
		}
		if t.st, err = procfs.ReadStat(t.pid); err != nil {
			return nil, fmt.Errorf("pid %d: %w", t.pid, err)
		}
		if t.status, err = procfs.ReadStatus(t.pid); err != nil {
			return nil, fmt.Errorf("pid %d: %w", t.pid, err)
		}
		if t.nsPid, err = nsAt(t.status, "NSpid", d.level); err != nil {
			return nil, fmt.Errorf("pid %d: %w", t.pid, err)
		}
		t.nsPgid, _ = nsAt(t.status, "NSpgid", d.level)
		t.nsSid, _ = nsAt(t.status, "NSsid", d.level)
		t.nsPgid, t.nsSid = unseenID(t.nsPgid), unseenID(t.nsSid)
		if t.parent != nil {
			t.nsPpid = t.parent.nsPid
		}
		byPid[t.pid] = t
		tasks = append(tasks, t)
		if t.st.State == 'Z' {
			t.zombie = true
			t.threads = []*dthread{{tid: t.pid, nsTid: t.nsPid, comm: t.st.Comm}}
			continue
		}
		t.stopped = t.st.State == 'T'
		if err := refuseSharedVM(t.pid); err != nil {
			return nil, err
		}
		if err := d.seizeThreads(t, thaw == nil); err != nil {
			if !errors.Is(err, errTaskExited) || t.parent == nil {
				return nil, fmt.Errorf("pid %d: %w", t.pid, err)
			}
			// It exited after its (stopped) parent listed it: it is
			// the parent's zombie now, dumped as such.
			st, serr := procfs.ReadStat(t.pid)
			if serr != nil {
				return nil, fmt.Errorf("pid %d: %w (and reading its stat: %w)", t.pid, err, serr)
			}
			if st.State != 'Z' {
				return nil, fmt.Errorf("pid %d: %w (and it is not a zombie: state %c)", t.pid, err, st.State)
			}
			t.st, t.zombie, t.stopped = st, true, false
			t.threads = []*dthread{{tid: t.pid, nsTid: t.nsPid, comm: st.Comm}}
			continue
		}
		kids := map[int]bool{}
		for _, th := range t.threads {
			cs, err := procfs.Children(t.pid, th.tid)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("children of %d: %w", th.tid, err)
			}
			for _, c := range cs {
				kids[c] = true
			}
		}
		if t.pid == root {
			for _, c := range extra {
				kids[c] = true
			}
		}
		sorted := make([]int, 0, len(kids))
		for c := range kids {
			sorted = append(sorted, c)
		}
		sort.Ints(sorted)
		for _, c := range sorted {
			child := &dtask{pid: c, parent: t}
			t.children = append(t.children, child)
			queue = append(queue, child)
		}
	}
	if thaw != nil {
		if err := thaw(); err != nil {
			return nil, fmt.Errorf("thaw: %w", err)
		}
		for _, t := range tasks {
			for _, th := range t.threads {
				if th.t == nil {
					continue
				}
				if _, err := th.t.WaitInterrupt(); err != nil {
					return nil, err
				}
			}
		}
	}
	// Children were queued with a provisional parent link; replace the
	// placeholders by the tasks actually collected.
	for _, t := range tasks {
		for i, c := range t.children {
			if byPid[c.pid] != c {
				// Reached twice: an extra root inside the tree.
				return nil, fmt.Errorf("pid %d is both an extra root and in the tree of %d", c.pid, root)
			}
			t.children[i] = byPid[c.pid]
			byPid[c.pid].parent = t
		}
	}
	adoptGroups(tasks)
	d.outside = outsideOf(tasks, d.level)
	return tasks, nil
}

// outsideIDs are the session and process group a tree's root was started
// in, its parent's, when no task of the tree leads them (0 when they are
// outside the root's pid namespace, or led from inside): a shell's job
// session and group. Its tasks in them, the root or tasks it cloned before
// it left them, are the restorer's on restore, like the root's own.
type outsideIDs struct{ sid, pgid int }

// outsideNS stands, in the dump's and the restore's view of a tree, for
// a session or process group whose leader lies outside the tree's pid
// namespace: the kernel shows its id as 0 there (a tree started from a
// shell outside the namespace, as in a container or CI runner). There
// can be one such session and group only: a task leaves it only by
// setsid or setpgid, whose ids are then the tree's own. Images record
// it as 0, as the kernel shows it (imageID). It is above every pid
// (PID_MAX_LIMIT is 1<<22), so it names no task and no helper.
const outsideNS = 1 << 30

// unseenID maps a session or group id 0, one outside the namespace, to
// outsideNS.
func unseenID(id int) int {
	if id == 0 {
		return outsideNS
	}
	return id
}

// imageID is the id the images record for a session or group id.
func imageID(id int) uint32 {
	if id == outsideNS {
		return 0
	}
	return uint32(id)
}

func (o outsideIDs) has(id int) bool { return id > 0 && (id == o.sid || id == o.pgid) }

// outsideOf reads the root's parent's session and group, as the root's
// pid namespace sees them.
func outsideOf(tasks []*dtask, level int) outsideIDs {
	inTree := map[int]bool{}
	for _, t := range tasks {
		inTree[t.nsPid] = true
	}
	st, err := procfs.ReadStatus(tasks[0].st.Ppid)
	if err != nil {
		return outsideIDs{} // gone: the root's own ids stand for them
	}
	var o outsideIDs
	for _, k := range []struct {
		key string
		id  *int
	}{{"NSsid", &o.sid}, {"NSpgid", &o.pgid}} {
		if v, err := st.Ints(k.key); err == nil && len(v) > level && !inTree[v[level]] {
			*k.id = unseenID(v[level])
		}
	}
	return o
}

// samePidNS checks that the extra roots live in root's pid namespace.
func samePidNS(root int, extra []int) error {
	if len(extra) == 0 {
		return nil
	}
	want, err := os.Readlink(procfs.Path(root, "ns/pid"))
	if err != nil {
		return err
	}
	for _, p := range extra {
		ns, err := os.Readlink(procfs.Path(p, "ns/pid"))
		if err != nil {
			return fmt.Errorf("extra root %d: %w", p, err)
		}
		if ns != want || p == root {
			return fmt.Errorf("extra root %d is not another process of the pid namespace of %d", p, root)
		}
	}
	return nil
}

// adoptGroups records the tasks of the extra roots' trees whose session
// or process group lies outside the root's pid namespace (outsideNS: a
// `runc exec` process's) in the root's, which a restore then gives
// them: the root is the one task of the tree such a task can inherit
// them from. The root's own tasks keep outsideNS: theirs is the session
// the root was started in, and left after cloning them.
func adoptGroups(tasks []*dtask) {
	root := tasks[0]
	for _, t := range tasks[1:] {
		top := t
		for top.parent != root {
			top = top.parent
		}
		if top.st.Ppid == root.pid {
			continue // the root's child, not an extra root
		}
		if t.nsSid == outsideNS && root.nsSid != outsideNS {
			t.nsSid = root.nsSid
		}
		if t.nsPgid == outsideNS && root.nsPgid != outsideNS {
			t.nsPgid = root.nsPgid
		}
	}
}

// seizeThreads seizes every thread of t, going over the thread list until
// it holds still (a running thread may create another).
func (d *dumper) seizeThreads(t *dtask, wait bool) error {
	seized := map[int]bool{}
	for {
		tids, err := procfs.Tids(t.pid)
		if err != nil {
			return err
		}
		// Every new thread is seized and asked to stop first, then each
		// stop is collected: the stops of a thousand threads overlap
		// instead of costing a round trip each. With wait, all of this
		// round's threads are stopped before the list is read again, so
		// a thread created meanwhile shows in that list.
		var pending []*dthread
		for _, tid := range tids {
			if seized[tid] {
				continue
			}
			pt, err := ptrace.Seize(tid, unix.PTRACE_O_TRACESYSGOOD)
			if err != nil {
				if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EPERM) && threadEnded(t.pid, tid) {
					continue // exited meanwhile (EPERM: a zombie already)
				}
				t.threads = append(t.threads, pending...)
				return err
			}
			seized[tid] = true
			th := &dthread{tid: tid, t: pt}
			if err := pt.InterruptNoWait(); err != nil {
				t.threads = append(t.threads, pending...)
				t.threads = append(t.threads, th)
				return err
			}
			pending = append(pending, th)
		}
		if len(pending) == 0 {
			break
		}
		for i, th := range pending {
			if !wait {
				t.threads = append(t.threads, th)
				continue
			}
			if _, err := th.t.WaitInterrupt(); err != nil {
				var ee *ptrace.ExitedError
				if errors.As(err, &ee) {
					continue // exited before it stopped; our wait took its exit
				}
				t.threads = append(t.threads, pending[i:]...)
				return err
			}
			t.threads = append(t.threads, th)
		}
	}
	// The leader first, then by tid.
	sort.Slice(t.threads, func(i, j int) bool {
		a, b := t.threads[i].tid, t.threads[j].tid
		if a == t.pid || b == t.pid {
			return a == t.pid
		}
		return a < b
	})
	if len(t.threads) == 0 || t.threads[0].tid != t.pid {
		if threadEnded(t.pid, t.pid) {
			for _, th := range t.threads {
				_ = th.t.Detach(0) // the task is exiting: ESRCH is expected
			}
			t.threads = nil
			return errTaskExited
		}
		return errors.New("thread group leader is gone")
	}
	// Each thread's status (its pid in the namespace among the rest) is
	// read once, by dumpEarly, when the tree is stopped.
	for _, th := range t.threads {
		comm, err := procfs.ReadFile(procfs.TaskPath(t.pid, th.tid, "comm"))
		if err != nil {
			return err
		}
		th.comm = strings.TrimSuffix(string(comm), "\n")
	}
	return nil
}

// errTaskExited: the task exited while it was being seized.
var errTaskExited = errors.New("task exited while being seized")

// threadEnded reports whether thread tid of pid has exited: a zombie, dead,
// or gone from /proc.
func threadEnded(pid, tid int) bool {
	b, err := procfs.ReadFile(procfs.TaskPath(pid, tid, "stat"))
	if err != nil {
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH)
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// checkSharing finds what processes of the tree share (kcmp): an fd
// table (CLONE_FILES) or fs info (CLONE_FS) gets one id for all its
// holders, with their parent or not (CLONE_PARENT siblings), and is
// restored shared; an address space (vfork, CLONE_VM without
// CLONE_THREAD) is refused. checkShape then refuses the sharing a
// restore could not rebuild.
func (d *dumper) checkSharing(tasks []*dtask) error {
	for _, t := range tasks {
		if err := checkThreadsShare(t); err != nil {
			return err
		}
	}
	for _, t := range tasks {
		t.filesID, t.fsID = uint32(t.nsPid), uint32(t.nsPid)
		if t.zombie || t.parent == nil || t.parent.zombie {
			continue
		}
		r, err := kcmp(t.parent.pid, t.pid, kcmpVM, 0, 0)
		if err != nil {
			return err
		}
		if r == 0 {
			return sharedVMError(t.pid, t.parent.pid)
		}
	}
	// Tasks sorted by kcmp's order put the holders of one object side by
	// side: each run of them gets the smallest of their pids.
	live := make([]*dtask, 0, len(tasks))
	for _, t := range tasks {
		if !t.zombie {
			live = append(live, t)
		}
	}
	for _, k := range []struct {
		typ int
		id  func(*dtask) *uint32
	}{
		{kcmpFiles, func(t *dtask) *uint32 { return &t.filesID }},
		{kcmpFs, func(t *dtask) *uint32 { return &t.fsID }},
	} {
		var sortErr error
		sort.SliceStable(live, func(i, j int) bool {
			r, err := kcmp(live[i].pid, live[j].pid, k.typ, 0, 0)
			if err != nil && sortErr == nil {
				sortErr = err
			}
			return r == 1
		})
		if sortErr != nil {
			return sortErr
		}
		for i := 0; i < len(live); {
			j := i + 1
			for ; j < len(live); j++ {
				r, err := kcmp(live[i].pid, live[j].pid, k.typ, 0, 0)
				if err != nil {
					return err
				}
				if r != 0 {
					break
				}
			}
			id := *k.id(live[i])
			for _, t := range live[i:j] {
				id = min(id, uint32(t.nsPid))
			}
			for _, t := range live[i:j] {
				*k.id(t) = id
			}
			i = j
		}
	}
	shape := map[int]*shapeTask{}
	for _, t := range tasks {
		shape[t.nsPid] = &shapeTask{pid: t.nsPid, ppid: t.nsPpid, sid: t.nsSid, files: t.filesID, fs: t.fsID, zombie: t.zombie}
	}
	_, err := checkShape(shape, tasks[0].nsPid, tasks[0].nsPgid, d.outside)
	return err
}

// resumeTask detaches from every thread of t, giving back the signals
// held during the dump and putting a stopped task back in its stop.
func resumeTask(t *dtask, log *logrus.Entry) {
	for _, th := range t.threads {
		if th.t == nil {
			continue
		}
		for _, s := range th.t.Deferred() {
			if err := unix.Tgkill(t.pid, th.tid, s); err != nil && !errors.Is(err, unix.ESRCH) {
				log.WithError(err).WithField("signal", s).Warn("give back a held signal")
			}
		}
	}
	if t.stopped && len(t.threads) > 0 && t.threads[0].t != nil {
		if err := unix.Tgkill(t.pid, t.pid, unix.SIGSTOP); err != nil && !errors.Is(err, unix.ESRCH) {
			log.WithError(err).Warn("stop the task again")
		}
	}
	for _, th := range t.threads {
		if th.t == nil {
			continue
		}
		if err := th.t.Detach(0); err != nil && !errors.Is(err, unix.ESRCH) {
			log.WithError(err).Warn("detach")
		}
		th.t = nil
	}
}

// killTree kills every process of the dumped tree and waits until they
// are dead. The tracer must collect the exit of each traced thread (a
// traced thread's death waits for its tracer; a leader's is reported only
// after its threads'; an init's only after its namespace's other tasks'),
// so every thread but the root's leader is reaped here, deepest tasks
// first. The root's leader is waited for without reaping it: its parent,
// which may be our own caller, collects its status once our tracing
// thread is gone.
func killTree(tasks []*dtask) error {
	for _, t := range tasks {
		if !t.zombie {
			_ = unix.Kill(t.pid, unix.SIGKILL)
		}
	}
	reap := func(tid int) {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || ws.Exited() || ws.Signaled() {
				return
			}
		}
	}
	for i := len(tasks) - 1; i >= 0; i-- {
		t := tasks[i]
		if t.zombie {
			continue
		}
		for _, th := range t.threads[1:] {
			reap(th.tid)
		}
		if i > 0 {
			reap(t.pid)
		}
	}
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, tasks[0].pid, &info, unix.WEXITED|unix.WNOWAIT|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("waitid", err)
		}
		return nil
	}
}

// dumpTask reads the state of every thread of t and, with syscalls
// injected into it, what only the task can tell.
func (d *dumper) dumpTask(t *dtask) (err error) {
	for _, th := range t.threads {
		if err := dumpThreadRegs(th); err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
	}
	if err := dumpEarly(t, d.level); err != nil {
		return err
	}
	um, err := t.status.Uint("Umask", 8)
	if err != nil {
		return err
	}
	t.umask = uint32(um)

	lead := t.threads[0]
	// smaps, for dumpMM's VmFlags too: the scratch area mapped below is
	// gone again by then, and the layout is as read here. (Reading the
	// maps twice cost a tree of 200 some 20 ms.)
	vmas, err := procfs.ReadMaps(t.pid)
	if err != nil {
		return err
	}
	t.maps = vmas
	var code *procfs.VMA
	for _, v := range vmas {
		if v.Start <= lead.regs.Rip && lead.regs.Rip < v.End && v.Exec {
			code = v
		}
	}
	if code == nil {
		// Stopped in the vDSO or elsewhere odd: any executable mapping
		// of the task will do.
		for _, v := range vmas {
			if v.Exec && v.Path != "[vsyscall]" {
				code = v
				break
			}
		}
	}
	if code == nil {
		return fmt.Errorf("no executable mapping to run syscalls from")
	}
	r, undo, err := prepareRemote(lead.t, code.Start)
	if err != nil {
		return err
	}
	// A scratch area left in the task would be dumped with its memory.
	defer func() {
		if uerr := undo(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unmap the scratch area: %w", uerr))
		}
	}()

	if t.personality, err = readPersonality(t.pid, r); err != nil {
		return err
	}
	// What the process shares, in one batch (batch.go): brk, the
	// signal actions, the interval timers, the subreaper flag, the
	// dumpable mode.
	sa, err := r.alloc(kabi.NSig * kabi.SizeofKSigaction)
	if err != nil {
		return err
	}
	it, err := r.alloc(3 * 32)
	if err != nil {
		return err
	}
	out, err := r.alloc(8)
	if err != nil {
		return err
	}
	// Per-thread state only the thread itself can report: clear-tid
	// address, signal stack, parent-death signal, securebits. The
	// leader's go in the process's batch: one stop less a task.
	tout, err := r.alloc(8 + kabi.SizeofStackT + 8)
	if err != nil {
		return err
	}
	threadCalls := func(b *batch) {
		b.add("prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, tout)
		b.add("sigaltstack", unix.SYS_SIGALTSTACK, 0, tout+8)
		b.add("prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, tout+8+kabi.SizeofStackT)
		b.add("prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	}
	threadState := func(th *dthread, securebits uint64) error {
		var o [8 + kabi.SizeofStackT + 8]byte
		if err := r.read(tout, o[:]); err != nil {
			return err
		}
		th.tidAddr = binary.LittleEndian.Uint64(o[:])
		th.altstack = kabi.StackT{
			SP:    binary.LittleEndian.Uint64(o[8:]),
			Flags: int32(binary.LittleEndian.Uint32(o[16:])),
			Size:  binary.LittleEndian.Uint64(o[24:]),
		}
		th.attrs.pdeathsig = binary.LittleEndian.Uint32(o[8+kabi.SizeofStackT:])
		if err := dumpCreds(th, uint32(securebits)); err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
		return nil
	}
	r.stop = stopFromStatus(lead.attrs.status)
	b := r.batch()
	b.add("brk", unix.SYS_BRK, 0)
	b.add("prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	b.add("prctl(PR_GET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, out)
	for which := range 3 {
		b.add("getitimer", unix.SYS_GETITIMER, uint64(which), it+uint64(32*which))
	}
	// Only a caught or ignored signal has an action worth a syscall;
	// the rest are SIG_DFL. SIGCHLD is always asked: SA_NOCLDWAIT and
	// SA_NOCLDSTOP matter even with SIG_DFL. The task is stopped now, so
	// its status is current.
	asked := ^uint64(0)
	if st, err := procfs.ReadStatus(t.pid); err == nil {
		cgt, err1 := st.Uint("SigCgt", 16)
		ign, err2 := st.Uint("SigIgn", 16)
		if err1 == nil && err2 == nil {
			asked = cgt | ign | 1<<(unix.SIGCHLD-1)
		}
	}
	for sig := 1; sig <= kabi.NSig; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) || asked&(1<<(sig-1)) == 0 {
			continue
		}
		b.add("rt_sigaction", unix.SYS_RT_SIGACTION, uint64(sig), 0, sa+uint64(sig-1)*kabi.SizeofKSigaction, 8)
	}
	threadCalls(b)
	res, err := b.run()
	if err != nil {
		return err
	}
	if err := threadState(lead, res[len(res)-1]); err != nil {
		return err
	}
	t.brk, t.attrs.dumpable = res[0], uint32(res[1])
	var w [4]byte
	if err := r.read(out, w[:]); err != nil {
		return err
	}
	t.attrs.subreaper = binary.LittleEndian.Uint32(w[:]) != 0
	sab := make([]byte, kabi.NSig*kabi.SizeofKSigaction)
	if err := r.read(sa, sab); err != nil {
		return err
	}
	for sig := 1; sig <= kabi.NSig; sig++ {
		if asked&(1<<(sig-1)) == 0 {
			clear(sab[(sig-1)*kabi.SizeofKSigaction : sig*kabi.SizeofKSigaction])
		}
	}
	t.sigactions = make([]kabi.KSigaction, kabi.NSig)
	for i := range t.sigactions {
		b := sab[i*kabi.SizeofKSigaction:]
		t.sigactions[i] = kabi.KSigaction{
			Handler:  binary.LittleEndian.Uint64(b),
			Flags:    binary.LittleEndian.Uint64(b[8:]),
			Restorer: binary.LittleEndian.Uint64(b[16:]),
			Mask:     binary.LittleEndian.Uint64(b[24:]),
		}
	}
	var ib [3 * 32]byte
	if err := r.read(it, ib[:]); err != nil {
		return err
	}
	for which := range 3 {
		for k := range 4 {
			t.itimers[which][k] = binary.LittleEndian.Uint64(ib[32*which+8*k:])
		}
	}

	for _, th := range t.threads[1:] {
		tr := r.forTask(th.t) // crash-safe like the leader's calls
		tr.stop = stopFromStatus(th.attrs.status)
		b := tr.batch()
		threadCalls(b)
		res, err := b.run()
		if err != nil {
			return fmt.Errorf("thread %d: %w", th.tid, err)
		}
		if err := threadState(th, res[3]); err != nil {
			return err
		}
	}
	return d.dumpAttrs(t, r)
}

func dumpThreadRegs(th *dthread) error {
	var err error
	if th.regs, err = th.t.GetRegs(); err != nil {
		return err
	}
	if th.xsave, err = th.t.GetXState(); err != nil {
		return err
	}
	if th.sigmask, err = th.t.GetSigmask(); err != nil {
		return err
	}
	if th.rseq, err = th.t.GetRseq(); err != nil {
		return err
	}
	th.robustHead, th.robustLen, err = getRobustList(th.tid)
	return err
}

// copyGroup runs the page copies of several tasks at once, at most one
// per CPU (each copy of a large task splits itself across CPUs too).
type copyGroup struct {
	ctx context.Context
	sem chan struct{}
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

func newCopyGroup(ctx context.Context) *copyGroup {
	return &copyGroup{ctx: ctx, sem: make(chan struct{}, max(1, min(runtime.GOMAXPROCS(0), 4)))}
}

// do runs f on a worker; after the first failure nothing more runs.
func (g *copyGroup) do(f func() error) {
	g.sem <- struct{}{}
	g.wg.Add(1)
	go func() {
		defer func() { <-g.sem; g.wg.Done() }()
		g.mu.Lock()
		failed := g.err != nil
		g.mu.Unlock()
		var err error
		if failed {
			return
		}
		if err = g.ctx.Err(); err == nil {
			err = f()
		}
		if err != nil {
			g.mu.Lock()
			if g.err == nil {
				g.err = err
			}
			g.mu.Unlock()
		}
	}()
}

// wait waits for every copy and returns the first error.
func (g *copyGroup) wait() error {
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// dumpMM describes the address space of t and scans its pages; the copy
// of the pages into the image runs on copies.
func (d *dumper) dumpMM(t *dtask, copies *copyGroup) error {
	pid, st := t.pid, t.st
	vmas := t.maps
	auxv, err := procfs.ReadAuxv(pid)
	if err != nil {
		return err
	}
	exe, err := os.Readlink(procfs.Path(pid, "exe"))
	if err != nil {
		return err
	}
	if strings.HasSuffix(exe, " (deleted)") {
		return fmt.Errorf("executable %s: deleted executables: %w", exe, ErrNotSupported)
	}
	exeID, err := d.files.pathFile(exe, procfs.Path(pid, "exe"), unix.O_RDONLY)
	if err != nil {
		return err
	}
	t.mm = &pb.MmEntry{
		MmStartCode:  proto.Uint64(st.StartCode),
		MmEndCode:    proto.Uint64(st.EndCode),
		MmStartData:  proto.Uint64(st.StartData),
		MmEndData:    proto.Uint64(st.EndData),
		MmStartStack: proto.Uint64(st.StartStack),
		MmStartBrk:   proto.Uint64(st.StartBrk),
		MmBrk:        proto.Uint64(t.brk),
		MmArgStart:   proto.Uint64(st.ArgStart),
		MmArgEnd:     proto.Uint64(st.ArgEnd),
		MmEnvStart:   proto.Uint64(st.EnvStart),
		MmEnvEnd:     proto.Uint64(st.EnvEnd),
		ExeFileId:    proto.Uint32(exeID),
		MmSavedAuxv:  auxv,
	}

	pages, err := d.dir.CreatePages(pagesName(t.nsPid))
	if err != nil {
		return err
	}
	md, err := mem.NewDumper(pid, pages)
	if err != nil {
		_ = pages.Close()
		return err
	}
	md.Progress = d.progress.counter()
	handedOff := false
	defer func() {
		if !handedOff {
			_ = md.Close()
			_ = pages.Close()
		}
	}()
	like := likeParent(t)
	var ppm *procfs.Pagemap
	defer func() {
		if ppm != nil {
			_ = ppm.Close()
		}
	}()
	for _, v := range vmas {
		e, err := d.vmaEntry(pid, v)
		if err != nil {
			return err
		}
		if e == nil {
			continue
		}
		t.mm.Vmas = append(t.mm.Vmas, e)
		t.vmas = append(t.vmas, &pb.CrhookVmaEntry{Start: proto.Uint64(v.Start), VmFlags: proto.String(v.FlagsText)})
		var parent *procfs.Pagemap
		if inheritable(e) && like[keyOf(e, v.FlagsText)] {
			if ppm == nil {
				if ppm, err = procfs.OpenPagemap(t.parent.pid); err != nil {
					return err
				}
			}
			parent = ppm
		}
		r, err := md.DumpShared(v, mem.PolicyFor(v), parent)
		if err != nil {
			return fmt.Errorf("dump memory %s: %w", v.Line(), err)
		}
		t.runs = append(t.runs, r...)
	}
	handedOff = true
	copies.do(func() error {
		defer pages.Close()
		defer md.Close()
		if err := md.Flush(); err != nil {
			return fmt.Errorf("copy the pages of pid %d: %w", pid, err)
		}
		if err := pages.Close(); err != nil {
			return fmt.Errorf("copy the pages of pid %d: %w", pid, err)
		}
		if n, c, ok := md.Sum(); ok {
			d.dir.RecordChecksum(pagesName(t.nsPid), n, c)
		}
		copies.mu.Lock()
		d.stats.PagesScanned += md.Stats.PagesScanned
		d.stats.PagesSkipped += md.Stats.PagesZero
		d.stats.PagesWritten += md.Stats.PagesWritten
		d.stats.PagesParent += md.Stats.PagesParent
		copies.mu.Unlock()
		return nil
	})
	return nil
}

// likeParent returns the keys of the mappings of t's parent that a fork
// shares (inherit.go), when the parent's memory is dumped already: a page
// of t in a like mapping that is still the parent's page is recorded as
// the parent's (mem.DumpShared), which a restore that clones t from its
// parent inherits as such (planInherit keeps exactly these mappings).
func likeParent(t *dtask) map[vmaKey]bool {
	p := t.parent
	if p == nil || p.zombie || p.mm == nil {
		return nil
	}
	flags := make(map[uint64]string, len(p.vmas))
	for _, e := range p.vmas {
		flags[e.GetStart()] = e.GetVmFlags()
	}
	keys := map[vmaKey]bool{}
	for _, v := range p.mm.GetVmas() {
		if inheritable(v) {
			keys[keyOf(v, flags[v.GetStart()])] = true
		}
	}
	return keys
}
