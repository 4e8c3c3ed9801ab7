//go:build linux && amd64

package crcore_test

import (
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
	crtest.RequireRoot(t)
	if os.Getenv(outsideNSEnv) != "" {
		t.Fatal("run again inside its own run") // the -test.run below leaves it out
	}
	// sh stays the namespace's init, as the shell of a runner would be,
	// and the test binary is its child.
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", `"$0" "$@"; exit $?`,
		os.Args[0], "-test.v", "-test.count=1", "-test.timeout=10m", "-test.run", "^("+strings.Join(sessionTests, "|")+")$")
	cmd.Env = append(os.Environ(), outsideNSEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, name := range sessionTests {
		// Each ran and passed: none is skipped as root.
		if !strings.Contains(string(out), "--- PASS: "+name+" (") {
			t.Errorf("%s did not pass:\n%s", name, out)
		}
	}
}

// checkOutsideNS fails the inner run unless its session and group are
// indeed outside its pid namespace.
func checkOutsideNS() string {
	if os.Getenv(outsideNSEnv) == "" {
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
