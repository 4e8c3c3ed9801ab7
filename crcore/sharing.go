//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/procfs"
)

// refuseSharedVM fails when a child of pid (of any of its threads)
// shares its address space without being its thread: a vfork child that
// has not exec'd yet, or a clone with CLONE_VM but not CLONE_THREAD.
// crhook does not rebuild a shared address space (checkSharing refuses
// it too), and this must be found before pid is stopped: a vfork parent
// sleeps (killable) until its child execs or exits, where
// PTRACE_INTERRUPT does not reach it, so the dump would wait forever.
func refuseSharedVM(pid int) error {
	tids, err := procfs.Tids(pid)
	if err != nil {
		return err
	}
	for _, tid := range tids {
		kids, err := procfs.Children(pid, tid)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("children of %d: %w", tid, err)
		}
		for _, c := range kids {
			r, err := kcmp(pid, c, kcmpVM, 0, 0)
			if errors.Is(err, unix.ESRCH) {
				continue // gone meanwhile
			}
			if err != nil {
				return err
			}
			if r == 0 {
				return sharedVMError(c, pid)
			}
		}
	}
	return nil
}

func sharedVMError(child, parent int) error {
	return fmt.Errorf("pid %d shares the address space of its parent %d (a vfork child that has not exec'd yet, or a clone with CLONE_VM but not CLONE_THREAD): %w",
		child, parent, ErrNotSupported)
}

// checkThreadsShare refuses a process one of whose threads has another
// fd table or fs info than its leader (unshare(CLONE_FILES) or
// unshare(CLONE_FS) in that thread, or in the leader): the images hold
// one of each for a process, and its threads are restored sharing them.
func checkThreadsShare(t *dtask) error {
	if t.zombie {
		return nil
	}
	for _, th := range t.threads[1:] {
		for _, k := range []struct {
			typ  int
			what string
		}{{kcmpFiles, "an fd table"}, {kcmpFs, "fs info (cwd, root, umask)"}} {
			r, err := kcmp(t.pid, th.tid, k.typ, 0, 0)
			if err != nil {
				return fmt.Errorf("pid %d thread %d: %w", t.pid, th.tid, err)
			}
			if r != 0 {
				return fmt.Errorf("thread %d of pid %d has %s of its own, not its process leader's (one of them called unshare), which crhook does not dump: %w",
					th.tid, t.pid, k.what, ErrNotSupported)
			}
		}
	}
	return nil
}
