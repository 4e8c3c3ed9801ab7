//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/ptrace"
)

// Sessions and process groups whose leader is gone.
//
// A task is born in the session and the process group of the task that
// clones it, and may later only leave them for a session or a group of
// its own (setsid, setpgid(0, 0)) or join a group of its own session.
// So a task whose session is not its parent's must be cloned from a task
// already in that session; with CLONE_PARENT its parent is still the
// right one. When the session's leader is a sibling, the leader is that
// task. When the leader has exited (its session lives on through its
// orphans, reparented to a subreaper or the namespace's init), a helper
// task with the leader's pid stands in for it: cloned from the parent,
// it calls setsid() and the members are cloned from it. A process group
// whose leader has exited gets a helper with its pid too, in the session
// of its members, which calls setpgid(0, 0); the members join it with
// setpgid once the whole tree exists (restorer.groups). The helpers then
// exit and their parent reaps them: nothing of them stays.
//
// The images need nothing more than the pstree entries' pgid and sid: a
// helper is any session or group id that no task of the image has as its
// pid, but for the session and group the root was started in, from
// outside the tree (crhook-inventory's outside ids, or for older images
// the root's own): those are the restorer's, as for a shell job
// (fromOutside). A task whose pid is a group's it has left for another
// leads that group again while its members join it (restorer.groups).
//
// An orphan, a task whose session is neither its parent's nor its own,
// is rebuilt the way it came about: once the session's leader exists
// (or the helper standing in for it), a spare helper is cloned from it,
// the orphan from the spare, and when the spare exits (endHelpers) the
// orphan is reparented to its image parent, which is a child subreaper
// just for that moment (nothing else in the tree is one before
// restoreLast, so it is the nearest). Its memory is the leader's, which
// its copy-on-write plan compares with. This reaches any parent that is
// an ancestor of the leader, or, for an exited leader, of the helper's
// parent: the helper is cloned from the deepest parent of the session's
// members, those under that parent are cloned from it with
// CLONE_PARENT, those under its ancestors are orphaned to them.
//
// Siblings that share an fd table or fs info their parent does not hold
// are cloned from one another with CLONE_PARENT and CLONE_FILES or
// CLONE_FS, as the kernel made them (shareSource).
//
// A child born before its parent left the session (the parent forked it,
// then called setsid) is in another session than its parent, which
// leads its own: the parent is born in the child's session (checkShape's
// pre, bornIn) and does not enter its own at once (setsidLater); it
// clones such children first, and calls setsid before its other
// children. It is born in that session from its own parent, which is in
// it or is born in it the same way (a line of leaders, each calling
// setsid after its children), or from the helper of an exited leader's
// session (CLONE_PARENT), when that is what brings the session's members
// under parents not on one line of descent to one helper.
//
// Such a leader that also has a sibling in its own session (cloned from
// it, CLONE_PARENT, after its setsid) clones its children of the session
// it was born in right after its own clone, in its parent's
// cloneChildren (checkShape's earlySetsid, cloneEarly), and calls setsid
// when the first sibling of its own session is to be cloned, or once all
// are (leaveEarly): siblings of the session it was born in may be cloned
// from it before. A zombie, which has no fd table or fs info left, is
// cloned sharing its cloner's and passes them on to the siblings cloned
// from it (zombieHolds); its session's orphans are cloned from it before
// it dies.
//
// A live leader that was itself reparented up past the parents of its
// session's members (an orphan's parent is then no ancestor of it) is
// born under the deepest of them (checkShape's bornUnder, bearUnder):
// from a spare helper cloned from that task, whose exit reparents the
// leader to its image parent only after the members, orphaned from the
// leader, have gone to theirs.
//
// A task sharing an object only with holders on another branch (its
// holder parent exited, and it went up to a subreaper above them) is
// born under one of them, as an orphan (checkShape's bornUnder,
// bearUnder). A task sharing an object with its grandparent that its
// parent dropped (unshare, exec) is cloned from its parent while the
// parent still shares it, the parent cloned so from the grandparent and
// unsharing it at once (checkShape's borrowed, cloneBorrowers), or from
// a sibling of the parent (borrowFrom).
//
// A task that held an object, cloned children or siblings sharing it,
// and dropped it since, lends it (checkShape's lent): it holds it from
// its birth (startLending; cloned sharing it when it is its parent's,
// lentAtBirth), the tasks cloned from it take it, and it unshares it
// once they are cloned (cloneChildren), or, for a table none of the
// children it is yet to clone takes, before its own fds are restored
// (dropLentTable).
//
// A leader born in a session it left may have been born there as an
// orphan, of the session's leader or of a task below it: it is cloned
// from a spare helper of the leader like the session's other orphans,
// and calls setsid once it has cloned its children there. The helper of
// an exited leader's session may be cloned from a sibling of its members
// that holds what they share with it (checkShape's helperFrom).
//
// Helpers share the fd table and fs info of the task they are cloned
// from (CLONE_FILES, CLONE_FS) and pass them on (objectsOf): a member of
// an exited leader's session cloned from its helper shares what the
// helper's parent holds when the images say so, and an orphan shares
// its session leader's (or the helper's parent's) the same way.
//
// What this does not rebuild, and refuses (checkShape says why, at dump
// and at restore): an orphan of a live session whose parent is neither
// an ancestor of the leader nor on one line of descent with the other
// such parents below the leader's parent, members of one exited
// leader's session under parents not on one line of descent that no
// leader born in it explains, a member of the root's outside session
// under a parent that neither is in it nor was born in it, and a leader
// born in a session it would have to be orphaned in under an exited
// leader's helper; sharing between tasks that are neither parent and
// child nor siblings that no borrowing, lending or birth under a holder
// explains; sharing by an orphan of what the task its spare is cloned
// from does not hold; and sharing between siblings no one task can be
// cloned from in the right session. A plan that builds sharing other
// than the images say is crhook's bug: the restore checks the sharing
// before any task runs, and fails (checkRestoredSharing).

