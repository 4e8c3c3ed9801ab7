//go:build linux && amd64

package crcore_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// outsideNSEnv marks the run of this package's tests inside a new pid
// namespace, where the test's own session and process group are
// outside the namespace: the kernel shows them as 0 there.
const outsideNSEnv = "CRCORE_TEST_OUTSIDE_NS"

// sessionTests are the tests whose trees are in the session and group
// the test was started in, or leave them.
var sessionTests = []string{
	"TestTreeRoundTrip", "TestShellJobRoundTrip", "TestDumpExtraRoots", "TestSiblingSharing",
	"TestOrphansRoundTrip", "TestOrphanOfLiveSession", "TestOrphansOfGoneLeaderUnderTwoParents",
	"TestChildBornBeforeSetsid", "TestOrphanOfUnflaggedParent", "TestOrphanOfMovedLeader",
	"TestLeadersBornInSessionAbove", "TestExitedLeaderMembersUnderLeaders", "TestOrphanSharingFdTable",
	"TestExitedLeaderMemberSharingParentsFdTable", "TestChildSharingDroppedFdTable",
	"TestRestoreInAnotherSessionAndGroup", "TestOrphanOfZombieLeader", "TestRandomShapes",
}

// The session tests again, from a shell whose session and group lie
// outside the tree's pid namespace, as in a container or a CI runner: a
// tree's tasks born before a setsid are then in session 0 as the dump
// sees them. This is where a CI run once found a dump refusing a line
// of leaders, and the planner looping for ever on session 0.
func TestSessionsOutsideThePidNamespace(t *testing.T) {
	runInNewPidNS(t, outsideNSEnv, sessionTests)
}

// wrapPidsEnv marks the run of TestRandomShapes in a pid namespace of
// its own, each tree started a few pids short of pid_max: its pids wrap
// around to low ones, and the restore's spare helpers find no free pid
// above the image's highest.
const wrapPidsEnv = "CRCORE_TEST_WRAP_PIDS"

// The random and the regression trees again, each spanning the end of
// the pid range. A spare helper was once given pid_max itself there,
// and the restore failed (clone3: invalid argument).
func TestShapesAcrossPidMax(t *testing.T) {
	runInNewPidNS(t, wrapPidsEnv, []string{"TestRandomShapes"})
}

// runInNewPidNS runs tests of this package again with env set, in a new
// pid namespace (unshare --pid --fork --mount-proc), from a shell whose
// session and group lie outside it, and fails unless each passed.
func runInNewPidNS(t *testing.T, env string, tests []string) {
	crtest.RequireRoot(t)
	if os.Getenv(env) != "" {
		t.Fatal("run again inside its own run") // the -test.run below leaves it out
	}
	// sh stays the namespace's init, as the shell of a runner would be,
	// and the test binary is its child.
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", `"$0" "$@"; exit $?`,
		os.Args[0], "-test.v", "-test.count=1", "-test.timeout=10m", "-test.run", "^("+strings.Join(tests, "|")+")$")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, name := range tests {
		// Each ran and passed: none is skipped as root.
		if !strings.Contains(string(out), "--- PASS: "+name+" (") {
			t.Errorf("%s did not pass:\n%s", name, out)
		}
	}
}

// nearPidMax makes the next pid of the test's pid namespace one of the
// last few below pid_max, in the run of TestShapesAcrossPidMax; else it
// does nothing.
func nearPidMax(t *testing.T) {
	t.Helper()
	if os.Getenv(wrapPidsEnv) == "" {
		return
	}
	if msg := checkOutsideNS(); msg != "" {
		t.Fatal(msg) // never move the pids of the host's namespace
	}
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	var max int
	if _, err := fmt.Sscan(string(b), &max); err != nil {
		t.Fatalf("pid_max %q: %v", b, err)
	}
	if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(fmt.Sprint(max-6)), 0); err != nil {
		t.Fatal(err)
	}
}

// checkOutsideNS fails the inner run unless its session and group are
// indeed outside its pid namespace.
func checkOutsideNS() string {
	if os.Getenv(outsideNSEnv) == "" && os.Getenv(wrapPidsEnv) == "" {
		return ""
	}
	sid, err := unix.Getsid(0)
	if err != nil {
		return err.Error()
	}
	if pgid := unix.Getpgrp(); sid != 0 || pgid != 0 {
		return "the session and group are not outside the pid namespace"
	}
	return ""
}
