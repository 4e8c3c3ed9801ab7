//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"os"
	"slices"

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

// spoilPlan, for tests only, changes the plan a restore follows.
var spoilPlan func(*shapePlan)

// checkRestoredSharing fails unless the live tasks of the restored tree
// share fd tables and fs info exactly as the images say (CRIU's files_id
// and fs_id): a plan that gets it wrong is crhook's bug, and a tree that
// would run with it is refused rather than resumed. The tasks are sorted
// by kcmp's order, so that each kind costs O(n log n) calls.
func (rs *restorer) checkRestoredSharing() error {
	var live []*rtask
	for _, t := range rs.tasks {
		if !t.ti.zombie() {
			live = append(live, t)
		}
	}
	for _, k := range []struct {
		typ  int
		what string
		id   func(*taskImage) uint32
	}{
		{kcmpFiles, "an fd table", func(ti *taskImage) uint32 { return ti.core.GetIds().GetFilesId() }},
		{kcmpFs, "fs info", func(ti *taskImage) uint32 { return ti.core.GetIds().GetFsId() }},
	} {
		var err error
		cmp := func(a, b *rtask) int {
			r, e := kcmp(a.hostPid, b.hostPid, k.typ, 0, 0)
			if e != nil && err == nil {
				err = fmt.Errorf("kcmp %d %d: %w", a.ti.pid, b.ti.pid, e)
			}
			switch r { // kcmp: 0 equal, 1 less, 2 greater
			case 0:
				return 0
			case 1:
				return -1
			}
			return 1
		}
		sorted := slices.Clone(live)
		slices.SortStableFunc(sorted, cmp)
		if err != nil {
			return err
		}
		// Runs of equal objects must be the images' groups, one each.
		seen := map[uint32]int{} // image id -> a pid holding it
		for i := 0; i < len(sorted); {
			j := i + 1
			for j < len(sorted) && cmp(sorted[i], sorted[j]) == 0 {
				j++
			}
			if err != nil {
				return err
			}
			id := k.id(sorted[i].ti)
			for _, t := range sorted[i+1 : j] {
				if k.id(t.ti) != id {
					return fmt.Errorf("pids %d and %d share %s after the restore, which the images do not: crhook's plan for the tree is wrong", sorted[i].ti.pid, t.ti.pid, k.what)
				}
			}
			if other, ok := seen[id]; ok {
				return fmt.Errorf("pids %d and %d do not share %s after the restore, which the images say they do: crhook's plan for the tree is wrong", other, sorted[i].ti.pid, k.what)
			}
			seen[id] = sorted[i].ti.pid
			i = j
		}
	}
	return nil
}
