//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// shapeScript returns a random script for shapefuzz.c: up to ten
// processes forked, cloned as siblings or sharing the fd table or fs
// info, moving to sessions and groups of their own or joining groups,
// exiting (their orphans going up to a subreaper), reaping, toggling
// the subreaper flag, unsharing their fd tables or fs info, changing the
// tables (opening files and pipes) and the fs info (cwd and umask), and
// starting threads. The root is always a subreaper, so that no orphan
// leaves the tree, and leads a session of its own or stays in the
// test's.
//
// plain trees share nothing: their processes are forked or cloned as
// siblings only, and unshare nothing.
func shapeScript(rng *rand.Rand, plain bool) string {
	ops := []string{"U0,1"}
	if rng.Intn(2) == 0 {
		ops = append(ops, "S0")
	}
	alive, next := []int{0}, 1
	threaded := map[int]bool{} // unsharing there is refused on purpose
	for len(ops) < 28 {
		a := alive[rng.Intn(len(alive))]
		switch k := rng.Intn(13); {
		case k < 4 && next < 10:
			kind := "FFCK"[rng.Intn(4)]
			if a != 0 && rng.Intn(4) == 0 {
				kind = "PH"[rng.Intn(2)] // a sibling of the root would leave the tree
			}
			if plain {
				kind = map[byte]byte{'F': 'F', 'C': 'F', 'K': 'F', 'P': 'P', 'H': 'P'}[kind]
			}
			ops = append(ops, fmt.Sprintf("%c%d,%d", kind, a, next))
			alive = append(alive, next)
			next++
		case k == 4:
			ops = append(ops, fmt.Sprintf("S%d", a))
		case k == 5:
			ops = append(ops, fmt.Sprintf("G%d", a))
		case k == 6:
			ops = append(ops, fmt.Sprintf("J%d,%d", a, alive[rng.Intn(len(alive))]))
		case k == 7 && a != 0:
			ops = append(ops, fmt.Sprintf("X%d", a))
			for i, id := range alive {
				if id == a {
					alive = append(alive[:i], alive[i+1:]...)
					break
				}
			}
		case k == 8:
			ops = append(ops, fmt.Sprintf("R%d", a))
		case k == 9 && a != 0:
			ops = append(ops, fmt.Sprintf("U%d,%d", a, rng.Intn(2)))
		case k == 10 && !threaded[a] && !plain:
			ops = append(ops, fmt.Sprintf("%c%d", "DE"[rng.Intn(2)], a))
		case k == 11:
			op := "OTQ"[rng.Intn(3)]
			threaded[a] = threaded[a] || op == 'T'
			ops = append(ops, fmt.Sprintf("%c%d", op, a))
		case k == 12:
			ops = append(ops, fmt.Sprintf("W%d,%d", a, rng.Intn(4)))
		}
	}
	return strings.Join(ops, " ")
}

// fsInfos lists, for each live process of ids, its cwd and umask.
func fsInfos(t *testing.T, ids map[int]string) string {
	t.Helper()
	var out []string
	for _, pid := range livePids(ids) {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		umask := "?"
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "Umask:"); ok {
				umask = strings.TrimSpace(v)
			}
		}
		out = append(out, fmt.Sprintf("%d %s %s", pid, cwd, umask))
	}
	return strings.Join(out, ", ")
}