// sessionRestore is the restore's helper tasks.
type sessionRestore struct {
	helpers []*rtask       // in creation order
	byPid   map[int]*rtask // image pid -> helper
	gone    map[*ptrace.Task]bool
	// orphans: by session id, the orphans waiting for their live
	// leader to be created (adoptOrphans).
	orphans map[int][]deferredOrphan
	// births: by host pid, the tasks to be born under that task
	// (checkShape's bornUnder, bearUnder).
	births map[int][]deferredOrphan
}

type deferredOrphan struct {
	parent *rtask
	ti     *taskImage
}

// helperPids returns the pids the image's sessions and groups need for
// helpers.
func (rs *restorer) helperPids() map[int]bool {
	out := map[int]bool{}
	for _, ti := range rs.s.tasks {
		for _, id := range []int{ti.sid(), ti.pgid()} {
			if rs.needsHelper(id) {
				out[id] = true
			}
		}
	}
	return out
}

// needsHelper says whether session or group id names no task of the
// image and is not the root's from outside.
func (rs *restorer) needsHelper(id int) bool {
	if id <= 0 {
		return false
	}
	if _, ok := rs.s.tasks[id]; ok {
		return false
	}
	return !rs.fromOutside(id)
}

// fromOutside says whether session or group id is one the root was
// started in (its own from outside the tree, or one it left after
// cloning some of its tasks): the restorer's, which its tasks inherit.
func (rs *restorer) fromOutside(id int) bool {
	if _, ok := rs.s.tasks[id]; ok || id <= 0 {
		return false
	}
	if id == outsideNS {
		return true
	}
	root := rs.s.tasks[int(rs.s.tree[0].GetPid())]
	out, known := rs.s.outside()
	if known {
		// The root's group may be one of the tree's, led by a
		// task that has exited: the root joined it.
		return id == root.sid() || out.has(id)
	}
	return id == root.sid() || id == root.pgid()
}

