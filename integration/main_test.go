// Package integration drives crhook with real runc, crun and podman over
// a busybox-static rootfs that the tests build: containers are
// checkpointed with `crhook checkpoint` and restored by crhook's
// createRuntime hook into new containers from the same bundle.
//
// The tests need root, runc, crun, busybox-static and gcc (`make deps`
// installs them); they skip, saying why, only when not root or when a
// runtime is not installed. CRHOOK_TEST_BIN names a crhook binary to use
// instead of building ./cmd/crhook.
package integration

import (
	"os"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

func TestMain(m *testing.M) {
	// No child subreaper here: restored containers get their pids in
	// their own pid namespace, so no host pid has to be free again, and
	// orphaned inits and shims are best left to PID 1.
	code := m.Run()
	cleanupBuilt()
	crtest.Cleanup()
	os.Exit(code)
}
