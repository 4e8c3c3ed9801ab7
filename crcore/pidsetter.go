//go:build linux && amd64

package crcore

import (
	"fmt"
	"os"
	"strconv"

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
		// Move the namespace's pid counter past every needed pid, start
		// another husk there and let the first one go.
		high := 0
		for pid := range need {
			high = max(high, pid)
		}
		if err := p.set(high + 1); err != nil {
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