// cloneChildren creates the children of p, each in its session, with the
// helpers they need, and returns them in the order they are to be built.
// Each child is cloned before any is built: a child cloned from a
// sibling gets the sibling's address space, which is then still the
// parent's, as its copy-on-write inheritance expects.
func (rs *restorer) cloneChildren(p *rtask) ([]*rtask, error) {
	// In checkShape's order (cloneOrder), which has checked that each
	// child finds a task to be cloned from.
	kids := make([]*taskImage, 0, len(rs.shape.order[p.ti.pid]))
	for _, pid := range rs.shape.order[p.ti.pid] {
		kids = append(kids, rs.s.tasks[pid])
	}
	if l, ok := rs.shape.lent[p.ti.pid]; ok && p.lends == nil {
		// p lends its children its fd table or fs info, as it is
		// now, and keeps a copy once they are cloned (set at its
		// birth but for the root: startLending).
		p.lends = &l
	}
	if len(kids) > 0 {
		// The children inherit p's memory (inherit.go): all of it,
		// whoever they are cloned from, since the sibling or helper
		// they may be cloned from holds p's memory unchanged.
		if err := rs.memoryReady(p); err != nil {
			return nil, err
		}
	}
	early := -1
	if p.setsidLater {
		early = rs.shape.pre[p.ti.pid]
	}
	inSession := map[int]*rtask{} // sid -> a task cloned here that is in it
	// The children cloned already, right after p (cloneBorrowers,
	// cloneEarly), are siblings to clone from too.
	var out []*rtask
	sibs := append([]*rtask(nil), p.borrowers...)
	for _, k := range sibs {
		// A borrowed leader is there to clone its session's members
		// from (checkShape registers it the same way).
		if s := rs.bornIn(k.ti); !k.ti.zombie() && !rs.shape.earlySetsid[k.ti.pid] && inSession[s] == nil {
			inSession[s] = k
		}
	}
	for _, c := range kids {
		if host, ok := rs.shape.bornUnder[c.pid]; ok {
			if rs.sess.births == nil {
				rs.sess.births = map[int][]deferredOrphan{}
			}
			rs.sess.births[host] = append(rs.sess.births[host], deferredOrphan{parent: p, ti: c})
			continue
		}
		sid := rs.bornIn(c)
		if err := rs.leaveEarly(sibs, sid, inSession); err != nil {
			return nil, err
		}
		src := p
		if p.setsidLater && sid != early {
			if err := enterSession(p); err != nil {
				return nil, err
			}
			p.setsidLater = false
		}
		if sid != c.pid && sid != p.ti.sid() && sid != early {
			var err error
			if src, err = rs.sessionSource(p, c, sid, inSession, sibs); err != nil {
				return nil, err
			}
			if h := inSession[sid]; h != nil && h == src && rs.sess.byPid[sid] == h {
				// A new helper: the orphans its session waits for.
				more, err := rs.adoptOrphans(h, p, sid)
				if err != nil {
					return nil, err
				}
				out = append(out, more...)
			}
		}
		if src == nil {
			// Deferred until its session's leader exists.
			if rs.sess.orphans == nil {
				rs.sess.orphans = map[int][]deferredOrphan{}
			}
			rs.sess.orphans[sid] = append(rs.sess.orphans[sid], deferredOrphan{parent: p, ti: c})
			continue
		}
		src, err := rs.shareSource(p, c, src, sibs)
		if err != nil {
			return nil, err
		}
		child, err := rs.cloneFrom(src, p, c)
		if err != nil {
			return nil, fmt.Errorf("pid %d: create child %d: %w", p.ti.pid, c.pid, err)
		}
		faultPoint("restore:after-clone")
		if err := rs.startChild(child); err != nil {
			return nil, err
		}
		if inSession[sid] == nil && !rs.shape.earlySetsid[c.pid] {
			inSession[sid] = child
		}
		from := p // what child's borrowed children borrow
		if _, ok := rs.shape.borrowFrom[c.pid]; ok {
			from = src
		}
		if err := rs.cloneBorrowers(from, child); err != nil {
			return nil, err
		}
		if err := rs.cloneEarly(child); err != nil {
			return nil, err
		}
		out = append(out, child)
		sibs = append(sibs, child)
	}
	if err := rs.leaveEarly(sibs, 0, inSession); err != nil {
		return nil, err
	}
	if p.setsidLater {
		if err := enterSession(p); err != nil {
			return nil, err
		}
		p.setsidLater = false
	}
	if l := p.lends; l != nil && l.flags() != 0 {
		if _, err := p.r.call("unshare", unix.SYS_UNSHARE, l.flags()); err != nil {
			return nil, fmt.Errorf("pid %d: keep a copy of what it lent its children: %w", p.ti.pid, err)
		}
	}
	p.lends = nil
	return append(p.borrowers, out...), nil
}

// cloneEarly creates, when c, just cloned from its parent p, leads a
// session with a sibling in it but was born in another, its children of
// that other session (checkShape's early); c calls setsid later, before
// the sibling is cloned from it (leaveEarly), and before its own turn
// comes.
// The children are cloned from c, or from one of them (CLONE_PARENT)
// holding what they share, and have the memory c was cloned with: c is
// not built yet.
func (rs *restorer) cloneEarly(c *rtask) error {
	if !rs.shape.earlySetsid[c.ti.pid] {
		return nil
	}
	early := rs.shape.early[c.ti.pid]
	var made []*rtask
	for _, pid := range early {
		e := rs.s.tasks[pid]
		need := holdsFor(c, e)
		for _, k := range made {
			need |= sharedWith(k.ti, e)
		}
		src := c
		for _, k := range made {
			if holdsFor(src, e) != need && holdsFor(k, e) == need {
				src = k
			}
		}
		lent := lentTo(src, e)
		flags, sig := holdsFor(src, e)|rs.lentAtBirth(src, e), uint64(unix.SIGCHLD)
		if src != c {
			flags, sig = flags|unix.CLONE_PARENT, 0
		} else {
			flags |= rs.borrows(c.ti, e) // checkShape clones a borrower from c
		}
		ct, hostPid, err := rs.clone(src, pid, flags, sig)
		if err != nil {
			return fmt.Errorf("pid %d: create child %d: %w", c.ti.pid, pid, err)
		}
		child := &rtask{ti: e, hostPid: hostPid, t: ct, parent: c, memSrc: unbuiltMemory(c)}
		rs.startLending(child)
		child.r = src.r.forTask(ct)
		child.table = maps.Clone(src.table)
		switch {
		case lent&unix.CLONE_FILES != 0 && src.lentFiles == nil:
			src.lentFiles = child // it restores the lent table's fds
		case lent&unix.CLONE_FILES != 0:
			child.filesSrc = src.lentFiles
		case flags&unix.CLONE_FILES != 0:
			child.filesSrc = src // src's fds are restored after
		}
		if err := rs.startChild(child); err != nil {
			return err
		}
		if err := rs.cloneBorrowers(c, child); err != nil {
			return err
		}
		made = append(made, child)
	}
	c.borrowers = append(c.borrowers, made...)
	c.setsidLater = true // leaveEarly
	return nil
}

