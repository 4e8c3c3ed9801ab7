//go:build linux && amd64

package crcore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// RestoreOnExec transplants the checkpoint in opts.ImageDir into process
// pid when that process next calls execve. It is how a container is
// restored inside the container a runtime builds: pid is the container's
// init as the runtime left it before "start" (runc init), which already
// has the container's namespaces, cgroups, mounts, credentials, seccomp
// filter and stdio. Every thread of pid is seized with PTRACE_O_TRACEEXEC;
// at the exec event, before the new program runs one instruction, its
// address space and state are replaced by the image's, and it goes on as
// the checkpointed process. The process must have, in its own pid
// namespace, the pid the image's root had.
//
// Nothing is gained in privilege: every step runs as syscalls of the
// target itself, under its credentials and filters. The executable link
// (/proc/PID/exe) is set only when the target holds
// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN.
//
// RestoreOnExec blocks until the exec or ctx's end. If the transplant
// fails the process is killed, so the runtime sees its init die.
func RestoreOnExec(ctx context.Context, opts RestoreOptions, pid int) (*Restored, error) {
	var res *Restored
	err := onLockedThread(func() error {
		var err error
		res, err = restoreOnExec(ctx, opts, pid, logOrDiscard(opts.Log))
		return err
	})
	return res, err
}

func restoreOnExec(ctx context.Context, opts RestoreOptions, pid int, log *logrus.Entry) (*Restored, error) {
	start := time.Now()
	imgs, err := loadDeferringPages(opts.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", opts.ImageDir, err)
	}
	defer imgs.dir.Close()
	root := imgs.tasks[int(imgs.tree[0].GetPid())]
	nsPid, err := innermostPid(pid)
	if err != nil {
		return nil, fmt.Errorf("restore into pid %d: %w", pid, err)
	}
	if nsPid != root.pid {
		return nil, fmt.Errorf("restore into pid %d: it is pid %d in its namespace, the image's root was %d", pid, nsPid, root.pid)
	}
	t, err := waitExec(ctx, pid, log)
	if err != nil {
		return nil, fmt.Errorf("restore into pid %d: %w", pid, err)
	}
	// At the exec event the task is still inside execve, whose return
	// would overwrite the first injected syscall's number: let it finish.
	if err := toSyscallExit(t); err != nil {
		killAndReap(t)
		return nil, fmt.Errorf("restore into pid %d: %w", pid, err)
	}
	// From here on the task creates the tree: follow its clones.
	if err := t.SetOptions(unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACECLONE |
		unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK); err != nil {
		killAndReap(t)
		return nil, fmt.Errorf("restore into pid %d: %w", pid, err)
	}
	// Capabilities as execve left them.
	imgs.keepExe = !hasCheckpointCap(pid)
	imgs.root = procfs.Path(pid, "root")
	checked := newPreflightDone()
	for _, ti := range imgs.tasks {
		if err := imgs.preflight(ti, checked); err != nil {
			killAndReap(t)
			return nil, fmt.Errorf("restore into pid %d: pid %d: %w", pid, ti.pid, err)
		}
	}
	plan, err := imgs.shape()
	if err != nil {
		killAndReap(t)
		return nil, fmt.Errorf("restore into pid %d: %w", pid, err)
	}
	ok := false
	defer func() {
		if !ok {
			killAndReap(t)
		}
	}()
	regs, err := t.GetRegs()
	if err != nil {
		return nil, err
	}
	if err := t.Poke(regs.Rip, ptrace.Gadget); err != nil {
		return nil, err
	}
	rs := newRestorer(ctx, imgs, opts, log)
	rs.shape = plan
	rs.keepStdio = true
	rs.nsTarget = pid
	defer rs.cl.run()
	// The pid chooser lives in the container's pid namespace: it must be
	// gone (and reaped) whatever happens, or the container's init could
	// never finish dying.
	defer func() {
		if rs.pids != nil {
			rs.pids.close()
		}
	}()
	if err := rs.run(&rtask{ti: root, hostPid: pid, t: t}, regs.Rip); err != nil {
		return nil, fmt.Errorf("restore into pid %d: %w", pid, err)
	}
	rs.cl.release()
	ok = true
	rs.st.TotalTime = time.Since(start)
	return &Restored{Pid: pid, Stats: rs.st}, nil
}