// livePids returns, sorted, the pids of ids that are not zombies.
func livePids(ids map[int]string) []int {
	var pids []int
	for pid := range ids {
		if st, err := crtest.State(pid); err == nil && st != 'Z' {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// treeSharing lists, in the tree's pid namespace's pids, the pairs of
// the live processes of ids that share an fd table or fs info (kcmp).
func treeSharing(t *testing.T, ids map[int]string) string {
	t.Helper()
	pids := livePids(ids)
	var out []string
	for i, a := range pids {
		for _, b := range pids[i+1:] {
			for _, k := range []struct {
				name string
				typ  uintptr
			}{{"files", 2}, {"fs", 3}} {
				r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), k.typ, 0, 0, 0)
				if errno != 0 {
					t.Fatalf("kcmp %d %d: %v", a, b, errno)
				}
				if r == 0 {
					out = append(out, fmt.Sprintf("%d~%d %s", a, b, k.name))
				}
			}
		}
	}
	return strings.Join(out, ", ")
}

// fdTables lists, for each live process of ids, its fds from 3 up and
// what they open (pipes and sockets by kind: their inode numbers are
// new after a restore; fds 0-2 lead outside, to the restorer's after).
func fdTables(t *testing.T, ids map[int]string) string {
	t.Helper()
	pids := livePids(ids)
	var out []string
	for _, pid := range pids {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		var fds []string
		for _, e := range ents {
			fd, _ := strconv.Atoi(e.Name())
			if fd < 3 {
				continue
			}
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
			if err != nil {
				t.Fatal(err)
			}
			for _, kind := range []string{"pipe:", "socket:"} {
				if strings.HasPrefix(target, kind) {
					target = kind
				}
			}
			fds = append(fds, fmt.Sprintf("%03d=%s", fd, target))
		}
		sort.Strings(fds)
		out = append(out, fmt.Sprintf("%d{%s}", pid, strings.Join(fds, " ")))
	}
	return strings.Join(out, " ")
}

// idsDiff lists the processes whose ids differ between before and after.
func idsDiff(before, after map[int]string) string {
	var out []string
	for pid, b := range before {
		if a := after[pid]; a != b {
			out = append(out, fmt.Sprintf("%d: %q, before %q", pid, a, b))
		}
	}
	for pid, a := range after {
		if _, ok := before[pid]; !ok {
			out = append(out, fmt.Sprintf("%d: %q, new", pid, a))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// counters reads shapefuzz's counters through the root's memory.
func counters(t *testing.T, root int, addr uint64) []uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", root))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 8*32)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		t.Fatalf("read the counters: %v", err)
	}
	out := make([]uint64, 32)
	for i := range out {
		for k := 7; k >= 0; k-- {
			out[i] = out[i]<<8 | uint64(b[8*i+k])
		}
	}
	return out
}

// Random trees, each made by real processes from a script (shapefuzz.c):
// every one is either refused at dump with ErrNotSupported, and then
// goes on untouched, or restored with every pid, parent, group, session,
// zombie and fd table or fs info sharing as dumped, every live process
// going on counting. The seeds are fixed, so that a failure repeats;
// CRHOOK_SHAPE_SEEDS=N runs N more, from the time, and
// CRHOOK_SHAPE_SCRIPT runs that one script alone. CRHOOK_SHAPE_PLAIN=1
// makes the extra trees share nothing: sessions, groups, zombies and
// orphans only.
func TestRandomShapes(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "shapefuzz", false)
	seeds := make([]int64, 0, 40)
	for s := int64(1); s <= 24; s++ {
		seeds = append(seeds, s)
	}
	var more int
	fmt.Sscan(os.Getenv("CRHOOK_SHAPE_SEEDS"), &more)
	for i := range more {
		seeds = append(seeds, time.Now().UnixNano()+int64(i))
	}
	// Scripts that once failed or were refused, as negative seeds:
	// they must restore.
	scripts := map[int64]string{}
	for i, sc := range []string{
		// a zombie in another group than its parent's
		"U0,1 G0 F0,1 F1,2 D2 F2,3 G2 U1,1 U1,1 G3 F3,4 F0,5 F2,6 P3,7 F6,8 P6,9 R0 S9 D8 S1 U5,0 R0 J5,9 X9 J8,1 D5 X6 G2",
		// tasks left in the session and group the root left
		"U0,1 D0 F0,1 O1 R1 F1,2 S0 J0,1 S1 X2 F0,3 C3,4 R4 J0,0 G0 J1,0 U4,1 X3 F1,5 D5 J4,5 R5 O1 F4,6 R6 F5,7 J0,4 U7,0",
		// a group whose leader has joined another
		"U0,1 S0 S0 G0 S0 F0,1 O0 J0,1 S1 D0 F1,2 R0 G0 F2,3 G2 D2 X3 P1,4 F2,5 U1,1 D5 P2,6 F5,7 R6 O7 J2,4 C2,8 R6",
		// ... that has joined a group from outside
		"U0,1 C0,1 G1 P1,2 F1,3 J1,0 D2 R1 P3,4 C3,5 F4,6 J4,0 D5 J3,1 S0 R5 F2,7 J5,7 P7,8 D1 G2 D1 J0,6 G7 X4 P7,9 O3 D9",
		// a leader sharing fs info with its parent and an fd table
		// with a sibling it cloned before its setsid
		"U0,1 S0 F0,1 F1,2 K1,3 H3,4 K2,5 S0 K1,6 K6,7 O5 R4 G6 G1 R2 S3 J0,6 S6 U3,1 X7 U6,1 X2 J1,1 O4 U5,0 O6 H6,8 G1",
		"U0,1 O0 F0,1 K0,2 S2 O2 R1 P2,3 U2,1 G1 K1,4 E0 K2,5 C1,6 J3,5 S2 X2 F1,7 H7,8 H4,9 G0 S4 J4,8 D5 J8,3 R0 G1 D3",
		// a leader with children born before its setsid and a
		// sibling cloned in its session after
		"U0,1 S0 G0 C0,1 R1 S0 R0 S0 S1 G1 K0,2 G0 J1,0 C2,3 G3 G0 U1,1 S0 R0 K0,4 K2,5 S2 P2,6 S1 O4 R2 H4,7 P7,8",
		// ... sharing an fd table with a sibling it is cloned from
		"U0,1 R0 G0 F0,1 F1,2 G1 H1,3 F3,4 O3 S0 E1 F0,5 X2 C0,6 S3 S3 X4 X6 C3,7 K5,8 D5 J8,5 J7,5 U7,1 P3,9 U1,1 R5 J0,7",
		// ... whose children share a table with those born early
		"U0,1 S0 S0 J0,0 E0 G0 C0,1 S0 H1,2 F2,3 F0,4 S2 H3,5 S2 H3,6 R2 S5 G3 J0,5 U1,1 U3,0 H2,7 F0,8 C8,9 R3 U5,0 R9 X9",
		// an orphan sharing its fd table with its own child only
		"U0,1 F0,1 F1,2 S2 F2,3 F3,4 C4,5 X3",
		// a child sharing its grandparent's fs info, its parent
		// having dropped it, and a table with its own child
		"U0,1 S0 O0 S0 E0 O0 C0,1 U1,1 J0,0 K0,2 X1 F2,3 S3 K2,4 U3,1 X3 C4,5 E2 S5 K2,6 F6,7 O7 R7 J0,0 J4,2 U6,0 G4 G7",
		// ... and that leads a session, born in its parent's
		"U0,1 S0 J0,0 S0 K0,1 K1,2 C2,3 J1,1 C0,4 D2 F1,5 K5,6 O5 K4,7 E1 S4 R7 J0,1 S4 X3 S0 S2 E6 X7 J6,4 R6 G2 G5",
		// a member of a zombie leader's session sharing the fs info
		// the leader shared with its parent
		"U0,1 S0 F0,1 U1,1 R0 K0,2 C0,3 O2 G1 F2,4 X4 F0,5 G0 S2 R5 F2,6 R3 C0,7 G7 G3 K2,8 X2 X5 O7 X7 S1 H1,9 G8",
		// an orphan of a zombie leader that went up past its parent
		"U0,1 F0,1 U1,1 F1,2 F2,3 S3 F3,4 F4,5 X4 U1,0 X2 X3",
		// spare helpers for orphans, in trees with threads whose tids
		// are above every pid
		"U0,1 J0,0 J0,0 R0 G0 G0 G0 F0,1 F1,2 U1,1 J1,0 P2,3 R3 F3,4 S0 O3 K4,5 T3 J0,1 U5,0 E2 K5,6 G2 S4 K1,7 F4,8 T5 X4",
		"U0,1 S0 T0 R0 C0,1 F1,2 H1,3 K2,4 R0 F2,5 O5 F3,6 C5,7 H5,8 J7,3 S5 K0,9 J5,0 X3 U6,1 D4 X1 D5 R2 S2 X9 T6 U6,1",
		// two tasks that left their groups, one for the other's
		"U0,1 C0,1 C0,2 R0 F1,3 G2 K2,4 X4 G0 K2,5 E0 H1,6 C0,7 O5 U5,0 F2,8 X3 R2 G1 J2,0 S8 K5,9 G7 U1,1 S2 J8,1 J0,8 J0,6",
		// the root in a group of the tree whose leader has exited
		"U0,1 O0 R0 J0,0 F0,1 X1 O0 F0,2 G0 G2 J0,2 J2,0 X2 D0 O0 R0 F0,3 G3 F3,4 U3,1 F0,5 S4 J5,0 O5 K4,6 F4,7 E3 F3,8",
		// a leader born in its parent's session sharing an fd table
		// with a sibling that shares its fs info with the parent
		"U0,1 S0 K0,1 G1 U1,1 H1,2 E2 T1 C0,3 F2,4 K4,5 S0 R3 S2 F0,6 F5,7 D4 X4 G7 G7 S1 G7 X5 X3 G1 P6,8 P7,9 O2",
		// an orphan in a group whose leader has exited: the group's
		// helper was left a zombie under the orphan's parent
		"U0,1 S0 F0,1 D0 K1,2 E1 K0,3 F0,4 C2,5 T2 F3,6 C3,7 J3,7 R1 U1,0 J7,6 G5 R6 C5,8 X5 F8,9 S4 J6,2 X9 J2,4 R2 J3,4 G3",
		// two group leaders each in the other's group, which keeps
		// other members
		"U0,1 K0,1 F0,2 R2 G0 X1 S0 X2 F0,3 R0 R0 G3 D3 R3 R3 F3,4 J3,0 J4,4 F0,5 H3,6 J0,4 S5 S3 D4 D3 X6 X5 F0,7",
		"U0,1 G0 S0 T0 S0 J0,0 F0,1 G1 E1 F0,2 D1 K2,3 G1 K3,4 J0,1 U3,0 P1,5 H3,6 U6,0 F6,7 U1,0 J4,6 T3 J3,5 J1,2 U5,1 R6 S7",
		// a leader that lent its children, born before and after its
		// setsid, an fd table it dropped since
		"U0,1 D0 G0 R0 R0 G0 S0 T0 C0,1 S1 S1 R0 X1 R0 F0,2 F0,3 K0,4 C3,5 R2 R3 S3 D4 C3,6 J0,4 F3,7 D3 K7,8 J3,4",
		// a leader born in its sibling leader's session, which shares
		// its parent's fd table
		"U0,1 S0 F0,1 G1 K1,2 G0 S1 C1,3 S3 F0,4 U1,0 G2 G2 K4,5 S2 R5 J1,4 R3 P3,6 F6,7 P7,8 C0,9 R8 J3,0 J3,5 R8 E3 S6",
		// an orphan of a zombie leader sharing the leader's parent's
		// fs info
		"U0,1 S0 F0,1 F0,2 O1 C1,3 C1,4 K2,5 S5 C0,6 K5,7 J0,1 K7,8 S6 J8,5 C6,9 J1,4 R3 G5 S0 T0 S4 T0 O9 S0 G1 X5 E8",
		// an early child of a leader (born before its setsid, with a
		// sibling in the leader's session) whose own child borrows the
		// leader's fd table: the borrower was never created
		"U0,1 F0,1 R1 C1,2 C2,3 C0,4 F0,5 X4 O0 E1 D2 S1 G2 R0 J3,3 P1,6 R0 S0 E1 E0 U6,1 U6,0 G3 C5,7 K0,8 G0 U8,1 H6,9",
		// a task that dropped an fd table it had from a sibling, after
		// cloning a child sharing it
		"U0,1 S0 R0 F0,1 R1 O1 O0 J0,1 P1,2 R2 K2,3 X3 O2 J2,2 O2 G1 G0 S2 C2,4 R4 H2,5 C5,6 X4 R2 J2,6 G1 S2 D5",
		"U0,1 C0,1 C0,2 F2,3 R3 F0,4 R2 C1,5 S2 D1 U4,0 C4,6 G6 F1,7 C6,8 O8 J1,0 R3 X8 F7,9 G2 X9 O5 R6 J5,4 O6 D0 T4",
		// the same, with fds of their own in the parent and in the
		// task that dropped the table
		"U0,1 K0,1 O1 H1,2 C2,3 D2 O2 O2 O1 O0 O0",
		// a borrowed leader with a sibling in its session, cloned
		// from it: both share their grandparent's fd table
		"U0,1 S0 C0,1 G0 K0,2 C1,3 J2,1 S3 O2 R0 X2 K0,4 S1 F4,5 H3,6 J1,5 S1 U3,1 S5 D1 F3,7 U5,1 G3 G0 F6,8 F4,9 J0,8 U9,1",
		"U0,1 S0 R0 J0,0 E0 C0,1 J0,1 X1 G0 E0 C0,2 C2,3 S2 S3 D2 U3,1 K0,4 F3,5 R4 U2,0 H5,6 R6 U5,0 X4 E2 J6,5 G3 H3,7",
		// an orphan of a zombie leader sharing its fd table with its child
		"U0,1 K0,1 G1 X1 F0,2 J2,2 F2,3 O3 X3 D2 J0,0 F2,4 G2 U4,1 S0 S0 S4 C0,5 G5 J4,5 F0,6 F5,7 K4,8 C8,9 J4,0 X4 X7 S5",
		// a restore's spare helper got pid_max as its pid when the
		// tree's pids wrapped around (TestShapesAcrossPidMax)
		"U0,1 J0,0 F0,1 S1 J1,0 J1,0 E1 H1,2 F2,3 F0,4 S2 F0,5 F2,6 H3,7 E1 R5 O1 G4 K1,8 S3 J7,3 R4 X1 O3 G3 F5,9 X9 R0",
		// a leader born in the root's session borrowing a table from
		// a sibling member of it: cloned after that sibling
		"U0,1 K0,1 G0 X1 G0 R0 S0 O0 F0,2 G0 G0 F2,3 U2,0 G0 U2,0 G3 G0 R3 K2,4 R3 H2,5 C5,6 D5 S6 O0 F5,7 J3,4 S5",
		// a borrower sharing its table with a sibling cloned from it
		"U0,1 K0,1 S1 K1,2 H2,3 E1 K1,4 W4,2 W2,3 W3,0",
		// a leader that lent its child of its own session the fs info
		// it had from its parent, after cloning one in the parent's
		"U0,1 W0,1 K0,1 F1,2 S1 K1,3 E1 W1,2 W3,3 W2,0",
		// ... two levels down
		"U0,1 W0,2 K0,1 K1,2 K2,3 E1 E2 W3,1 W1,2 W2,3",
		"U0,1 K0,1 G1 S0 C1,2 X2 G1 K1,3 D0 O0 C1,4 F3,5 G3 K3,6 H1,7 E1 G0 E3 T0 R1 P7,8 G8 U3,1 H6,9 U5,1 S1 G3 S4",
		// tasks that lent their children tables they held from their
		// parents (a leader, after cloning a child in its parent's
		// session), over one level and two
		"U0,1 O0 C0,1 F1,2 S1 C1,3 D1 Q1 O3",
		"U0,1 O0 C0,1 C1,2 C2,3 D1 D2 Q1 Q2 O3",
		"U0,1 W0,0 D0 F0,1 R1 C0,2 F2,3 R0 Q2 G0 F2,4 S2 X3 X4 W1,3 X1 C2,5 E2 E2 D2 G5 U2,1 C0,6 F6,7 D6 J0,0 G0 J7,7",
		// a leader that lent a table it made to a child born before
		// its setsid and a sibling cloned after
		"U0,1 O0 F0,1 C1,2 S1 H1,3 D1 Q1",
		"U0,1 S0 K0,1 K0,2 G1 C2,3 J3,3 U1,0 E2 Q2 U2,1 T3 S2 H2,4 P4,5 S1 W1,2 E1 D2 K5,6 G2 J5,1 K0,7 G3 C6,8 H1,9 W6,1 X8",
		// a leader that lent a sibling in its session its parent's
		// fd table
		"U0,1 O0 C0,1 S1 H1,2 O1 D1 Q1 O1 O2",
		"U0,1 T0 T0 C0,1 F1,2 D2 S2 S1 K2,3 F1,4 J1,3 J1,2 G0 X4 J1,3 K1,5 F3,6 T5 C3,7 S7 U7,0 F3,8 H1,9 U2,0 O7 J2,2 S8 D1",
		// a member of a session whose leader has exited, sharing a
		// table with a task outside it: the leader held it
		"U0,1 S0 F0,1 C1,2 S1 C1,3 O1 O2 X1 R0",
		"U0,1 S0 F0,1 C1,2 F1,3 J1,0 C1,4 S1 Q3 R2 C1,5 X3 C0,6 X4 C2,7 J1,1 J5,6 R1 S0 X1 W7,1 O5 C0,8 W2,1 R0 D7 X8 J6,6",
		// a lender's child marked borrowed too: the lender unshared
		// what it lends before cloning its other children (restored,
		// sharing less than the images said)
		"U0,1 W0,0 E0 E0 K0,1 K1,2 R1 K1,3 K2,4 G1 H2,5 C0,6 P6,7 S4 X4 K5,8 U1,1 C3,9 E1 R9 D0 E5 W6,3 U6,0 G3 U8,0 W9,3 R2",
		// a leader cloned from a member of its sibling leader's
		// session, that leader sharing a table with a sibling outside
		"U0,1 S0 F0,1 H1,2 S2 P2,3 H3,4 S4 O3 O4",
		"U0,1 S0 J0,0 R0 E0 F0,1 G0 W0,0 K0,2 G2 W0,3 F1,3 S2 U2,1 F3,4 H1,5 S5 P5,6 H6,7 J2,5 S1 S7 S5 W2,0 X3 G0 S7 T1",
		// an orphan of a zombie leader born under its member's parent,
		// sharing that parent's fs info
		"U0,1 K0,2 S2 K2,3 K3,4 X2 S3 W4,2",
		"U0,1 K0,1 G0 K0,2 S2 U2,1 J1,2 R1 Q0 G1 Q0 W0,1 S2 K2,3 K3,4 X2 W3,3 U4,0 U4,1 F0,5 F4,6 F0,7 P5,8 U6,0 S7 C7,9 R9 S3",
		// a borrowed leader with a sibling in its session that
		// borrows nothing: cloned from it
		"U0,1 K0,1 K1,2 S2 P2,3 E1 W3,2",
		"U0,1 K0,1 S1 K0,2 J2,1 F0,3 W0,3 K1,4 S4 F0,5 J2,4 S1 F1,6 P4,7 G1 K1,8 J1,4 C1,9 D4 G4 Q6 S3 U1,1 E1 S0 J3,7 T0 W0,2",
		// a borrowed leader with early children: they were never
		// created
		"U0,1 C0,1 U1,1 W0,0 R1 O1 S1 J1,0 C1,2 G0 Q1 Q0 R2 H2,3 R2 J3,3 Q2 T3 E1 G1 F1,4 K3,5 X5 S3 S2 P3,6 D1 K3,7",
		// a leader born in a sibling leader's session, that leader
		// born in their parent's
		"U0,1 S0 F0,1 F1,2 S1 P1,3 F3,4 S3",
		"U0,1 S0 F0,1 Q1 F1,2 F0,3 F3,4 T4 W2,1 J4,0 S4 F3,5 S3 R4 U2,0 F3,6 F4,7 P3,8 R4 F8,9 G6 X7 U1,0 S2 T1 G2 S8 S1",
		// a leader born in a session, an orphan of its leader (a
		// zombie) or of a task below it, that left it after cloning a
		// child there
		"U0,1 F0,1 F1,2 S2 F2,3 X2 F3,4 S3",
		"U0,1 F0,1 F1,2 S2 F2,5 F5,3 X5 F3,4 S3",
		"U0,1 S0 F0,1 F1,2 J1,1 T2 S2 S1 G2 W1,0 C0,3 S3 U3,1 W3,1 J0,3 C2,4 W1,1 W1,3 G2 S2 K4,5 X2 W4,0 O1 S4 U3,0 R5 U1,0",
		// a leader sharing its parent's fs info and a table with
		// siblings in its parent's session and in its own: it stays
		// in its parent's until they are cloned from it
		"U0,1 S0 E0 R0 C0,1 O0 R1 K0,2 X1 H2,3 O2 K0,4 D0 C0,5 S2 J0,2 H2,6 R5 K0,7 J5,0 H7,8 J7,5 U7,0 K3,9 R7 X8 E6 J9,4",
	} {
		seeds = append(seeds, int64(-1-i))
		scripts[int64(-1-i)] = sc
	}
	if one := os.Getenv("CRHOOK_SHAPE_SCRIPT"); one != "" {
		seeds, scripts[0] = []int64{0}, one
	}
	restored, refused := 0, map[string]int{}
	for _, seed := range seeds {
		script, ok := scripts[seed]
		if !ok {
			script = shapeScript(rand.New(rand.NewSource(seed)), seed > 24 && os.Getenv("CRHOOK_SHAPE_PLAIN") != "")
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			nearPidMax(t)
			p := crtest.Start(t, bin, script)
			var all []int
			t.Cleanup(func() {
				all = append(all, p.Pid)
				crtest.KillAll(t, append(all, crtest.Descendants(p.Pid)...))
			})
			p.WaitLine(t, `^done$`, 10*time.Second)
			var addr uint64
			fmt.Sscanf(p.WaitLine(t, `^page (0x[0-9a-f]+)$`, time.Second)[1], "0x%x", &addr)
			var live []int
			for _, l := range p.Lines() {
				var id, pid int
				if n, _ := fmt.Sscanf(l, "pid %d %d", &id, &pid); n == 2 {
					live = append(live, id)
				}
			}
			all = append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
			before, share := nsIDs(t, p.Pid), ""
			share = treeSharing(t, before)
			fds, fsi := fdTables(t, before), fsInfos(t, before)
			goesOn := func(when string) {
				t.Helper()
				c0 := counters(t, p.Pid, addr)
				deadline := time.Now().Add(5 * time.Second)
				for {
					c1 := counters(t, p.Pid, addr)
					stuck := []int{}
					for _, id := range live {
						if c1[id] <= c0[id] {
							stuck = append(stuck, id)
						}
					}
					if len(stuck) == 0 {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s, processes %v (of %v) do not count on", when, stuck, live)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			dir := filepath.Join(t.TempDir(), "img")
			_, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir})
			if errors.Is(err, crcore.ErrNotSupported) {
				why := err.Error()
				if i := strings.Index(why, ": "); i >= 0 {
					why = why[i+2:]
				}
				refused[why]++
				t.Logf("script %q: refused: %v", script, err)
				if seed < 0 {
					t.Errorf("this tree restored before, and is refused now")
				}
				if after := nsIDs(t, p.Pid); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("after the refused dump (pid: ppid pgid sid):\n%v\nbefore:\n%v", after, before)
				}
				goesOn("after the refused dump")
				return
			}
			if err != nil {
				t.Fatalf("script %q: dump: %v", script, err)
			}
			crtest.ReapGone(t, all, 5*time.Second)
			rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
			if err != nil {
				t.Fatalf("script %q: restore: %v\ndumped (pid: ppid pgid sid): %v", script, err, before)
			}
			t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })
			if after := nsIDs(t, p.Pid); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("script %q: after restore (pid: ppid pgid sid) %s\nall before: %v", script, idsDiff(before, after), before)
			}
			if got := treeSharing(t, before); got != share {
				t.Errorf("script %q: after restore shared %q, before %q\nids (pid: ppid pgid sid): %v", script, got, share, before)
			}
			if got := fdTables(t, before); got != fds {
				t.Errorf("script %q: after restore fds %s\nbefore %s", script, got, fds)
			}
			if got := fsInfos(t, before); got != fsi {
				t.Errorf("script %q: after restore cwd and umask %s\nbefore %s", script, got, fsi)
			}
			goesOn("after restore")
			restored++
		})
	}
	t.Logf("%d of %d trees restored; refused: %v", restored, len(seeds), refused)
	if restored == 0 {
		t.Errorf("no tree restored")
	}
}

