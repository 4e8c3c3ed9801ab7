//go:build linux && amd64

package crcore

import (
	"fmt"
	"sort"
)

// The shapes of a tree crhook can rebuild, checked on the dump's tasks
// (before the tree is touched) and again on the images at restore.
//
// A task's parent and session come only from clone(2) (the new task is
// the cloner's child, or with CLONE_PARENT its sibling, in the cloner's
// session and group), from setsid/setpgid, and from reparenting when a
// parent exits (to the nearest child subreaper among its ancestors, or
// the pid namespace's init). An fd table or fs info is shared only by
// clone with CLONE_FILES or CLONE_FS, between the cloner and the new
// task. The restore follows the same rules; sessions.go says how.

// shapeTask is what the shape checks need of one task.
type shapeTask struct {
	pid, ppid, sid int
	files, fs      uint32 // kobj ids: equal ids, one object
	zombie         bool
}

// shapePlan is what the restore takes from the checks.
type shapePlan struct {
	// helperParent: for each session whose leader has exited, the task
	// its helper is cloned from (the deepest parent of its members).
	helperParent map[int]int
}

// checkShape refuses a tree whose sessions or sharing crhook cannot
// rebuild, saying why; root is the root's pid, rootPgid its group.
func checkShape(tasks map[int]*shapeTask, root int, rootPgid int) (*shapePlan, error) {
	pids := make([]int, 0, len(tasks))
	for pid := range tasks {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	// within says whether a is b or one of its ancestors.
	within := func(a, b int) bool {
		for n := 0; n <= len(tasks); n++ {
			if a == b {
				return true
			}
			t, ok := tasks[b]
			if !ok || t.ppid == b {
				return false
			}
			b = t.ppid
		}
		return false
	}
	rootSid := tasks[root].sid
	plan := &shapePlan{helperParent: map[int]int{}}
	// deferred: tasks rebuilt as orphans (cloned in their session under
	// a helper, then reparented), which can share nothing.
	deferred := map[int]bool{}

	members := map[int][]*shapeTask{}
	for _, pid := range pids {
		t := tasks[pid]
		if t.sid > 0 {
			members[t.sid] = append(members[t.sid], t)
		}
	}
	sids := make([]int, 0, len(members))
	for sid := range members {
		sids = append(sids, sid)
	}
	sort.Ints(sids)
	for _, sid := range sids {
		// The members whose parent is outside the session: each was born
		// in it from another task of it, and either that task's sibling
		// (CLONE_PARENT) or reparented since.
		var outer []*shapeTask
		for _, t := range members[sid] {
			if t.pid == root || t.pid == sid {
				continue
			}
			p, ok := tasks[t.ppid]
			if ok && p.sid != sid && bornBeforeSetsid(tasks, p, sid) {
				continue // cloned from p before p's setsid
			}
			if !ok || p.sid != sid {
				outer = append(outer, t)
			}
		}
		if len(outer) == 0 {
			continue
		}
		leader, live := tasks[sid]
		switch {
		case live:
			for _, t := range outer {
				if leader.ppid == t.ppid {
					continue // cloned from its sibling the leader (CLONE_PARENT)
				}
				if leader.zombie {
					return nil, fmt.Errorf("pid %d is in session %d, whose leader is a zombie: its parent %d is neither the leader's parent nor in the session, so it would have to be cloned from the leader, which crhook restores dead: %w",
						t.pid, sid, t.ppid, ErrNotSupported)
				}
				if !within(t.ppid, leader.ppid) {
					return nil, fmt.Errorf("pid %d is in session %d, but its parent %d is not in it and is not an ancestor of the session's leader %d: a task is born in its cloner's session as the cloner's child or sibling, and an orphan goes only up to an ancestor (subreaper or init) of its parent, so %d is reachable only if %d itself was reparented away from under it, which crhook does not rebuild: %w",
						t.pid, sid, t.ppid, sid, t.ppid, sid, ErrNotSupported)
				}
				deferred[t.pid] = true
			}
		case sid == rootSid || sid == rootPgid:
			// The root's session from outside the tree: a task of it
			// whose parent is not in it was born before its parent (or
			// an ancestor) left the session with setsid.
			t := outer[0]
			return nil, fmt.Errorf("pid %d is in session %d, the root's from outside the tree, but its parent %d is not: it was born before an ancestor left the session (setsid), and crhook rebuilds that only for a child born before its own parent's setsid, whose parent's siblings are not in the parent's new session: %w",
				t.pid, sid, t.ppid, ErrNotSupported)
		default:
			// The leader has exited: a helper with its pid, cloned from
			// the deepest of the outer members' parents, leads the
			// session again; members under that parent are cloned from
			// it with CLONE_PARENT, members under an ancestor of it are
			// orphaned to that ancestor (sessions.go). Parents not on
			// one line of descent are beyond one helper: the helper's
			// session tasks reach only its parent and that parent's
			// ancestors.
			deep := outer[0].ppid
			for _, t := range outer[1:] {
				if within(deep, t.ppid) {
					deep = t.ppid
				}
			}
			for _, t := range outer {
				if !within(t.ppid, deep) {
					return nil, fmt.Errorf("session %d, whose leader has exited, has members under parents %d (pid %d) and %d that are not on one line of descent: its members were born from the leader or from each other, as children or CLONE_PARENT siblings, and were reparented only to ancestors, so one of these parents left the session (setsid) after cloning its member, which crhook does not rebuild: %w",
						sid, t.ppid, t.pid, deep, ErrNotSupported)
				}
				if t.ppid != deep {
					deferred[t.pid] = true
				}
			}
			plan.helperParent[sid] = deep
		}
	}

	for _, k := range []struct {
		what string
		id   func(*shapeTask) uint32
	}{
		{"an fd table", func(t *shapeTask) uint32 { return t.files }},
		{"fs info (cwd, root, umask)", func(t *shapeTask) uint32 { return t.fs }},
	} {
		groups := map[uint32][]*shapeTask{}
		for _, pid := range pids {
			if t := tasks[pid]; !t.zombie {
				groups[k.id(t)] = append(groups[k.id(t)], t)
			}
		}
		for _, g := range groups {
			if len(g) < 2 {
				continue
			}
			// The holders whose parent does not hold it are cloned
			// from one another with CLONE_PARENT: they must be
			// siblings.
			var head *shapeTask
			for _, t := range g {
				if deferred[t.pid] {
					return nil, fmt.Errorf("pid %d shares %s with pid %d, but is rebuilt as an orphan of %d (cloned in its session elsewhere, then reparented), which cannot share it: %w",
						t.pid, k.what, otherThan(g, t).pid, t.ppid, ErrNotSupported)
				}
				if p, ok := tasks[t.ppid]; ok && !p.zombie && k.id(p) == k.id(t) {
					continue
				}
				if head == nil {
					head = t
				} else if t.ppid != head.ppid {
					return nil, fmt.Errorf("pids %d and %d share %s, but they are not siblings (parents %d and %d) and neither's parent holds it: clone shares it only with the new task, the cloner's child or (CLONE_PARENT) sibling, so one got its parent by a reparenting or through a holder that has dropped it since (unshare, exec, exit), which crhook does not rebuild: %w",
						head.pid, t.pid, k.what, head.ppid, t.ppid, ErrNotSupported)
				}
			}
		}
	}
	return plan, nil
}

// bornBeforeSetsid says whether a child of p in session sid, which p is
// not in, was born before p left sid with setsid: p leads a session of
// its own, and its parent (in the tree) is in sid. The restore clones
// such children from p before p calls setsid (sessions.go), provided no
// sibling of p is in p's session (it would be cloned from p, CLONE_PARENT,
// which must then have called setsid already).
func bornBeforeSetsid(tasks map[int]*shapeTask, p *shapeTask, sid int) bool {
	if p.sid != p.pid || p.zombie {
		return false
	}
	pp, ok := tasks[p.ppid]
	if !ok || pp.pid == p.pid || pp.sid != sid {
		return false
	}
	for _, t := range tasks {
		if t.ppid == p.ppid && t.pid != p.pid && t.sid == p.pid {
			return false
		}
	}
	return true
}

func otherThan(g []*shapeTask, t *shapeTask) *shapeTask {
	for _, o := range g {
		if o != t {
			return o
		}
	}
	return t
}

// shapeOfImages gives checkShape the restore's images.
func (s *imageSet) shape() (*shapePlan, error) {
	tasks := map[int]*shapeTask{}
	for pid, ti := range s.tasks {
		ids := ti.core.GetIds()
		tasks[pid] = &shapeTask{pid: pid, ppid: int(ti.ps.GetPpid()), sid: int(ti.ps.GetSid()),
			files: ids.GetFilesId(), fs: ids.GetFsId(), zombie: ti.zombie()}
		if ids == nil {
			// No ids: shares nothing.
			tasks[pid].files, tasks[pid].fs = uint32(pid), uint32(pid)
		}
	}
	root := s.tasks[int(s.tree[0].GetPid())]
	return checkShape(tasks, root.pid, int(root.ps.GetPgid()))
}