// waitExec seizes every thread of pid and lets the process run until one
// of its threads completes an execve; it returns the task stopped at the
// exec event. Signals the process gets meanwhile are delivered.
// Precondition: OS thread locked.
func waitExec(ctx context.Context, pid int, log *logrus.Entry) (*ptrace.Task, error) {
	opts := unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_EXITKILL
	seized := map[int]bool{}
	detachAll := func() {
		for tid := range seized {
			_ = ptrace.Adopt(tid).Detach(0) // best effort on the error path; ESRCH for a thread that exited
		}
	}
	// Threads may be created while we seize: go over the list until it
	// holds still (later ones are attached through PTRACE_EVENT_CLONE).
	for {
		tids, err := procfs.Tids(pid)
		if err != nil {
			detachAll()
			return nil, err
		}
		added := false
		for _, tid := range tids {
			if seized[tid] {
				continue
			}
			if _, err := ptrace.Seize(tid, opts); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue
				}
				detachAll()
				return nil, err
			}
			seized[tid] = true
			added = true
		}
		if !added {
			break
		}
	}
	log.WithFields(logrus.Fields{"pid": pid, "threads": len(seized)}).Debug("waiting for exec")
	for {
		if err := ctx.Err(); err != nil {
			detachAll()
			return nil, err
		}
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("wait4", err)
		}
		switch {
		case ws.Exited() || ws.Signaled():
			delete(seized, wpid)
			if wpid == pid && len(seized) == 0 {
				return nil, fmt.Errorf("process %d ended before it exec'd (%v)", pid, ws)
			}
			continue
		case !ws.Stopped():
			continue
		}
		switch ev := ptrace.Event(ws); {
		case ev == kabi.PTRACE_EVENT_EXEC:
			return ptrace.Adopt(wpid), nil
		case ev == kabi.PTRACE_EVENT_CLONE:
			if msg, err := unix.PtraceGetEventMsg(wpid); err == nil {
				seized[int(msg)] = true
			}
			// A restart fails only for a thread killed meanwhile; the
			// wait reports its exit.
			_ = unix.PtraceCont(wpid, 0)
		case ev != 0:
			// Interrupt, group stop or a new thread's first stop.
			_ = unix.PtraceCont(wpid, 0)
		default:
			// Signal-delivery stop: deliver it (the Go runtime of runc
			// init preempts its threads with SIGURG).
			_ = unix.PtraceCont(wpid, int(ws.StopSignal()))
		}
	}
}

// innermostPid is pid as its own pid namespace sees it.
func innermostPid(pid int) (int, error) {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return 0, err
	}
	ns, err := st.Ints("NSpid")
	if err != nil || len(ns) == 0 {
		return 0, fmt.Errorf("no NSpid for pid %d", pid)
	}
	return ns[len(ns)-1], nil
}

// hasCheckpointCap reports whether pid's effective capabilities let it
// set its own executable link.
func hasCheckpointCap(pid int) bool {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return false
	}
	eff, err := st.Uint("CapEff", 16)
	if err != nil {
		return false
	}
	return eff&(1<<unix.CAP_CHECKPOINT_RESTORE) != 0 || eff&(1<<unix.CAP_SYS_ADMIN) != 0
}

// toSyscallExit runs a task stopped at PTRACE_EVENT_EXEC to the exit stop
// of its execve.
func toSyscallExit(t *ptrace.Task) error {
	for {
		if err := unix.PtraceSyscall(t.Tid, 0); err != nil {
			return os.NewSyscallError("ptrace(PTRACE_SYSCALL)", err)
		}
		ws, err := t.WaitStop()
		if err != nil {
			return err
		}
		if ws.Stopped() && ws.StopSignal() == unix.SIGTRAP|0x80 {
			return nil
		}
	}
}
