//go:build linux && amd64

package crcore

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"
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
	// helperFrom: for some of those sessions, a child of the helper's
	// parent that the helper is cloned from (CLONE_PARENT), to pass on
	// to the session's members what that child holds and the parent
	// does not: the exited leader held it, from that child or as it.
	helperFrom map[int]int
	// pre: for each session leader born in another session that it
	// still has children in (born before its setsid), that session. It
	// is cloned into it (from its parent, a sibling leading it, the
	// session's helper, or as an orphan from a spare helper of the
	// session's leader), clones those children, and then calls setsid.
	pre map[int]int
	// bornUnder: the task each of these is born under, as an orphan
	// going up to its parent when its spare helper exits: a live
	// session leader reparented up past the parents of its session's
	// members (the deepest of them), and a task sharing an object only
	// with holders on another branch (one of them).
	bornUnder map[int]int
	// borrowed: tasks sharing an object with their grandparent that
	// their parent does not hold (it dropped it: unshare, exec). The
	// parent is cloned sharing it too, clones them at once, and
	// unshares it (sessions.go).
	borrowed map[int]bool
	// borrowers: by parent, its borrowed children, by pid.
	borrowers map[int][]int
	// borrowFrom: parents whose borrowed children borrow from a
	// sibling of theirs (it dropped what it had from that sibling),
	// not from their grandparent: the parent is cloned from that
	// sibling (CLONE_PARENT) sharing it, clones them, and unshares.
	borrowFrom map[int]int
	// order: for each task, its children to be cloned by it, in the
	// order cloneChildren clones them (cloneOrder).
	order map[int][]int
	// early: for each leader born in another session that has a
	// sibling in its own, its children of the session it is born in,
	// in order: its parent's cloneChildren clones them from it right
	// after it, before it calls setsid and its siblings are cloned
	// from it (cloneEarly).
	early map[int][]int
	// earlySetsid: the leaders born in another session that have a
	// sibling in their own: they call setsid right after their early
	// children, in their parent's cloneChildren.
	earlySetsid map[int]bool
	// lent: tasks that lend their children (or siblings) an fd table
	// or fs info they do not hold themselves: they cloned those tasks
	// sharing it, and dropped it since (unshare). It is one the lender
	// made, its holders below the lender (lendFor) or its siblings too
	// (lendToKin), or its parent's, which the lender is cloned sharing
	// (lendBorrowed, down a line of lenders; lendToSibling). The lender
	// holds its own alone. The restore has it hold the lent one from
	// its birth, and unshare it once the tasks sharing it are cloned
	// (cloneChildren), or, for a table none of the children it is yet
	// to clone takes, before its fds are restored (dropLentTable).
	lent map[int]lentObjs
}

// lentObjs are the objects a task lends its children (0: none).
type lentObjs struct{ files, fs uint32 }

// flags are the clone (and unshare) flags of the kinds l lends.
func (l lentObjs) flags() uint64 {
	var fl uint64
	if l.files != 0 {
		fl |= unix.CLONE_FILES
	}
	if l.fs != 0 {
		fl |= unix.CLONE_FS
	}
	return fl
}

// view is t as its children see it while it lends them l.
func (l lentObjs) view(t *shapeTask) *shapeTask {
	v := *t
	if l.files != 0 {
		v.files = l.files
	}
	if l.fs != 0 {
		v.fs = l.fs
	}
	return &v
}

// shareKind is one kind of object tasks share: its name and its id.
type shareKind struct {
	what string
	id   func(*shapeTask) uint32
}

var shareKinds = []shareKind{
	{"an fd table", func(t *shapeTask) uint32 { return t.files }},
	{"fs info (cwd, root, umask)", func(t *shapeTask) uint32 { return t.fs }},
}

// shapeTree is the tasks of checkShape with their children.
type shapeTree struct {
	tasks    map[int]*shapeTask
	pids     []int // byAge
	kids     map[int][]int
	root     int
	rootPgid int
	outside  outsideIDs
	needs    map[int][]int // needsOf's memo
	lends    map[int]lentObjs
	// siblingBorrow: parents may borrow from a sibling (borrowFrom),
	// tried when the plan fails without.
	siblingBorrow bool
}

// checkShape refuses a tree whose sessions or sharing crhook cannot
// rebuild, saying why; root is the root's pid, rootPgid its group,
// outside the session and group it was started in.
func checkShape(tasks map[int]*shapeTask, root int, rootPgid int, outside outsideIDs) (*shapePlan, error) {
	sh := &shapeTree{tasks: tasks, root: root, rootPgid: rootPgid, outside: outside, kids: map[int][]int{}, needs: map[int][]int{}, lends: map[int]lentObjs{}}
	for pid := range tasks {
		sh.pids = append(sh.pids, pid)
	}
	sh.byAge(sh.pids)
	for _, pid := range sh.pids {
		if t := tasks[pid]; pid != root && tasks[t.ppid] != nil && t.ppid != pid {
			sh.kids[t.ppid] = append(sh.kids[t.ppid], pid)
		}
	}
	// A session whose leader has exited may be entered before setsid
	// by leaders cloned from its helper; that is tried only for the
	// sessions whose members cannot be reached otherwise (it moves
	// the helper up to their parent).
	// A leader may also stay in the session it is born in until its
	// siblings there that share an object with it have been cloned
	// from it; that is tried only for the leaders that cannot be
	// cloned otherwise, or whose siblings cannot.
	viaHelper, forSiblings, orphans := map[int]bool{}, map[int]int{}, map[int]bool{}
	var first error
	for {
		plan, retry, err := sh.plan(sh.preSessions(viaHelper, forSiblings, orphans))
		if err == nil {
			return plan, nil
		}
		if first == nil {
			first = err
		}
		switch {
		case retry.viaHelper != 0 && !viaHelper[retry.viaHelper]:
			viaHelper[retry.viaHelper] = true
		case retry.orphan != 0 && !orphans[retry.orphan]:
			orphans[retry.orphan] = true
		case retry.leader != 0 && forSiblings[retry.leader] == 0 && retry.session != 0:
			forSiblings[retry.leader] = retry.session
		case retry.lend != 0 && sh.lends[retry.lend] == (lentObjs{}):
			sh.lends[retry.lend] = retry.lent
		case !sh.siblingBorrow:
			// Last: parents that dropped what they had from a sibling.
			sh.siblingBorrow = true
		default:
			return nil, first
		}
	}
}

// shapeRetry is what plan suggests when it fails: a session whose leader
// has exited that leaders might enter before their setsid (viaHelper),
// or a leader that might stay in a session until its siblings there are
// cloned from it.
type shapeRetry struct {
	viaHelper       int
	orphan          int // a leader to be born an orphan in a session it needs
	leader, session int
	lend            int // a task to lend its children what lent says
	lent            lentObjs
}