// borrows returns the clone flags of what the image's task b, a child of
// a, is to share with a only for a while: what a child of b shares with
// a and b does not hold (checkShape's borrowed; cloneBorrowers).
func (rs *restorer) borrows(a, b *taskImage) uint64 {
	var fl uint64
	for _, pid := range rs.shape.borrowers[b.pid] {
		fl |= sharedWith(a, rs.s.tasks[pid]) &^ sharedWith(a, b)
	}
	return fl
}

// cloneBorrowers creates, when b, just cloned from its parent a, shares
// for a while what some of its children share with a and b dropped
// since (an unshare, an exec), those children from b, and then has b
// unshare it: b gets a copy, put right when its fds are restored, as a
// child's inherited table is. The children have a's memory, as b has
// not been built yet; b's children built first (cloneChildren).
func (rs *restorer) cloneBorrowers(a, b *rtask) error {
	fl := rs.borrows(a.ti, b.ti)
	if fl == 0 {
		return nil
	}
	leaders := map[int]*rtask{}
	for _, pid := range rs.shape.borrowers[b.ti.pid] {
		c := rs.s.tasks[pid]
		// A member of a borrowed leader's session is cloned from it
		// (CLONE_PARENT), holding what it holds (checkShape).
		src, flags, sig := b, sharedWith(b.ti, c)|sharedWith(a.ti, c)&fl, uint64(unix.SIGCHLD)
		if l := leaders[c.sid()]; l != nil {
			src, flags, sig = l, sharedWith(l.ti, c)|unix.CLONE_PARENT, 0
		}
		ct, hostPid, err := rs.clone(src, pid, flags, sig)
		if err != nil {
			return fmt.Errorf("pid %d: create child %d: %w", b.ti.pid, pid, err)
		}
		child := &rtask{ti: c, hostPid: hostPid, t: ct, parent: b, memSrc: unbuiltMemory(b)}
		if c.sid() == pid {
			leaders[pid] = child
		}
		child.r = src.r.forTask(ct)
		child.table = maps.Clone(a.table)
		switch {
		case sharedWith(b.ti, c)&unix.CLONE_FILES != 0:
			child.filesSrc = b // b's fds are restored after
		case a != b.parent && sharedWith(a.ti, c)&fl&unix.CLONE_FILES != 0:
			child.filesSrc = a // a sibling of b's, built after this
		}
		if err := rs.startChild(child); err != nil {
			return err
		}
		if err := rs.cloneEarly(child); err != nil {
			return err
		}
		b.borrowers = append(b.borrowers, child)
	}
	if _, err := b.r.call("unshare", unix.SYS_UNSHARE, fl); err != nil {
		return fmt.Errorf("pid %d: %w", b.ti.pid, err)
	}
	if fl&unix.CLONE_FILES != 0 {
		// b's table is its own copy now, of what it had from a: not
		// a's once restored (b was cloned from a sibling a).
		b.filesSrc = nil
	}
	return nil
}

// startChild puts a task just cloned in its session: a leader enters its
// own now, or, born in another (checkShape's pre), once it has cloned
// its children of that one (setsidLater); and it gives the task's group
// its helper when the group's leader has exited.
func (rs *restorer) startChild(t *rtask) error {
	ti := t.ti
	switch sid := ti.sid(); {
	case rs.bornIn(ti) != sid:
		t.setsidLater = true
	case sid == ti.pid:
		if err := enterSession(t); err != nil {
			return err
		}
	}
	return rs.groupHelper(t)
}

