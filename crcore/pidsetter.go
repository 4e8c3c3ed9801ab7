//go:build linux && amd64

package crcore

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// pidSetter chooses the pid of the next task created in a pid namespace
// whose own tasks may not (a container without CAP_CHECKPOINT_RESTORE):
// a husk that lives in that namespace but keeps our credentials writes
// /proc/sys/kernel/ns_last_pid, which the kernel reads in the writer's
// pid namespace, and the restored parent then clones without set_tid.
// The husk never runs an instruction of its own: every step is an
// injected syscall.
type pidSetter struct {
	h      *ptrace.Task
	gadget uint64
	buf    uint64
	fd     uint64
}

// newPidSetter starts the husk in the pid namespace of target, making
// sure it does not itself hold a pid that the image needs.
// Precondition: OS thread locked; the thread stays in the namespace for
// its children (it is never returned to the pool).
func newPidSetter(target int, need map[int]bool) (*pidSetter, error) {
	nsfd, err := unix.Open(procfs.Path(target, "ns/pid"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open pid namespace", err)
	}
	err = unix.Setns(nsfd, unix.CLONE_NEWPID)
	_ = unix.Close(nsfd)
	if err != nil {
		return nil, os.NewSyscallError("setns(CLONE_NEWPID)", err)
	}
	p, err := startPidSetter()
	if err != nil {
		return nil, err
	}
	own, err := innermostPid(p.h.Tid)
	if err != nil {
		p.close()
		return nil, err
	}
	if need[own] {
		// Move the namespace's pid counter to a pid no task needs,
		// start another husk there and let the first one go.
		free := freePids(need, 1)
		if len(free) == 0 {
			p.close()
			return nil, fmt.Errorf("no pid in the namespace is free for a helper: %w", ErrPidTaken)
		}
		if err := p.set(free[0]); err != nil {
			p.close()
			return nil, err
		}
		q, err := startPidSetter()
		p.close()
		if err != nil {
			return nil, err
		}
		p = q
	}
	return p, nil
}

func startPidSetter() (*pidSetter, error) {
	h, regs, err := startHuskIn([3]uintptr{0, 1, 2}, false)
	if err != nil {
		return nil, err
	}
	p := &pidSetter{h: h, gadget: regs.Rip, buf: (regs.Rsp - 4096) &^ 15}
	if err := h.Poke(p.gadget, ptrace.Gadget); err != nil {
		p.close()
		return nil, err
	}
	path := []byte("/proc/sys/kernel/ns_last_pid\x00")
	if err := writeMem(h.Tid, p.buf, path); err != nil {
		p.close()
		return nil, err
	}
	if p.fd, err = h.Call(p.gadget, "open ns_last_pid", unix.SYS_OPENAT, atFdcwd, p.buf, unix.O_WRONLY|unix.O_CLOEXEC, 0); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// set makes next the pid of the namespace's next new task.
func (p *pidSetter) set(next int) error {
	b := []byte(strconv.Itoa(next - 1))
	if err := writeMem(p.h.Tid, p.buf, b); err != nil {
		return err
	}
	if _, err := p.h.Call(p.gadget, "write ns_last_pid", unix.SYS_PWRITE64, p.fd, p.buf, uint64(len(b)), 0); err != nil {
		return fmt.Errorf("choose pid %d: %w", next, err)
	}
	return nil
}

func (p *pidSetter) close() {
	if p.h != nil {
		killAndReap(p.h)
		p.h = nil
	}
}

// freePids returns n pids that need does not hold, in the order to try
// them: above every pid of need, and past the last pid (pid_max) from
// the bottom up, as the kernel wraps around (pid 1 is the namespace's
// init).
func freePids(need map[int]bool, n int) []int {
	top := 1
	for pid := range need {
		top = max(top, pid)
	}
	last := pidMax() - 1
	out := make([]int, 0, n)
	for pid := top + 1; pid <= last && len(out) < n; pid++ {
		out = append(out, pid)
	}
	for pid := 2; pid <= top && pid <= last && len(out) < n; pid++ {
		if !need[pid] {
			out = append(out, pid)
		}
	}
	return out
}

// pidMax is the kernel's pid_max as this process's pid namespace has it,
// or the largest the kernel allows when it cannot be read.
func pidMax() int {
	const limit = 1 << 22 // PID_MAX_LIMIT on 64-bit
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return limit
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 1 {
		return limit
	}
	return min(n, limit)
}