// byAge sorts pids in the order the kernel gave them out, which is the
// order of the tasks' births: ascending from the root's, the root being
// older than every task of its tree, and then those below it, given out
// after the pids wrapped around at pid_max.
func (sh *shapeTree) byAge(pids []int) {
	sort.Slice(pids, func(i, j int) bool { return sh.older(pids[i], pids[j]) })
}

// older says whether the task with pid a was born before b's (byAge).
func (sh *shapeTree) older(a, b int) bool {
	if wa, wb := a < sh.root, b < sh.root; wa != wb {
		return wb
	}
	return a < b
}

// deepest returns the deepest of ts's parents, the one the others are
// ancestors of when they are on one line of descent.
func (sh *shapeTree) deepest(ts []*shapeTask) int {
	deep := ts[0].ppid
	for _, t := range ts[1:] {
		if sh.within(deep, t.ppid) {
			deep = t.ppid
		}
	}
	return deep
}

// within says whether a is b or one of its ancestors.
func (sh *shapeTree) within(a, b int) bool {
	for n := 0; n <= len(sh.tasks); n++ {
		if a == b {
			return true
		}
		t, ok := sh.tasks[b]
		if !ok || t.ppid == b {
			return false
		}
		b = t.ppid
	}
	return false
}

// needsOf returns, byAge, the sessions other than its own that task pid
// has to be in before it calls setsid (were it a leader) for its
// children to be born in theirs: its children's sessions, and for a
// child that leads a session, what that child needs.
func (sh *shapeTree) needsOf(pid int) []int {
	if n, ok := sh.needs[pid]; ok {
		return n
	}
	set := map[int]bool{}
	for _, k := range sh.kids[pid] {
		if kt := sh.tasks[k]; kt.sid != k {
			set[kt.sid] = true
		} else {
			for _, s := range sh.needsOf(k) {
				set[s] = true
			}
		}
	}
	delete(set, pid)
	delete(set, 0)
	out := make([]int, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sh.byAge(out)
	sh.needs[pid] = out
	return out
}

// siblingLeader says whether session s is led by a live child of pp.
func (sh *shapeTree) siblingLeader(pp, s int) bool {
	l, ok := sh.tasks[s]
	return ok && l.ppid == pp && l.sid == s && !l.zombie
}

// preSessions chooses, from the root down, the session each session
// leader is born in when it has children in one it does not lead (born
// before its setsid): one its parent is in when it clones it (the
// parent's own, or the one the parent is born in), or, for the sessions
// of viaHelper, whose leader has exited, that session's helper (cloned
// from the parent, the leader from it with CLONE_PARENT), or else one a
// live sibling leads (cloned from that sibling). A leader with
// a sibling in its own session (cloned from it with CLONE_PARENT, after
// its setsid) clones those children at once, and calls setsid then
// (plan.early). A leader of forSiblings is born in the session given
// there, for siblings of it in that session to be cloned from it. A
// leader of orphans is born, when no other session fits, in one it
// needs whose live leader's parent is below its own parent: as an
// orphan, from a spare helper of that leader.
func (sh *shapeTree) preSessions(viaHelper map[int]bool, forSiblings map[int]int, orphans map[int]bool) map[int]int {
	pre := map[int]int{}
	if r := sh.tasks[sh.root]; r.sid == sh.root && sh.outside.sid != 0 {
		// A root that left the session it was started in after
		// cloning some of its tasks: it is restored in the
		// restorer's, and calls setsid after cloning them.
		for _, s := range sh.needsOf(sh.root) {
			if s == sh.outside.sid {
				pre[sh.root] = s
			}
		}
	}
	for queue := []int{sh.root}; len(queue) > 0; queue = queue[1:] {
		pp := queue[0]
		queue = append(queue, sh.kids[pp]...)
		for _, pid := range sh.kids[pp] {
			t := sh.tasks[pid]
			if t.sid != pid || t.zombie {
				continue
			}
			for _, s := range sh.needsOf(pid) {
				if s == sh.tasks[pp].sid || s == pre[pp] || viaHelper[s] {
					pre[pid] = s
					break
				}
			}
			for _, s := range sh.needsOf(pid) {
				if pre[pid] == 0 && sh.siblingLeader(pp, s) {
					pre[pid] = s // cloned from that leader (CLONE_PARENT)
				}
			}
			for _, s := range sh.needsOf(pid) {
				if l := sh.tasks[s]; pre[pid] == 0 && orphans[pid] && l != nil && l.sid == s && l.ppid != pp && sh.within(pp, l.ppid) {
					// An orphan of that session's leader (or of a
					// task below it), reparented up to pp: cloned
					// from a spare helper of the leader.
					pre[pid] = s
				}
			}
			if s := forSiblings[pid]; pre[pid] == 0 && s != 0 && (s == sh.tasks[pp].sid || s == pre[pp]) {
				pre[pid] = s
			}
		}
	}
	return pre
}

// plan checks the sessions and the sharing, with the leaders born in
// other sessions of pre. retry names a session whose leader has exited
// and that a leader entering it before its setsid might make good.
func (sh *shapeTree) plan(pre map[int]int) (plan *shapePlan, retry shapeRetry, err error) {
	tasks := sh.tasks
	within := sh.within
	rootSid := tasks[sh.root].sid
	plan = &shapePlan{helperParent: map[int]int{}, helperFrom: map[int]int{}, pre: pre, bornUnder: map[int]int{}, borrowed: map[int]bool{}, borrowers: map[int][]int{}, borrowFrom: map[int]int{}, order: map[int][]int{}, early: map[int][]int{}, earlySetsid: map[int]bool{}, lent: sh.lends}
	// born: the session a task is born in; inAtBirth: whether p is in
	// session sid while it clones its children of it.
	born := func(t *shapeTask) int {
		if s := pre[t.pid]; s != 0 {
			return s
		}
		return t.sid
	}
	inAtBirth := func(p *shapeTask, sid int) bool { return p.sid == sid || pre[p.pid] == sid }
	// deferred: tasks rebuilt as orphans (cloned in their session from a
	// spare helper, then reparented), with the task whose fd table and
	// fs info the spare passes on (sessions.go): the session's leader,
	// the parent of the helper standing in for it, or for a leader
	// born under another task, that task. They can share only those.
	deferred := map[int]int{}
	// placed says whether the tasks from h up to (not including) its
	// ancestor top are all cloned where they stay: a spare helper's
	// orphan under h then goes up that line to top when the spare exits.
	placed := func(h, top int) bool {
		for n := 0; h != top && n <= len(tasks); n++ {
			if _, ok := deferred[h]; ok {
				return false
			}
			h = tasks[h].ppid
		}
		return h == top
	}

	members := map[int][]*shapeTask{}
	for _, pid := range sh.pids {
		t := tasks[pid]
		if s := born(t); s > 0 {
			members[s] = append(members[s], t)
		}
	}
	sids := make([]int, 0, len(members))
	for sid := range members {
		sids = append(sids, sid)
	}
	sh.byAge(sids)
	for _, sid := range sids {
		// The members whose parent is not in the session when it
		// clones them: each was born in it from another task of it,
		// and either that task's sibling (CLONE_PARENT) or
		// reparented since.
		var outer []*shapeTask
		for _, t := range members[sid] {
			if t.pid == sh.root || t.pid == sid {
				continue
			}
			if p, ok := tasks[t.ppid]; !ok || !inAtBirth(p, sid) {
				outer = append(outer, t)
			}
		}
		if len(outer) == 0 {
			continue
		}
		leader, live := tasks[sid]
		switch {
		case live:
			var far *shapeTask // a member under a parent the leader is not below
			for _, t := range outer {
				if far == nil && !within(t.ppid, leader.ppid) {
					far = t
				}
			}
			if far == nil {
				for _, t := range outer {
					if leader.ppid != t.ppid {
						deferred[t.pid] = sid
					} // else cloned from its sibling the leader (CLONE_PARENT)
				}
				continue
			}
			// The leader was once below far's parent, and was
			// reparented up past it: it is born as an orphan under
			// the deepest parent of the outer members (sessions.go),
			// which must be on one line below its own parent, and
			// the members are orphaned from it.
			deep := sh.deepest(outer)
			for _, t := range outer {
				if !within(t.ppid, deep) || !within(leader.ppid, deep) || within(sid, deep) {
					return nil, shapeRetry{orphan: far.ppid}, fmt.Errorf("pid %d is in session %d, but its parent %d is not in it and is not an ancestor of the session's leader %d: a task is born in its cloner's session as the cloner's child or sibling, and an orphan goes only up to an ancestor (subreaper or init) of its parent, so %d was reparented away from under %d, and crhook rebuilds that only when the parents of the session's members outside it are on one line of descent below %d's parent: %w",
						far.pid, sid, far.ppid, sid, sid, far.ppid, sid, ErrNotSupported)
				}
				deferred[t.pid] = sid
			}
			deferred[sid] = deep
			plan.bornUnder[sid] = deep
		case sid == rootSid || sid == sh.rootPgid || sh.outside.has(sid):
			// The root's session from outside the tree: a task of it
			// whose parent is not in it was born before its parent (or
			// an ancestor) left the session with setsid.
			t := outer[0]
			return nil, shapeRetry{}, fmt.Errorf("pid %d is in session %d, the root's from outside the tree, but its parent %d is not: it was born before an ancestor left the session (setsid), and crhook rebuilds that only when each task on its line down from the session was born in it, the line's leaders calling setsid after: %w",
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
			deep := sh.deepest(outer)
			for _, t := range outer {
				if !within(t.ppid, deep) {
					return nil, shapeRetry{viaHelper: sid}, fmt.Errorf("session %d, whose leader has exited, has members under parents %d (pid %d) and %d that are not on one line of descent: its members were born from the leader or from each other, as children or CLONE_PARENT siblings, and were reparented only to ancestors, so one of these parents left the session (setsid) after cloning its member, and crhook finds no order of setsid calls that rebuilds it: %w",
						sid, t.ppid, t.pid, deep, ErrNotSupported)
				}
				if t.ppid != deep {
					deferred[t.pid] = deep
				}
			}
			plan.helperParent[sid] = deep
		}
	}
	for _, pid := range sh.pids {
		if _, orphan := deferred[pid]; orphan && pre[pid] != 0 && tasks[pre[pid]] == nil {
			return nil, shapeRetry{viaHelper: pre[pid]}, fmt.Errorf("pid %d leads a session but has children in session %d, so it is born in that session and calls setsid after them; it would be rebuilt as an orphan there, under %d, which crhook does not do: %w",
				pid, pre[pid], tasks[pid].ppid, ErrNotSupported)
		}
	}

	kinds := shareKinds
	holders := make([]map[uint32][]*shapeTask, len(kinds))
	for i, k := range kinds {
		holders[i] = map[uint32][]*shapeTask{}
		for _, pid := range sh.pids {
			if t := tasks[pid]; !t.zombie {
				holders[i][k.id(t)] = append(holders[i][k.id(t)], t)
			}
		}
	}
	// holdsAll says whether src holds every object t shares with a
	// task outside its own subtree: what a task cloned from a spare
	// helper of src must get there (what only its descendants share
	// with it, it makes, and they get from it).
	holdsAll := func(src, t *shapeTask) bool {
		for i, k := range kinds {
			if k.id(src) != k.id(t) && !sh.heldWithin(t, holders[i][k.id(t)]) {
				return false
			}
		}
		return true
	}
	hosted := map[int]bool{} // born under a holder for the sharing
	for i, k := range kinds {
		ids := make([]uint32, 0, len(holders[i]))
		for id := range holders[i] {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
		for _, id := range ids {
			g := holders[i][id]
			if len(g) < 2 {
				continue
			}
			// The heads, holders whose parent does not hold it, are
			// cloned from one another with CLONE_PARENT: siblings,
			// under the deepest of their parents. A head under a
			// parent above that is born under a holder below its
			// parent (sessions.go), as the kernel may have made it:
			// its holder parent exited and it went up to a subreaper.
			var heads []*shapeTask
			for _, t := range g {
				if src, orphan := deferred[t.pid]; orphan {
					// A zombie's spare holds what the zombie's cloner
					// held (zombieHolds): its parent's, when it is
					// cloned from it, or for one born under a task
					// (from a spare of it, cloneOrphan), that task's.
					// Else nothing that is sure: enough for an orphan
					// sharing only with its own descendants.
					if s := tasks[src]; s != nil {
						from := s
						if s.zombie {
							from = noObjects
							host, moved := plan.bornUnder[s.pid]
							if !moved {
								host = s.ppid
							}
							if h := tasks[host]; h != nil && !h.zombie {
								from = h
							}
						}
						if holdsAll(from, t) {
							continue // passed on by the spare it is cloned from
						}
					}
					return nil, shapeRetry{}, fmt.Errorf("pid %d shares %s with pid %d, but is rebuilt as an orphan of %d (cloned from a spare helper of task %d, then reparented), and %d does not hold all it shares: %w",
						t.pid, k.what, otherThan(g, t).pid, t.ppid, src, src, ErrNotSupported)
				}
				if p, ok := tasks[t.ppid]; ok && !p.zombie && k.id(sh.view(p)) == k.id(t) {
					continue // p holds it, or lends it its children
				}
				if plan.borrowed[t.pid] || sh.canBorrow(t, born, deferred, pre, holders) {
					plan.borrowed[t.pid] = true
					continue
				}
				if sh.siblingBorrow {
					if s := sh.siblingToBorrow(t, born, deferred, pre, holders); s != 0 && (plan.borrowFrom[t.ppid] == 0 || plan.borrowFrom[t.ppid] == s) {
						plan.borrowed[t.pid] = true
						plan.borrowFrom[t.ppid] = s
						continue
					}
				}
				heads = append(heads, t)
			}
			if len(heads) < 2 {
				continue
			}
			deep := sh.deepest(heads)
			for _, t := range heads {
				if t.ppid == deep {
					continue
				}
				host := sh.shareHost(t, g, deep, born, pre, holdsAll, placed)
				if host == nil {
					o := heads[0]
					if o == t {
						o = heads[1]
					}
					retry := sh.lendBorrowed(plan, heads, i, id, holders[i][id], deferred)
					if retry.lend == 0 && sh.siblingBorrow {
						// Tried last: it would take the place of a
						// borrow from a sibling.
						retry = sh.lendToKin(plan, heads, i, id, holders[i][id], deferred)
					}
					return nil, retry, fmt.Errorf("pids %d and %d share %s, but they are not siblings (parents %d and %d) and neither's parent holds it: clone shares it only with the new task, the cloner's child or (CLONE_PARENT) sibling, so one got its parent by a reparenting or through a holder that has dropped it since (unshare, exec, exit), and crhook rebuilds that only for a task reparented to an ancestor of another holder in its session, a task whose parent borrowed it from the grandparent or a sibling, and tasks that lent it down a line or to their siblings, and none of those explains this tree: %w",
						o.pid, t.pid, k.what, o.ppid, t.ppid, ErrNotSupported)
				}
				deferred[t.pid] = host.pid
				plan.bornUnder[t.pid] = host.pid
				hosted[t.pid] = true
			}
		}
	}
	// A task born under another goes up a line of tasks cloned where
	// they stay, and a borrowing parent is cloned where it stays; one
	// made an orphan after the choice breaks it.
	for _, pid := range sh.pids {
		if _, orphan := deferred[tasks[pid].ppid]; orphan && plan.borrowed[pid] {
			return nil, shapeRetry{}, fmt.Errorf("pid %d shares an object with its grandparent that its parent %d dropped, so %d is cloned sharing it too, but %d is itself rebuilt away from its parent: %w",
				pid, tasks[pid].ppid, tasks[pid].ppid, tasks[pid].ppid, ErrNotSupported)
		}
		if host, ok := plan.bornUnder[pid]; ok && !placed(host, tasks[pid].ppid) {
			what := "leads a session whose members' parents are below its own"
			if hosted[pid] {
				what = "shares an object only with tasks on another branch"
			}
			return nil, shapeRetry{}, fmt.Errorf("pid %d %s, so it is born under %d and reparented up to %d, but a task on that line is itself rebuilt away from its parent: %w",
				pid, what, host, tasks[pid].ppid, ErrNotSupported)
		}
	}
	for _, pid := range sh.pids {
		// A parent borrowing from a sibling lends its borrowed
		// children that sibling's objects only.
		t := tasks[pid]
		s, ok := plan.borrowFrom[t.ppid]
		if !plan.borrowed[pid] || !ok {
			continue
		}
		for i, k := range shareKinds {
			if x := k.id(t); x != k.id(tasks[t.ppid]) && x != k.id(tasks[s]) && !sh.heldFrom(t, holders[i][x]) {
				return nil, shapeRetry{}, fmt.Errorf("pid %d shares %s that its parent %d dropped, but not with the sibling %d it borrows from: %w",
					pid, k.what, t.ppid, s, ErrNotSupported)
			}
		}
	}
	for _, pid := range sh.pids {
		if pre[pid] != 0 && pid != sh.root && sh.siblingInSession(tasks[pid], pre) {
			plan.earlySetsid[pid] = true
		}
		if plan.borrowed[pid] {
			plan.borrowers[tasks[pid].ppid] = append(plan.borrowers[tasks[pid].ppid], pid)
		}
	}
	for _, pid := range sh.pids {
		if retry, err := sh.cloneOrder(plan, pid, born, deferred); err != nil {
			return nil, retry, err
		}
	}
	return plan, shapeRetry{}, nil
}

// noObjects is a task that shares no object with any other.
var noObjects = &shapeTask{pid: -1}

// shared returns the clone flags for what c shares with a.
func shared(a, c *shapeTask) uint64 {
	var fl uint64
	if a.zombie || c.zombie {
		return 0
	}
	if a.files == c.files {
		fl |= unix.CLONE_FILES
	}
	if a.fs == c.fs {
		fl |= unix.CLONE_FS
	}
	return fl
}

// cloneOrder sets the order in which p clones its children
// (cloneChildren follows it), and checks that each of them finds a task
// to be cloned from in the session it is born in that holds what it
// shares with p or a sibling (shareSource). Children born in the session
// p is born in come first (p calls setsid after them), then the leaders
// of sessions (their members among their siblings are cloned from them),
// then the members, then a leader that leaves the session it is born in
// right after its clone (earlySetsid) and shares with members of that
// session (cloned from one of them), then its own session's members,
// then the leaders that share an fd table or fs info with a sibling
// outside their session (they can be cloned from it and then start
// their session, where it could not be cloned from them); by pid within
// each.
func (sh *shapeTree) cloneOrder(plan *shapePlan, pid int, born func(*shapeTask) int, deferred map[int]int) (shapeRetry, error) {
	p := sh.tasks[pid]
	var kids, early []*shapeTask
	hasSibling := plan.earlySetsid[pid]
	for _, k := range sh.kids[pid] {
		_, orphan := deferred[k]
		_, hosted := plan.bornUnder[k]
		switch kt := sh.tasks[k]; {
		case plan.borrowed[k]:
		case hasSibling && born(kt) == plan.pre[pid] && !orphan && !hosted && !plan.earlySetsid[k]:
			early = append(early, kt)
		default:
			kids = append(kids, kt)
		}
	}
	if len(early) > 0 {
		// Cloned from p, or from one of them (CLONE_PARENT), in the
		// session p is born in, before p is built.
		for i, e := range early {
			need := shared(sh.view(p), e)
			for _, k := range early[:i] {
				need |= shared(k, e)
			}
			ok := false
			for _, src := range append([]*shapeTask{sh.view(p)}, early[:i]...) {
				// One with borrowed children is cloned from p, sharing
				// what they borrow (cloneEarly).
				ok = ok || shared(src, e) == need && (src == p || len(plan.borrowers[e.pid]) == 0)
			}
			if !ok {
				return shapeRetry{}, fmt.Errorf("pid %d shares %s with its parent %d or a sibling born, as it was, before %d left the session, but no one of them holds all of it: %w",
					e.pid, shareWhat(need), pid, pid, ErrNotSupported)
			}
			plan.early[pid] = append(plan.early[pid], e.pid)
		}
	}
	if len(kids) == 0 {
		return shapeRetry{}, nil
	}
	// lateLeaders: a leader born in another session (pre) that shares
	// with a sibling in another session goes after it too, to be
	// cloned from it; tried when the order without fails.
	// earlyLeaders: a leader with early children comes before the
	// members of the session it is born in, to be cloned from, and
	// the members of its own session after them; tried last.
	const (
		plain = iota
		lateLeaders
		earlyLeaders
	)
	sortKids := func(mode int) {
		key := map[*shapeTask]int{}
		member := func(c *shapeTask) bool { return born(c) != c.pid && born(c) != p.sid || c.sid != c.pid }
		for _, c := range kids {
			switch {
			case plan.pre[pid] != 0 && born(c) == plan.pre[pid]:
				key[c] = -10
			case member(c):
				key[c] = 10
			case plan.earlySetsid[c.pid] && mode == earlyLeaders:
				key[c] = -5
			case plan.earlySetsid[c.pid]:
				// Born in a session its siblings there share with it
				// in, and leaving it at once: after them.
				for _, k := range kids {
					if k != c && born(k) == born(c) && shared(k, c)&^shared(p, c) != 0 {
						key[c] = 15
					}
				}
			case plan.pre[c.pid] == 0 || mode == lateLeaders:
				for _, k := range kids {
					if k != c && k.sid != c.sid && shared(k, c)&^shared(p, c) != 0 {
						key[c] = 20
					}
				}
			}
		}
		for _, c := range kids {
			// A session's members come after their leader when it is a
			// sibling that comes after some members.
			if l := sh.tasks[born(c)]; key[c] == 10 && l != nil && l.ppid == pid && (key[l] > 10 || key[l] == -5) {
				key[c] = max(key[l], 10) + 2
			}
		}
		for _, c := range kids {
			// A leader that shares with a sibling outside its session
			// is cloned from it: after it, when that is a member
			// coming after its own leader.
			for _, k := range kids {
				if key[c] >= 20 && k.sid != k.pid && k.sid != c.sid && shared(k, c)&^shared(p, c) != 0 && key[k] >= key[c] {
					key[c] = key[k] + 1
				}
			}
		}
		for _, c := range kids {
			// A task borrowing from a sibling is cloned from it,
			// after it.
			if s, ok := plan.borrowFrom[c.pid]; ok && key[sh.tasks[s]] >= key[c] {
				key[c] = key[sh.tasks[s]] + 1
			}
		}
		sort.SliceStable(kids, func(i, j int) bool { return key[kids[i]] < key[kids[j]] })
	}
	sortKids(plain)
	retry, err := sh.simulateClones(plan, p, kids, early, born, deferred)
	for _, mode := range []int{lateLeaders, earlyLeaders} {
		if err == nil {
			break
		}
		sortKids(mode)
		if _, err2 := sh.simulateClones(plan, p, kids, early, born, deferred); err2 == nil {
			err = nil
		}
	}
	if err != nil {
		return retry, err
	}
	order := make([]int, len(kids))
	for i, c := range kids {
		order[i] = c.pid
	}
	plan.order[pid] = order
	return shapeRetry{}, nil
}

// simulateClones checks that each of p's children, cloned in the order
// of kids (its early ones before), finds a task to be cloned from that
// holds all it shares with p and its siblings cloned before it, in the
// session it is born in.
func (sh *shapeTree) simulateClones(plan *shapePlan, p *shapeTask, kids, early []*shapeTask, born func(*shapeTask) int, deferred map[int]int) (shapeRetry, error) {
	pid := p.pid
	// now: the session a child is in while its later siblings are
	// cloned: the one it is born in, or its own for a leader with early
	// children (plan.earlySetsid) once it has called setsid: at the
	// first sibling of its session, or at the end (leaveEarly).
	left := map[int]bool{}
	now := func(c *shapeTask) int {
		if plan.earlySetsid[c.pid] && left[c.pid] {
			return c.pid
		}
		return born(c)
	}
	// The sharing, as cloneChildren and shareSource will meet it. A
	// lender holds what it lends while it clones its children.
	helper := &shapeTask{pid: -1, files: p.files, fs: p.fs} // holds p's
	pv := sh.view(p)
	inSession := map[int]*shapeTask{}
	// objs: whose fd table and fs info a task cloned here holds: its
	// own, but a zombie's are its cloner's (zombieHolds).
	objs := map[*shapeTask]*shapeTask{}
	holder := func(t *shapeTask) *shapeTask {
		if o := objs[t]; o != nil {
			return o
		}
		return sh.view(t)
	}
	// The children cloned right after p are siblings to clone from.
	sibs := append([]*shapeTask(nil), early...)
	for _, k := range plan.borrowers[pid] {
		sibs = append(sibs, sh.tasks[k])
	}
	for _, k := range sibs {
		// Siblings in a session of their own or p's (a borrowed
		// leader) are there to be cloned from.
		if !k.zombie && !plan.earlySetsid[k.pid] && inSession[born(k)] == nil {
			inSession[born(k)] = k
		}
	}
	for _, c := range kids {
		if _, orphan := deferred[c.pid]; orphan {
			continue // cloned elsewhere
		}
		bs, early := born(c), -1
		if plan.pre[pid] != 0 && !plan.earlySetsid[pid] {
			// p clones its children of the session it is born in
			// before its setsid; a leader with early children has
			// left it by now (cloneEarly, leaveEarly).
			early = plan.pre[pid]
		}
		if l := sh.tasks[bs]; l != nil && l.ppid == pid && plan.earlySetsid[bs] && !left[bs] {
			left[bs] = true
			inSession[bs] = l
		}
		src, newHelper := pv, false
		if bs != c.pid && bs != p.sid && bs != early {
			switch {
			case inSession[bs] != nil:
				src = inSession[bs]
			case plan.helperParent[bs] == pid && !sh.isTask(bs):
				src, newHelper = helper, true
				inSession[bs] = helper
			default:
				return shapeRetry{}, fmt.Errorf("pid %d is in session %d, but no task of that session is cloned before it under its parent %d: %w",
					c.pid, bs, pid, ErrNotSupported)
			}
		}
		// A lender is born holding what it lends.
		cv := sh.view(c)
		need := shared(pv, cv)
		for _, k := range sibs {
			need |= shared(sh.view(k), cv)
		}
		ok := shared(holder(src), cv) == need
		for _, k := range sibs {
			ok = ok || shared(holder(k), cv) == need && (bs == c.pid || now(k) == bs)
		}
		if newHelper && !ok && sh.noOrphansOf(bs, deferred, born) {
			// The helper cloned here for c's session may be cloned
			// from a sibling holding what c shares.
			for _, k := range sibs {
				if h := holder(k); !ok && shared(h, cv) == need {
					plan.helperFrom[bs] = k.pid
					inSession[bs] = &shapeTask{pid: -1, files: h.files, fs: h.fs}
					ok = true
				}
			}
		}
		if s, borrows := plan.borrowFrom[c.pid]; borrows {
			// Cloned from the sibling it borrows from, no other.
			ok = false
			for _, k := range sibs {
				ok = ok || k.pid == s && shared(holder(k), cv) == need && (bs == c.pid || now(k) == bs)
			}
		}
		if c.zombie {
			objs[c] = holder(src) // need is 0: cloned from src
		}
		if !ok {
			retry := sh.lendFor(plan, p, c, deferred)
			if retry.lend == 0 {
				retry = sh.stayFor(plan, kids, c)
				retry.lend, retry.lent = sh.lendToSibling(plan, pv, c, cv, need, sibs, now, deferred)
			}
			return retry, fmt.Errorf("pid %d (session %d) shares %s with its parent %d or a sibling, but no one task it can be cloned from holds all of it in its session: clone shares only the cloner's, and a new task starts in the cloner's session, so it was cloned before a holder left the session (setsid), which crhook does not rebuild: %w",
				c.pid, bs, shareWhat(need), pid, ErrNotSupported)
		}
		sibs = append(sibs, c)
		if inSession[now(c)] == nil && !plan.earlySetsid[c.pid] {
			inSession[now(c)] = c
		}
	}
	return shapeRetry{}, nil
}

// noOrphansOf says whether no task of session sid is rebuilt as an
// orphan (they get what the session's helper holds).
func (sh *shapeTree) noOrphansOf(sid int, deferred map[int]int, born func(*shapeTask) int) bool {
	for pid := range deferred {
		if born(sh.tasks[pid]) == sid {
			return false
		}
	}
	return true
}

// heldFrom says whether t can make an object that its borrowing parent
// does not hold: t and its descendants are all its holders, or, when
// sh.siblingBorrow, t's siblings and theirs too (cloned from t,
// CLONE_PARENT, after it).
func (sh *shapeTree) heldFrom(t *shapeTask, holders []*shapeTask) bool {
	if sh.heldWithin(t, holders) {
		return true
	}
	if !sh.siblingBorrow {
		return false
	}
	for _, h := range holders {
		if h.pid == t.ppid || !sh.within(t.ppid, h.pid) {
			return false
		}
	}
	return true
}

// heldWithin says whether t and its descendants are all the holders of an
// object: t makes it, and they get it from t.
func (sh *shapeTree) heldWithin(t *shapeTask, holders []*shapeTask) bool {
	for _, h := range holders {
		if !sh.within(t.pid, h.pid) {
			return false
		}
	}
	return true
}

// siblingInSession says whether leader t has a sibling in its session,
// or born in it (a leader of pre).
func (sh *shapeTree) siblingInSession(t *shapeTask, pre map[int]int) bool {
	for _, k := range sh.kids[t.ppid] {
		if k != t.pid && (sh.tasks[k].sid == t.pid || pre[k] == t.pid) {
			return true
		}
	}
	return false
}

// lendFor suggests, for a child c of p that no task can be cloned from,
// that p lend c (and its siblings) the objects c shares with a sibling
// and p does not hold: p held them, cloned them sharing them, and
// dropped them (unshare). That is so when their holders are all below
// p, and p's own object of the kind is p's alone (a child sharing it
// would get the lent one). A lender is no source of helpers, spares,
// borrowers or early children: those share what p holds at the time.
func (sh *shapeTree) lendFor(plan *shapePlan, p, c *shapeTask, deferred map[int]int) shapeRetry {
	if c.zombie || plan.earlySetsid[p.pid] {
		return shapeRetry{}
	}
	var lent [2]uint32
	for i, k := range shareKinds {
		x := k.id(c)
		if x == k.id(p) {
			continue
		}
		if !sh.mayLend(plan, p, i, deferred) {
			return shapeRetry{}
		}
		withSibling := false
		for _, h := range sh.tasks {
			switch {
			case h != c && k.id(h) == x:
				if h == p || h.zombie || !sh.within(p.pid, h.pid) {
					return shapeRetry{}
				}
				withSibling = withSibling || h.ppid == p.pid
			}
		}
		if withSibling {
			lent[i] = x
		}
	}
	if lent == [2]uint32{} {
		return shapeRetry{}
	}
	return shapeRetry{lend: p.pid, lent: lentObjs{files: lent[0], fs: lent[1]}}
}

// view is t as the tasks cloned from it see it: holding what it lends.
func (sh *shapeTree) view(t *shapeTask) *shapeTask {
	if l, ok := sh.lends[t.pid]; ok {
		return l.view(t)
	}
	return t
}

// lendBorrowed suggests, for heads of an fd table or fs info x (kind i)
// that are not siblings, a head's ancestor B that may have held x from its parent A,
// cloned its children of x sharing it, and dropped it (unshare): B is
// then cloned from A sharing x and lends it (lent). A holds x or lends
// it itself; the tasks between B and the head, none holding x, lend it
// too, each in a retry of its own, from the top down. Each of them
// holds its own alone, every holder of x below it is below a child of
// it that holds or lends x, and none is a source of helpers, spares,
// borrowers or borrowed tasks, which share what it holds at the time.
func (sh *shapeTree) lendBorrowed(plan *shapePlan, heads []*shapeTask, i int, x uint32, holders []*shapeTask, deferred map[int]int) shapeRetry {
	k := shareKinds[i]
	for _, t := range heads {
		var line []*shapeTask // from t's parent up to B
		inLine := map[*shapeTask]bool{}
		for c := t; ; {
			b, ok := sh.tasks[c.ppid]
			if !ok || b.zombie || b.pid == sh.root || inLine[b] {
				line = nil
				break
			}
			line = append(line, b)
			inLine[b] = true
			if a, ok := sh.tasks[b.ppid]; ok && !a.zombie && k.id(sh.view(a)) == x {
				break
			}
			c = b
		}
		fits := len(line) > 0
		for _, b := range line {
			fits = fits && sh.mayLend(plan, b, i, deferred)
			for _, h := range holders {
				if h == b || !sh.within(b.pid, h.pid) {
					continue
				}
				c := h
				for c.ppid != b.pid {
					c = sh.tasks[c.ppid]
				}
				fits = fits && (k.id(sh.view(c)) == x || inLine[c])
			}
		}
		if fits {
			return shapeRetry{lend: line[len(line)-1].pid, lent: lentOne(i, x)}
		}
	}
	return shapeRetry{}
}

// lendToSibling suggests, for child c of the task pv is the view of, that
// no task holding what it shares can be cloned from in the session it
// is born in, a sibling B of it there that held some of p's objects,
// cloned c sharing them (CLONE_PARENT), and dropped them (unshare): B is
// then cloned from p sharing them and lends them (lent). B holds its own
// alone; no task below B holds an fd table it lends (B drops it before
// its fds are restored); and B is no source of helpers, spares,
// borrowers or borrowed tasks.
func (sh *shapeTree) lendToSibling(plan *shapePlan, pv, c, cv *shapeTask, need uint64, sibs []*shapeTask, now func(*shapeTask) int, deferred map[int]int) (int, lentObjs) {
	bs := now(c)
	for _, b := range sibs {
		if b.ppid != pv.pid || bs != c.pid && now(b) != bs {
			continue
		}
		var lent [2]uint32
		fits := true
		for i, k := range shareKinds {
			x := k.id(cv)
			if x == k.id(b) || x != k.id(pv) {
				continue
			}
			fits = fits && sh.mayLend(plan, b, i, deferred)
			for _, h := range sh.tasks {
				if i == 0 && k.id(h) == x && h != b && sh.within(b.pid, h.pid) {
					fits = false // B's children would share the table B fills
				}
			}
			lent[i] = x
		}
		l := lentObjs{files: lent[0], fs: lent[1]}
		if fits && l != (lentObjs{}) && shared(l.view(b), cv) == need {
			return b.pid, l
		}
	}
	return 0, lentObjs{}
}

// lendToKin suggests, for heads of an fd table or fs info x (kind i)
// that are not siblings, the parent B of one of them that made x, cloned
// its children and its siblings (CLONE_PARENT) sharing it, and dropped
// it (unshare): B then lends it (lent). Every holder of x is below B or
// a sibling of B; B holds its own alone and is no source of helpers,
// spares, borrowers or borrowed tasks.
func (sh *shapeTree) lendToKin(plan *shapePlan, heads []*shapeTask, i int, x uint32, holders []*shapeTask, deferred map[int]int) shapeRetry {
	for _, t := range heads {
		b, ok := sh.tasks[t.ppid]
		if !ok || b.pid == sh.root || !sh.mayLend(plan, b, i, deferred) {
			continue
		}
		fits := true
		for _, h := range holders {
			fits = fits && h != b && (sh.within(b.pid, h.pid) || h.ppid == b.ppid)
		}
		if fits {
			return shapeRetry{lend: b.pid, lent: lentOne(i, x)}
		}
	}
	return shapeRetry{}
}

// mayLend says whether b may lend an object of kind i (lent): it is a
// live task that lends nothing yet, is no orphan, borrows
// nothing and has no borrowers, is no source of helpers, spares or
// orphans (sourceOfNone), and holds its own object of the kind alone,
// which is a copy it takes once it has lent.
func (sh *shapeTree) mayLend(plan *shapePlan, b *shapeTask, i int, deferred map[int]int) bool {
	if b.zombie || sh.lends[b.pid] != (lentObjs{}) || plan.borrowed[b.pid] || len(plan.borrowers[b.pid]) > 0 {
		return false
	}
	if _, orphan := deferred[b.pid]; orphan || !sh.sourceOfNone(plan, b, deferred) {
		return false
	}
	k := shareKinds[i]
	for _, h := range sh.tasks {
		if h != b && k.id(h) == k.id(b) {
			return false
		}
	}
	return true
}

// lentOne is the lentObjs of object x of kind i alone.
func lentOne(i int, x uint32) lentObjs {
	if i == 0 {
		return lentObjs{files: x}
	}
	return lentObjs{fs: x}
}

// sourceOfNone says whether no helper, spare or orphan is cloned from p
// or from a zombie child of p: those share what p holds at the time.
func (sh *shapeTree) sourceOfNone(plan *shapePlan, p *shapeTask, deferred map[int]int) bool {
	for _, m := range []map[int]int{plan.helperParent, plan.bornUnder, deferred} {
		for _, v := range m {
			if v == p.pid || sh.tasks[v] != nil && sh.tasks[v].zombie && sh.tasks[v].ppid == p.pid {
				return false
			}
		}
	}
	return true
}

// stayFor suggests, for a child c of no task to be cloned from, a leader
// among kids that might stay in the session it is born in until the
// siblings there sharing with it are cloned from it: c itself, when it
// leads a session and shares with a sibling in its parent's session, or
// a leader c shares with.
func (sh *shapeTree) stayFor(plan *shapePlan, kids []*shapeTask, c *shapeTask) shapeRetry {
	free := func(t *shapeTask) bool { return t.sid == t.pid && !t.zombie && plan.pre[t.pid] == 0 }
	for _, k := range kids {
		switch {
		case k == c || shared(k, c) == 0:
		case free(c) && k.sid != k.pid:
			return shapeRetry{leader: c.pid, session: k.sid}
		case free(k) && c.sid != c.pid:
			return shapeRetry{leader: k.pid, session: c.sid}
		}
	}
	return shapeRetry{}
}

func (sh *shapeTree) isTask(pid int) bool {
	_, ok := sh.tasks[pid]
	return ok
}

// borrowLine returns t's parent B and grandparent A when B could be
// cloned holding for a while what t borrows: both live tasks, B not the
// root and no lender, neither t nor B rebuilt as an orphan, and t born
// in B's session when it is born in another than its own. Else nil.
func (sh *shapeTree) borrowLine(t *shapeTask, born func(*shapeTask) int, deferred, pre map[int]int) (a, b *shapeTask) {
	b, ok := sh.tasks[t.ppid]
	if !ok || b.zombie || b.pid == sh.root || pre[t.pid] != 0 && pre[t.pid] != born(b) || sh.lends[b.pid] != (lentObjs{}) {
		return nil, nil // a lender's children take what it lends as they are cloned
	}
	a, ok = sh.tasks[b.ppid]
	if !ok || a.zombie {
		return nil, nil
	}
	for _, pid := range []int{t.pid, b.pid} {
		if _, orphan := deferred[pid]; orphan {
			return nil, nil
		}
	}
	return a, b
}

// siblingToBorrow returns, for t whose parent B does not hold an object
// t shares, a sibling S of B that holds it and that B can be cloned from
// (CLONE_PARENT) in the session B is born in: B held it from S, cloned
// t, and dropped it (unshare). 0 when there is none. B's own object of
// such a kind is held within B's subtree only, t is no orphan and is
// born in B's session (a leader t has no sibling in its session), and
// neither B nor S is born early or calls setsid with early children.
func (sh *shapeTree) siblingToBorrow(t *shapeTask, born func(*shapeTask) int, deferred, pre map[int]int, holders []map[uint32][]*shapeTask) int {
	a, b := sh.borrowLine(t, born, deferred, pre)
	if b == nil {
		return 0
	}
	early := func(x *shapeTask) bool { return pre[x.pid] != 0 && sh.siblingInSession(x, pre) }
	if early(a) && born(b) == pre[a.pid] || early(b) {
		return 0
	}
	if t.sid == t.pid {
		for _, k := range sh.kids[b.pid] {
			if k != t.pid && sh.tasks[k].sid == t.pid {
				return 0
			}
		}
	} else if t.sid != born(b) {
		return 0
	}
	for _, sp := range sh.kids[a.pid] {
		s := sh.tasks[sp]
		if _, orphan := deferred[sp]; s == b || s.zombie || orphan || early(s) || born(b) != b.pid && born(b) != born(s) {
			continue
		}
		borrows, fits := false, true
		for i, k := range shareKinds {
			switch x := k.id(t); {
			case sh.heldFrom(t, holders[i][x]) || x == k.id(b):
			case x == k.id(s) && sh.heldWithin(b, holders[i][k.id(b)]):
				borrows = true
			default:
				fits = false
			}
		}
		if borrows && fits {
			return sp
		}
	}
	return 0
}

// canBorrow says whether t, whose parent B does not hold an object t
// shares with B's parent A, can be cloned from B while B borrows it: B
// is cloned from A sharing it, clones t, and unshares it. That is, in
// every kind t shares anything in, t holds A's object (borrowed) or
// B's; B is cloned from A, in its session, as what B holds it shares
// with A or its own descendants only; t is no orphan, and is born in
// B's session or is a member of a borrowing sibling leader's session
// (cloned from that leader, CLONE_PARENT, after its setsid: it then
// holds the leader's objects or its own); and the siblings in a
// leader t's session can be cloned from it so.
func (sh *shapeTree) canBorrow(t *shapeTask, born func(*shapeTask) int, deferred, pre map[int]int, holders []map[uint32][]*shapeTask) bool {
	a, b := sh.borrowLine(t, born, deferred, pre)
	if b == nil {
		return false
	}
	if bs := born(b); bs != b.pid && bs != a.sid && bs != pre[a.pid] {
		return false // cloned from a task of its session
	}
	// fromLeader: k, cloned from leader l, holds what it shares.
	fromLeader := func(l, k *shapeTask) bool {
		for i, kind := range shareKinds {
			if x := kind.id(k); x != kind.id(l) && !sh.heldWithin(k, holders[i][x]) {
				return false
			}
		}
		return true
	}
	switch l := sh.tasks[t.sid]; {
	case t.sid == t.pid:
		for _, k := range sh.kids[b.pid] {
			if k != t.pid && sh.tasks[k].sid == t.pid && (sh.older(k, t.pid) || !fromLeader(t, sh.tasks[k])) {
				return false
			}
		}
	case t.sid == born(b):
	case l != nil && l.ppid == b.pid && sh.older(l.pid, t.pid) && pre[l.pid] == 0 && fromLeader(l, t):
		return sh.canBorrow(l, born, deferred, pre, holders)
	default:
		return false
	}
	borrows := false
	for i, k := range shareKinds {
		for _, h := range holders[i][k.id(b)] {
			if k.id(b) != k.id(a) && !sh.within(b.pid, h.pid) {
				return false // b is cloned from a sibling holding it
			}
		}
		switch {
		case sh.heldFrom(t, holders[i][k.id(t)]) || k.id(t) == k.id(b):
		case k.id(t) == k.id(a):
			borrows = true
		default:
			return false
		}
	}
	return borrows
}

// shareHost returns the holder in g that head t, whose parent is above
// deep, the parent of the heads cloned as siblings, can be born under:
// a task below t's parent and outside t's subtree, cloned where it
// stays, as are the tasks between, holding all that t shares, in the
// session t is born in (unless t starts its own); nil if none.
func (sh *shapeTree) shareHost(t *shapeTask, g []*shapeTask, deep int, born func(*shapeTask) int, pre map[int]int,
	holdsAll func(src, t *shapeTask) bool, placed func(h, top int) bool) *shapeTask {
	if pre[t.pid] != 0 {
		return nil
	}
	if t.sid == t.pid {
		for _, k := range sh.kids[t.ppid] {
			if k != t.pid && sh.tasks[k].sid == t.pid {
				return nil // cloned from t as its sibling
			}
		}
	}
	for _, h := range g {
		if h == t || h.zombie || !sh.within(t.ppid, h.pid) || sh.within(t.pid, h.pid) {
			continue
		}
		if p := sh.tasks[h.ppid]; h.ppid != deep && (p == nil || p.zombie || !holdsAll(p, h)) {
			continue // a head to be moved, or under a parent holding less
		}
		if !holdsAll(h, t) || !placed(h.pid, t.ppid) || (t.sid != t.pid && h.sid != born(t)) {
			continue
		}
		return h
	}
	return nil
}

func otherThan(g []*shapeTask, t *shapeTask) *shapeTask {
	for _, o := range g {
		if o != t {
			return o
		}
	}
	return t
}

// outside returns the session and group the dumped root was started in,
// when no task of the tree leads them, and whether the images say (older
// crhooks did not).
func (s *imageSet) outside() (out outsideIDs, known bool) {
	if s.ext.OutsidePgid == nil {
		return outsideIDs{}, false
	}
	// 0: outside the root's pid namespace (or, for a group, led by a
	// task of the tree, which no id of the tree's is then compared to).
	return outsideIDs{sid: unseenID(int(s.ext.GetOutsideSid())), pgid: unseenID(int(s.ext.GetOutsidePgid()))}, true
}

// shapeOfImages gives checkShape the restore's images.
func (s *imageSet) shape() (*shapePlan, error) {
	tasks := map[int]*shapeTask{}
	for pid, ti := range s.tasks {
		ids := ti.core.GetIds()
		tasks[pid] = &shapeTask{pid: pid, ppid: int(ti.ps.GetPpid()), sid: ti.sid(),
			files: ids.GetFilesId(), fs: ids.GetFsId(), zombie: ti.zombie()}
		if ids == nil {
			// No ids: shares nothing.
			tasks[pid].files, tasks[pid].fs = uint32(pid), uint32(pid)
		}
	}
	root := s.tasks[int(s.tree[0].GetPid())]
	out, _ := s.outside()
	return checkShape(tasks, root.pid, root.pgid(), out)
}