// memoryReady waits until t's pages are all in place, for a task to be
// cloned with its memory.
func (rs *restorer) memoryReady(t *rtask) error {
	if t.memReady {
		return nil
	}
	if err := rs.waitFill(t); err != nil {
		return fmt.Errorf("pid %d: %w", t.ti.pid, err)
	}
	t.memReady = true
	return nil
}

// sessionNow returns the session t is in while its later siblings are
// cloned: the one it is born in, or its own once a leader with early
// children has called setsid (leaveEarly).
func (rs *restorer) sessionNow(t *rtask) int {
	if rs.shape.earlySetsid[t.ti.pid] && !t.setsidLater {
		return t.ti.pid
	}
	return rs.bornIn(t.ti)
}

// leaveEarly has the leaders among sibs that were born in another
// session with early children (cloneEarly) call setsid, when sid is
// theirs or 0 (all of them): at the first sibling in their session, for
// it to be cloned from them, or once all are cloned. Until then they
// stay, for siblings of the session they are born in to be cloned from
// them too.
func (rs *restorer) leaveEarly(sibs []*rtask, sid int, inSession map[int]*rtask) error {
	for _, c := range sibs {
		if !rs.shape.earlySetsid[c.ti.pid] || !c.setsidLater || sid != 0 && sid != c.ti.pid {
			continue
		}
		if err := enterSession(c); err != nil {
			return err
		}
		c.setsidLater = false
		inSession[c.ti.pid] = c
	}
	return nil
}

// bornIn returns the session the image's task ti is born in: its own,
// but for a leader born in another (checkShape's pre), which it calls
// setsid from once it has cloned its children of that one.
func (rs *restorer) bornIn(ti *taskImage) int {
	if s := rs.shape.pre[ti.pid]; s != 0 {
		return s
	}
	return ti.sid()
}

