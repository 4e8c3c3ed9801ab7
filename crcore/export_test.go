//go:build linux

package crcore

// SetUserfaultMin sets the bytes of fresh anonymous memory from which a
// restore fills a task through a userfaultfd (0: every task with any),
// until the returned function puts the default back.
func SetUserfaultMin(n uint64) (restore func()) {
	old := userfaultMin
	userfaultMin = n
	return func() { userfaultMin = old }
}

// SetInheritCopyOnWrite turns off (or on) the copy-on-write inheritance
// of a restore: each child then starts from an empty address space, and
// gets the pages it shared with its parent from the parent's image.
func SetInheritCopyOnWrite(on bool) (restore func()) {
	old := inheritCopyOnWrite
	inheritCopyOnWrite = on
	return func() { inheritCopyOnWrite = old }
}

// SetRlimitsInside makes dumps and restores ask each task for its rlimits
// (the path taken when prlimit from crhook is refused), until the
// returned function puts the default back.
func SetRlimitsInside() (restore func()) {
	rlimitsFromHere = false
	return func() { rlimitsFromHere = true }
}

// SetNoLending makes restores ignore what their plan says tasks lend,
// until the returned function puts the default back: the tree they build
// then shares less than its images say.
func SetNoLending() (restore func()) {
	spoilPlan = func(p *shapePlan) { p.lent = map[int]lentObjs{} }
	return func() { spoilPlan = nil }
}