// startScript starts shapefuzz on script and waits until its tree is
// made; it returns it with the pids of all its processes, killed when t
// ends.
func startScript(t *testing.T, script string) (*crtest.Proc, []int) {
	t.Helper()
	p := crtest.Start(t, crtest.BuildC(t, "shapefuzz", false), script)
	p.WaitLine(t, `^done$`, 10*time.Second)
	all := append([]int{p.Pid}, crtest.Descendants(p.Pid)...)
	t.Cleanup(func() { crtest.KillAll(t, all) })
	return p, all
}

// A restore whose plan leaves out what a task lends builds a tree that
// shares less than its images say: the restore finds it (kcmp) and
// fails, naming the tasks, and leaves no process of the tree behind.
func TestRestoreRefusesWrongSharing(t *testing.T) {
	crtest.RequireRoot(t)
	p, all := startScript(t, "U0,1 W0,1 K0,1 F1,2 S1 K1,3 E1")
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatal(err)
	}
	crtest.ReapGone(t, all, 5*time.Second)
	defer crcore.SetNoLending()()
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err == nil {
		crtest.KillAndReap(rr.Pid)
		t.Fatal("restored a tree sharing less than its images say")
	}
	if !strings.Contains(err.Error(), "do not share fs info after the restore") {
		t.Errorf("restore: %v, want it to name the fs info not shared", err)
	}
	checkNoStray(t, all)
}

// A thread with an fd table and fs info of its own (it called unshare)
// is refused at dump, saying so, and its process goes on: the images hold
// one of each for a process.
func TestThreadWithOwnFdTableRefused(t *testing.T) {
	crtest.RequireRoot(t)
	p, _ := startScript(t, "U0,1 F0,1 Y1")
	var addr uint64
	fmt.Sscanf(p.WaitLine(t, `^page (0x[0-9a-f]+)$`, time.Second)[1], "0x%x", &addr)
	dir := filepath.Join(t.TempDir(), "img")
	_, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir})
	if !errors.Is(err, crcore.ErrNotSupported) || !strings.Contains(err.Error(), "of its own") {
		t.Fatalf("dump: %v, want a refusal naming the thread's own fd table", err)
	}
	c0 := counters(t, p.Pid, addr)
	time.Sleep(100 * time.Millisecond)
	if c1 := counters(t, p.Pid, addr); c1[0] <= c0[0] || c1[1] <= c0[1] {
		t.Errorf("after the refused dump the processes do not count on: %v, then %v", c0[:2], c1[:2])
	}
}