// shareSource returns the task child c of p is to be cloned from so that
// it shares what the images say it shares (CRIU's files_id and fs_id):
// src, the task its session asks for, when src holds all of it, else a
// sibling cloned before c that does and is in c's session (or c starts
// one of its own). A sibling holding an fd table or fs info p does not
// hold passes it on with CLONE_PARENT, as the kernel made it.
// Precondition: no sibling in sibs built yet (its table and fs are
// still to be restored, its memory still p's).
func (rs *restorer) shareSource(p *rtask, c *taskImage, src *rtask, sibs []*rtask) (*rtask, error) {
	// need: what c shares with p (or p lends it) or a sibling.
	need := sharedWith(p.ti, c) | lentTo(p, c)
	for _, k := range sibs {
		need |= sharedWith(k.ti, c) | lentTo(k, c)
	}
	if s, ok := rs.shape.borrowFrom[c.pid]; ok {
		// It borrows from that sibling for its children (checkShape).
		for _, k := range sibs {
			if k.ti.pid == s {
				return k, nil
			}
		}
		return nil, fmt.Errorf("pid %d borrows from its sibling %d, which is not cloned before it: %w", c.pid, s, ErrNotSupported)
	}
	if holdsFor(src, c) == need {
		return src, nil
	}
	sid := rs.bornIn(c)
	for _, k := range sibs {
		if holdsFor(k, c) == need && (sid == c.pid || rs.sessionNow(k) == sid) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("pid %d (session %d) shares %s with its parent %d or a sibling, but no one task it can be cloned from holds all of it in its session: clone shares only the cloner's, and a new task starts in the cloner's session, so it was cloned before a holder left the session (setsid), which crhook does not rebuild: %w",
		c.pid, sid, shareWhat(need), p.ti.pid, ErrNotSupported)
}

func shareWhat(fl uint64) string {
	switch fl {
	case unix.CLONE_FILES:
		return "an fd table"
	case unix.CLONE_FS:
		return "fs info"
	}
	return "an fd table and fs info"
}

// enterSession makes t the leader of a new session, unless it leads one
// already (a runtime's container init may).
func enterSession(t *rtask) error {
	sid, err := t.r.call("getsid", unix.SYS_GETSID, 0)
	if err != nil {
		return fmt.Errorf("pid %d: %w", t.ti.pid, err)
	}
	if int(sid) == t.ti.pid {
		return nil
	}
	if _, err := t.r.call("setsid", unix.SYS_SETSID); err != nil {
		return fmt.Errorf("pid %d: %w", t.ti.pid, err)
	}
	return nil
}

// sessionSource returns the task that child c of p is to be cloned from
// to be born in session sid: one of its siblings in it, or a new helper
// leading it; nil when c is to be rebuilt as an orphan (checkShape chose
// which).
func (rs *restorer) sessionSource(p *rtask, c *taskImage, sid int, inSession map[int]*rtask, sibs []*rtask) (*rtask, error) {
	if t := inSession[sid]; t != nil {
		return t, nil
	}
	if !rs.needsHelper(sid) {
		if _, ok := rs.s.tasks[sid]; ok {
			return nil, nil // adoptOrphans, once the leader (a zombie too) exists
		}
		return nil, fmt.Errorf("pid %d is in session %d, which its parent %d is not in, and whose leader is not in the tree: %w",
			c.pid, sid, p.ti.pid, ErrNotSupported)
	}
	if q, ok := rs.shape.helperParent[sid]; !ok || q != p.ti.pid {
		if h := rs.sess.byPid[sid]; h != nil || !ok {
			return nil, fmt.Errorf("pid %d is in session %d, whose leader has exited, under %d, which is not an ancestor of the session's helper's parent %d: %w",
				c.pid, sid, p.ti.pid, q, ErrNotSupported)
		}
		return nil, nil // adoptOrphans, once the helper exists
	}
	from := p
	if k, ok := rs.shape.helperFrom[sid]; ok {
		// Cloned from that sibling, holding what it holds.
		from = nil
		for _, s := range sibs {
			if s.ti.pid == k {
				from = s
			}
		}
		if from == nil {
			return nil, fmt.Errorf("the helper of session %d is cloned from %d, which is not cloned before it: %w", sid, k, ErrNotSupported)
		}
	}
	h, err := rs.newHelper(from, p, sid)
	if err != nil {
		return nil, err
	}
	if _, err := h.r.call("setsid", unix.SYS_SETSID); err != nil {
		return nil, fmt.Errorf("helper %d for session %d: %w", sid, sid, err)
	}
	inSession[sid] = h
	return h, nil
}

// adoptOrphans creates the orphans deferred for session sid, whose
// leader (or the helper standing in for it) src now exists: each is
// cloned from a spare helper cloned from src, so that it is born in the
// session, and the spare's exit (endHelpers) reparents it to its image
// parent, an ancestor of src. Their memory is memSrc's (src's, or for a
// helper the memory of the task it was cloned from). It returns them to
// be built like src's children.
func (rs *restorer) adoptOrphans(src, memSrc *rtask, sid int) ([]*rtask, error) {
	orphans := rs.sess.orphans[sid]
	if len(orphans) == 0 {
		return nil, nil
	}
	delete(rs.sess.orphans, sid)
	if err := rs.memoryReady(memSrc); err != nil {
		return nil, err
	}
	var out []*rtask
	for _, o := range orphans {
		h, err := rs.spareHelper(src, sid)
		if err != nil {
			return nil, err
		}
		c, err := rs.cloneOrphan(h, o, memSrc)
		if err != nil {
			return nil, fmt.Errorf("pid %d: create orphan %d in session %d: %w", o.parent.ti.pid, o.ti.pid, sid, err)
		}
		if err := rs.startChild(c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// bearUnder creates the tasks to be born under host (checkShape's
// bornUnder): session leaders reparented up past the parents of their
// session's members, and tasks sharing an object only with holders on
// another branch. Each is cloned from a spare helper cloned from host,
// sharing what host holds of what it shares, and a leader starts its
// session; the spare's exit (endHelpers) reparents it up to its image
// parent, after the orphans created later (a leader's members, host
// among their parents) have gone to theirs. Its memory is host's. It
// returns them to be built like host's children.
func (rs *restorer) bearUnder(host *rtask) ([]*rtask, error) {
	born := rs.sess.births[host.ti.pid]
	if len(born) == 0 {
		return nil, nil
	}
	delete(rs.sess.births, host.ti.pid)
	if err := rs.memoryReady(host); err != nil {
		return nil, err
	}
	var out []*rtask
	for _, o := range born {
		h, err := rs.spareHelper(host, o.ti.pid)
		if err != nil {
			return nil, err
		}
		c, err := rs.cloneOrphan(h, o, host)
		if err != nil {
			return nil, fmt.Errorf("pid %d: create %d under %d: %w", o.parent.ti.pid, o.ti.pid, host.ti.pid, err)
		}
		if err := rs.startChild(c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// cloneOrphan clones o from the spare helper h, sharing what it shares
// of the objects h passes on, with the memory of memSrc; h's exit
// (endHelpers) is to reparent it to its image parent.
func (rs *restorer) cloneOrphan(h *rtask, o deferredOrphan, memSrc *rtask) (*rtask, error) {
	from := objectsOf(h)
	flags := sharedWith(from.ti, o.ti)
	if o.ti.zombie() {
		flags = zombieHolds
	}
	ct, hostPid, err := rs.clone(h, o.ti.pid, flags, uint64(unix.SIGCHLD))
	if err != nil {
		return nil, err
	}
	c := &rtask{ti: o.ti, hostPid: hostPid, t: ct, parent: o.parent, memSrc: memSrc, spare: h}
	if o.ti.zombie() {
		c.holds = h // passed on to its session's orphans, as any zombie's
	}
	c.r = h.r.forTask(ct)
	// The objects' holder has its fds in place already.
	c.table = maps.Clone(from.table)
	h.reaper, h.orphans = o.parent, []*rtask{c}
	return c, nil
}

// unbuiltMemory returns the task whose memory t, cloned and not built
// yet, holds: its parent's, or the one it was cloned with.
func unbuiltMemory(t *rtask) *rtask {
	if t.memSrc != nil {
		return t.memSrc
	}
	return t.parent
}

// objectsOf returns the task whose fd table and fs info t holds: t, or
// for a helper the task it shares them with.
func objectsOf(t *rtask) *rtask {
	for t.holds != nil {
		t = t.holds
	}
	return t
}

// spareHelper clones from t a helper with a pid that no task of the image
// needs and nothing holds.
func (rs *restorer) spareHelper(t *rtask, sid int) (*rtask, error) {
	need := rs.helperPids()
	for pid, ti := range rs.s.tasks {
		need[pid] = true
		for _, th := range ti.threads {
			need[th.tid] = true
		}
	}
	for pid := range rs.sess.byPid {
		need[pid] = true
	}
	err := ErrPidTaken
	for _, pid := range freePids(need, 64) {
		var h *rtask
		// A taken pid: try the next one at once.
		if h, err = rs.newHelperWithin(t, t, pid, 0); err == nil {
			return h, nil
		}
		if !errors.Is(err, ErrPidTaken) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no free pid for a helper of session %d: %w", sid, err)
}

// groupHelper creates, when t's process group's leader has exited, a
// helper with the group's pid in t's session that starts the group (a
// zombie's too: it joins its group before it dies).
func (rs *restorer) groupHelper(t *rtask) error {
	pgid := t.ti.pgid()
	if pgid == t.ti.pid || !rs.needsHelper(pgid) || rs.sess.byPid[pgid] != nil {
		return nil
	}
	parent := t.parent
	switch {
	case t.spare != nil:
		// Its sibling under the spare, which reaps it: the spare's
		// exit would leave it a zombie under the task's image parent.
		parent = t.spare
	case parent == nil:
		parent = t // the root: the helper is its child
	}
	h, err := rs.newHelper(t, parent, pgid)
	if err != nil {
		return err
	}
	if _, err := h.r.call("setpgid", unix.SYS_SETPGID, 0, 0); err != nil {
		return fmt.Errorf("helper %d for process group %d: %w", pgid, pgid, err)
	}
	return nil
}

// cloneFrom creates the image's task c, a child of p, cloned from src:
// p itself, or a task of c's session or holding its fd table or fs info
// whose parent is p (CLONE_PARENT).
func (rs *restorer) cloneFrom(src, p *rtask, c *taskImage) (*rtask, error) {
	if src == p {
		return rs.cloneChild(p, c)
	}
	// clone3 refuses an exit signal with CLONE_PARENT: the child gets
	// src's, SIGCHLD.
	share := holdsFor(src, c) | rs.lentAtBirth(src, c)
	if _, ok := rs.shape.borrowFrom[c.pid]; ok {
		share |= rs.borrows(objectsOf(src).ti, c) // for its children
	}
	if c.zombie() {
		share = zombieHolds
	}
	t, hostPid, err := rs.clone(src, c.pid, unix.CLONE_PARENT|share, 0)
	if err != nil {
		return nil, err
	}
	// src, a sibling or a helper, is not built: it has p's memory,
	// or the memory it was cloned with.
	child := &rtask{ti: c, hostPid: hostPid, t: t, parent: p, memSrc: src.memSrc}
	rs.startLending(child)
	child.r = src.r.forTask(t)
	child.table = maps.Clone(objectsOf(src).table)
	if c.zombie() {
		child.holds = src
	} else if share&unix.CLONE_FILES != 0 {
		// A sibling's fds are restored after this clone: c takes
		// the table it leaves (create). A lent table's are restored
		// by the first child that holds it.
		switch o := objectsOf(src); {
		case lentTo(o, c)&unix.CLONE_FILES == 0:
			child.filesSrc = o
		case o.lentFiles == nil:
			o.lentFiles = child
		default:
			child.filesSrc = o.lentFiles
		}
	}
	return child, nil
}

// newHelper clones from src a helper task with pid, a child of parent
// (src itself, or a child of parent: CLONE_PARENT).
func (rs *restorer) newHelper(src, parent *rtask, pid int) (*rtask, error) {
	return rs.newHelperWithin(src, parent, pid, rs.wait)
}

// newHelperWithin is newHelper waiting at most wait for pid to be free.
// The helper shares src's fd table and fs info, to pass them on to the
// tasks cloned from it that share them (objectsOf).
func (rs *restorer) newHelperWithin(src, parent *rtask, pid int, wait time.Duration) (*rtask, error) {
	var flags, sig uint64 = unix.CLONE_FILES | unix.CLONE_FS, uint64(unix.SIGCHLD)
	if src != parent {
		flags, sig = flags|unix.CLONE_PARENT, 0
	}
	t, hostPid, err := rs.cloneWithin(src, pid, flags, sig, wait)
	if err != nil {
		return nil, fmt.Errorf("create helper %d (a session or process group leader that has exited): %w", pid, err)
	}
	h := &rtask{ti: &taskImage{pid: pid}, hostPid: hostPid, t: t, parent: parent, holds: src}
	h.r = src.r.forTask(t)
	if rs.sess.byPid == nil {
		rs.sess.byPid = map[int]*rtask{}
		rs.sess.gone = map[*ptrace.Task]bool{}
	}
	rs.sess.byPid[pid] = h
	rs.sess.helpers = append(rs.sess.helpers, h)
	rs.log.WithField("pid", pid).Debug("helper task")
	return h, nil
}

// endHelpers lets every helper exit and has its parent reap it, once the
// groups are joined. The parent's SIGCHLD for it is swallowed. A spare
// helper's orphans go to their image parent, an ancestor of the spare:
// that task is a child subreaper while the spare exits, the nearest one
// above it, as no other task of the tree is one before restoreLast;
// the flag is then taken back (restoreLast sets the image's).
// Precondition: every task built, none finished.
func (rs *restorer) endHelpers() error {
	for i := len(rs.sess.helpers) - 1; i >= 0; i-- {
		h := rs.sess.helpers[i]
		if h.reaper != nil {
			if _, err := h.reaper.r.call("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
				return fmt.Errorf("pid %d: %w", h.reaper.ti.pid, err)
			}
		}
		killAndReap(h.t) // we collect its exit, then its parent may
		rs.sess.gone[h.t] = true
		if err := rs.reapHelper(h); err != nil {
			return fmt.Errorf("pid %d: reap helper %d: %w", h.parent.ti.pid, h.ti.pid, err)
		}
		if h.reaper == nil {
			continue
		}
		if _, err := h.reaper.r.call("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 0); err != nil {
			return fmt.Errorf("pid %d: %w", h.reaper.ti.pid, err)
		}
		for _, o := range h.orphans {
			st, err := procfs.ReadStat(o.hostPid)
			if err != nil {
				return fmt.Errorf("orphan %d: %w", o.ti.pid, err)
			}
			if st.Ppid != h.reaper.hostPid {
				return fmt.Errorf("orphan %d went to %d (host pid), not to its parent %d (host pid %d)", o.ti.pid, st.Ppid, h.reaper.ti.pid, h.reaper.hostPid)
			}
		}
	}
	return nil
}

// reapHelper injects wait4 for the exited helper h into its parent, with
// every signal unblocked so that the helper's SIGCHLD stops the parent
// and is dropped there.
func (rs *restorer) reapHelper(h *rtask) error {
	p := h.parent
	mask, err := p.t.GetSigmask()
	if err != nil {
		return err
	}
	if err := p.t.SetSigmask(0); err != nil {
		return err
	}
	deadline := time.Now().Add(rs.wait)
	for {
		got, err := p.r.call("wait4", unix.SYS_WAIT4, uint64(h.ti.pid), 0, unix.WNOHANG|unix.WALL, 0)
		if errors.Is(err, unix.ECHILD) {
			// Reaped already (SIGCHLD ignored: the kernel reaps), or
			// not p's child: then its zombie would stay.
			if _, err := procfs.ReadStat(h.hostPid); err == nil {
				return fmt.Errorf("helper %d is not a child of %d: its zombie would stay", h.ti.pid, p.ti.pid)
			}
			break
		}
		if err != nil {
			return err
		}
		if int(got) == h.ti.pid {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("helper %d did not exit within %v", h.ti.pid, rs.wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.t.Deferred()
	return p.t.SetSigmask(mask)
}

// killUnlessGone is the failed restore's undo for a task we created:
// the helpers that exited already are left alone (their pid may be
// another process's by now).
func (rs *restorer) killUnlessGone(t *ptrace.Task) {
	if rs.sess.gone[t] {
		return
	}
	killAndReap(t)
}
