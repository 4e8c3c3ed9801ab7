//go:build linux && amd64

package crcore

import (
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// FaultEnv names the test hook that makes crhook kill itself at a named
// point of a dump or restore, to prove that a crhook dying there leaves
// no damage behind: CRHOOK_FAULT=dump:after-seize makes the process
// SIGKILL itself right after it has seized the tree. Several points may be
// given, comma-separated. Points:
//
//	dump:after-seize     every task seized and stopped
//	dump:after-inject    scratch area mapped in the first task, gadgets in place
//	dump:in-inject       in the middle of an injected syscall's setup
//	dump:after-memory    memory of every task written
//	dump:before-checksums every image written but the checksums
//	restore:after-husk   the root husk exists
//	restore:after-clone  a child task was cloned
//	restore:after-memory a task's memory is in place
//	checkpoint:after-freeze  (crhook checkpoint) the container's cgroup is frozen
//	                         (its thaw guard must thaw it)
//
// It is for tests only; production never sets it.
const FaultEnv = "CRHOOK_FAULT"

var faults = sync.OnceValue(func() map[string]bool {
	m := map[string]bool{}
	for _, p := range strings.Split(os.Getenv(FaultEnv), ",") {
		if p = strings.TrimSpace(p); p != "" {
			m[p] = true
		}
	}
	return m
})

// FaultPoint kills the calling process with SIGKILL when CRHOOK_FAULT
// names point. Exported for the commands' own points.
func FaultPoint(point string) { faultPoint(point) }

func faultPoint(point string) {
	if len(faults()) == 0 || !faults()[point] {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {} // the signal is on its way
}
