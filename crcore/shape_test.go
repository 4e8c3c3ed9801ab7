//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The shape planner on trees written as "pid ppid sid [files [fs]]" (the
// first is the root; a session id that is no pid is a leader that has
// exited, or the root's session from outside; files and fs, the fd
// table's and fs info's ids, are the pid when not given; a "z" at the
// end makes it a zombie).
func TestCheckShapePlan(t *testing.T) {
	for _, tc := range []struct {
		name, tree string
		pre        map[int]int // want plan.pre
		helper     map[int]int // want plan.helperParent
		bornUnder  map[int]int // want plan.bornUnder
		borrowed   map[int]bool
		lent       map[int]lentObjs
		borrowFrom map[int]int
		order      map[int][]int // want these of plan.order
		helperFrom map[int]int
		outside    int    // the session and group the root was started in
		refused    string // or want this in the refusal
	}{
		{name: "plain", tree: "1 0 1, 2 1 1, 3 2 3, 4 3 3"},
		{name: "born before setsid", tree: "1 0 1, 2 1 2, 3 2 1", pre: map[int]int{2: 1}},
		{name: "line of leaders", tree: "1 0 1, 2 1 2, 3 2 3, 4 3 1", pre: map[int]int{2: 1, 3: 1}},
		{name: "line of leaders, outside session", tree: "10 5 5, 11 10 11, 12 11 12, 13 12 5", pre: map[int]int{11: 5, 12: 5}},
		{name: "root that left the session it was started in", tree: "1 0 1, 2 1 2, 3 2 5, 4 1 5", outside: 5, pre: map[int]int{1: 5, 2: 5}},
		{name: "root that left the session it was started in, a grandchild in it", tree: "1 0 1, 2 1 2, 3 2 5", outside: 5, pre: map[int]int{1: 5, 2: 5}},
		{name: "root that left a session outside the pid namespace", tree: fmt.Sprintf("1 0 1, 2 1 2, 3 2 %d, 4 1 1", outsideNS), outside: outsideNS, pre: map[int]int{1: outsideNS, 2: outsideNS}},
		{name: "leader born in its parent's session, cloned from a sibling", tree: "1 0 1, 2 1 1 2 1, 3 1 3 2 3, 4 3 1 4 4", pre: map[int]int{3: 1}},
		{name: "leader that lent its children of two sessions a table it dropped", tree: "1 0 1, 2 1 2, 3 2 1 3, 4 2 2 3", pre: map[int]int{2: 1}, lent: map[int]lentObjs{2: {files: 3}}},
		{name: "leader that lent a table, its own shared with a child", tree: "1 0 1, 2 1 2, 3 2 1 3, 4 2 2 3, 5 2 2 2", refused: "no one task it can be cloned from"},
		{name: "leader born in its sibling leader's session", tree: "1 0 1, 2 1 1, 3 2 3 2, 6 2 6, 7 6 3", pre: map[int]int{6: 3}},
		{name: "holder that dropped a table it had from a sibling", tree: "1 0 1, 3 1 3 3, 4 1 3 4, 5 4 3 3",
			borrowed: map[int]bool{5: true}, borrowFrom: map[int]int{4: 3}},
		{name: "holder that dropped a table from a sibling, and its grandparent's", tree: "1 0 1, 3 1 3 3, 4 1 3 4, 5 4 3 3 1", refused: "not siblings"},
		{name: "leader borrowing from a member sibling, cloned after it", tree: "1 0 1, 2 1 1, 5 1 5, 6 5 6 2, 7 5 1",
			pre: map[int]int{5: 1}, borrowed: map[int]bool{6: true}, borrowFrom: map[int]int{5: 2}, order: map[int][]int{1: {2, 5}}},
		{name: "holder that dropped its parent's fs info, sharing a table with a sibling", tree: "1 0 1, 3 1 3, 6 3 3 6 1, 8 3 3 6 8",
			lent: map[int]lentObjs{3: {fs: 1}}},
		{name: "... and its own fs info with a child", tree: "1 0 1, 3 1 3, 6 3 3 6 1, 8 3 3 6 8, 9 3 3 9 3",
			borrowed: map[int]bool{6: true}},
		{name: "leader that lent its own session's child its parent's fs info", tree: "1 0 1, 2 1 2, 3 2 1, 4 2 2 4 1",
			pre: map[int]int{2: 1}, lent: map[int]lentObjs{2: {fs: 1}}},
		{name: "leader that lent its parent's fd table to a sibling in its session", tree: "1 0 1, 2 1 2, 3 1 2 1",
			lent: map[int]lentObjs{2: {files: 1}}, order: map[int][]int{1: {2, 3}}},
		{name: "leader that lent its parent's fd table to a sibling and a child", tree: "1 0 1, 2 1 2, 3 1 2 1, 4 2 2 1", refused: "no one task"},
		{name: "leader sharing its parent's fs info, and a table with siblings in both sessions", tree: "1 0 1, 2 1 2 2 1, 3 1 1 2, 6 1 2 2",
			lent: map[int]lentObjs{1: {files: 2}}},
		{name: "... the parent's table shared too", tree: "1 0 1, 2 1 2 2 1, 3 1 1 2, 6 1 2 2, 7 1 1 1",
			pre: map[int]int{2: 1}, order: map[int][]int{1: {2, 3, 7, 6}}},
		{name: "leader that lent a table it made to a child and a sibling", tree: "1 0 1, 2 1 2, 3 2 1 3, 4 1 2 3",
			pre: map[int]int{2: 1}, lent: map[int]lentObjs{2: {files: 3}}},
		{name: "tasks that lent fs info they had from two levels up", tree: "1 0 1, 2 1 1, 3 2 1, 4 3 1 4 1",
			lent: map[int]lentObjs{2: {fs: 1}, 3: {fs: 1}}},
		{name: "leader that lent its parent's fs info, its own shared", tree: "1 0 1, 2 1 2, 3 2 1, 4 2 2 4 1, 5 2 2 5 2", refused: "not siblings"},
		{name: "leader cloned from a member of its sibling leader's session", tree: "1 0 1, 2 1 1 2, 3 1 3 2, 4 1 3 4, 5 1 5 4",
			order: map[int][]int{1: {2, 3, 4, 5}}},
		{name: "borrowed leader with a sibling in its session that borrows nothing", tree: "1 0 1, 2 1 1 2, 3 2 3 3 1, 4 2 3",
			borrowed: map[int]bool{3: true}, order: map[int][]int{2: {4}}},
		{name: "borrowed leader with a sibling in its session", tree: "1 0 1, 2 1 1 2, 3 2 3 1, 4 2 3 1", borrowed: map[int]bool{3: true, 4: true}},
		{name: "exited leader whose member shares a sibling's table", tree: "1 0 1, 2 1 1 2, 3 1 5 2",
			helper: map[int]int{5: 1}, helperFrom: map[int]int{5: 2}},
		{name: "exited leader whose member shares a sibling's table, an orphan in it", tree: "9 0 9, 1 9 9, 2 1 9 2, 3 1 5 2, 6 9 5",
			refused: "no one task"},
		{name: "exited leader, one line", tree: "1 0 1, 2 1 1, 4 1 3, 5 2 3", helper: map[int]int{3: 2}},
		{name: "exited leader, members under leaders born in it", tree: "1 0 1, 3 1 3, 4 3 2, 5 1 5, 6 5 2",
			pre: map[int]int{3: 2, 5: 2}, helper: map[int]int{2: 1}},
		{name: "leader with a sibling in its session", tree: "1 0 1, 2 1 2, 3 1 2, 4 2 1", pre: map[int]int{2: 1}},
		{name: "exited leader, a leader born in it orphaned", tree: "1 0 1, 3 1 3, 4 3 2, 6 1 1, 7 6 2", refused: "not on one line of descent"},
		{name: "leader reparented past its member's parent", tree: "1 0 1, 2 1 1, 4 1 4, 5 2 4, 6 1 4, 7 4 4", bornUnder: map[int]int{4: 2}},
		{name: "leader reparented, its members' parents not on one line", tree: "1 0 1, 2 1 1, 3 1 1, 4 1 4, 5 2 4, 6 3 4", refused: "not an ancestor of the session's leader"},
		{name: "orphan sharing its leader's fd table", tree: "1 0 1, 2 1 1, 3 2 3 3, 5 1 3 3"},
		{name: "orphan sharing its fd table with its child only", tree: "1 0 1, 2 1 1, 3 2 3, 5 1 3 5, 6 5 3 5"},
		{name: "orphan sharing its parent's fd table", tree: "1 0 1 1, 2 1 1, 3 2 3, 5 1 3 1", refused: "does not hold all it shares"},
		{name: "task sharing with a holder on another branch", tree: "1 0 1, 2 1 1, 3 2 1 3, 5 1 1 3", bornUnder: map[int]int{5: 3}},
		{name: "task sharing with a holder in another session", tree: "1 0 1, 2 1 2, 3 2 2 3, 5 1 1 3",
			borrowed: map[int]bool{3: true}, borrowFrom: map[int]int{2: 5}},
		{name: "holder that dropped the table between", tree: "1 0 1, 2 1 1 2, 3 2 1 3, 4 3 1 2", borrowed: map[int]bool{4: true}},
		{name: "holder that dropped a table it shares with its child", tree: "1 0 1, 2 1 1 2, 3 2 1 3, 4 3 1 2, 5 3 1 3", borrowed: map[int]bool{4: true}},
		{name: "holder that dropped the table, sharing its own with a sibling", tree: "1 0 1, 2 1 1 2, 3 2 1 3, 7 2 1 3, 4 3 1 2", refused: "not siblings"},
		{name: "holders that dropped the table two levels up", tree: "1 0 1, 2 1 1 2, 3 2 1 3, 4 3 1 4, 6 4 1 2",
			lent: map[int]lentObjs{3: {files: 2}, 4: {files: 2}}},
		{name: "leader that lent its own session's child its parent's table", tree: "1 0 1, 2 1 2, 3 2 1, 4 2 2 1",
			pre: map[int]int{2: 1}, lent: map[int]lentObjs{2: {files: 1}}},
		{name: "exited leader's orphan sharing the helper parent's fd table", tree: "1 0 1 1, 2 1 1 1, 4 1 3 1, 5 2 3", helper: map[int]int{3: 2}},
		{name: "orphan of a zombie leader", tree: "1 0 1, 2 1 1, 3 2 3 z, 5 1 3"},
		{name: "orphan of a zombie leader sharing its fd table with its child", tree: "1 0 1, 2 1 1, 3 2 3 z, 5 1 3 5, 6 5 3 5"},
		{name: "orphan of a zombie leader sharing the leader's parent's fs info", tree: "1 0 1, 2 1 1, 3 2 3 z, 5 1 3 5 2"},
		{name: "orphan of a zombie leader moved past its parent, sharing the zombie's host's fs info", tree: "1 0 1, 2 1 2 2 1 z, 3 1 3 3 1, 4 3 2 4 1",
			bornUnder: map[int]int{2: 3}},
		{name: "orphan of a zombie leader moved past its parent", tree: "1 0 1, 2 1 1, 4 1 4 z, 5 2 4", bornUnder: map[int]int{4: 2}},
		{name: "leader with early children whose child is such a leader too", tree: "1 0 1, 2 1 2, 3 2 3, 4 3 1, 5 2 3, 6 1 2",
			refused: "no task of that session is cloned before it"},
		{name: "leader born in its sibling leader's session, which was born in its parent's", tree: "1 0 1, 2 1 2, 3 2 1, 4 1 4, 5 4 2",
			pre: map[int]int{2: 1, 4: 2}, order: map[int][]int{1: {2, 4}}},
		{name: "leader born an orphan of a zombie leader's session", tree: "1 0 1, 2 1 1, 3 2 3 z, 4 1 4, 5 4 3", pre: map[int]int{4: 3}},
		{name: "leader born an orphan of a task in a live leader's session", tree: "1 0 1, 2 1 1, 3 2 3, 6 3 3 z, 4 1 4, 5 4 3", pre: map[int]int{4: 3}},
		{name: "orphan of a task below the leader", tree: "1 0 1, 2 1 1, 3 2 3, 4 3 3, 5 4 3, 6 1 1, 7 6 3", refused: "not an ancestor of the session's leader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tasks := map[int]*shapeTask{}
			root := 0
			for _, f := range strings.Split(tc.tree, ",") {
				var st shapeTask
				if _, err := fmt.Sscan(f, &st.pid, &st.ppid, &st.sid); err != nil {
					t.Fatal(err)
				}
				st.files, st.fs = uint32(st.pid), uint32(st.pid)
				if fl := strings.Fields(strings.TrimSuffix(strings.TrimSpace(f), "z")); len(fl) > 3 {
					fmt.Sscan(fl[3], &st.files)
				}
				if fl := strings.Fields(strings.TrimSuffix(strings.TrimSpace(f), "z")); len(fl) > 4 {
					fmt.Sscan(fl[4], &st.fs)
				}
				st.zombie = strings.HasSuffix(strings.TrimSpace(f), "z")
				tasks[st.pid] = &st
				if root == 0 {
					root = st.pid
				}
			}
			plan, err := checkShape(tasks, root, tasks[root].sid, outsideIDs{sid: tc.outside, pgid: tc.outside})
			if tc.refused != "" {
				if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("got %v, want a refusal saying %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(plan.pre) != fmt.Sprint(orEmpty(tc.pre)) || fmt.Sprint(plan.helperParent) != fmt.Sprint(orEmpty(tc.helper)) ||
				fmt.Sprint(plan.bornUnder) != fmt.Sprint(orEmpty(tc.bornUnder)) || len(plan.borrowed) != len(tc.borrowed) ||
				fmt.Sprint(plan.borrowed) != fmt.Sprint(tc.borrowed) && len(tc.borrowed) > 0 || fmt.Sprint(plan.lent) != fmt.Sprint(tc.lent) ||
				fmt.Sprint(plan.borrowFrom) != fmt.Sprint(orEmpty(tc.borrowFrom)) {
				t.Errorf("pre %v, helper parents %v, born under %v, borrowed %v, lent %v, borrow from %v; want %v, %v, %v, %v, %v, %v",
					plan.pre, plan.helperParent, plan.bornUnder, plan.borrowed, plan.lent, plan.borrowFrom, tc.pre, tc.helper, tc.bornUnder, tc.borrowed, tc.lent, tc.borrowFrom)
			}
			if fmt.Sprint(plan.helperFrom) != fmt.Sprint(orEmpty(tc.helperFrom)) {
				t.Errorf("helpers cloned from %v, want %v", plan.helperFrom, tc.helperFrom)
			}
			for pid, want := range tc.order {
				if got := plan.order[pid]; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("pid %d clones %v, want %v", pid, got, want)
				}
			}
		})
	}
}

func orEmpty(m map[int]int) map[int]int {
	if m == nil {
		return map[int]int{}
	}
	return m
}
