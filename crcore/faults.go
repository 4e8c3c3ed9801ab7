//go:build linux && amd64

package crcore

import (
	"os"
	"strconv"
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
//	dump:in-syscall      an injected syscall at its entry stop (the task,
//	                     let go, runs it and the trampoline)
//	dump:after-memory    memory of every task written
//	dump:before-checksums every image written but the checksums
//	dump:in-batch        a task let go to run a crash-safe batch
//	dump:at-batch-stop   a crash-safe batch collected at its stop signal,
//	                     the task's mask and registers not yet put back
//	restore:after-husk   the root husk exists
//	restore:after-clone  a child task was cloned
//	restore:after-memory a task's memory is in place
//	restore:in-parent-fill a task's pages being copied from its parent's image
//	checkpoint:after-freeze  (crhook checkpoint) the container's cgroup is frozen
//	                         (its thaw guard must thaw it)
//
// A point may end in @N to fire the N-th time it is reached, not the
// first (dump:at-batch-stop@3).
//
// It is for tests only; production never sets it.
const FaultEnv = "CRHOOK_FAULT"

// faults maps each point to the number of times it is still to be
// passed before it fires (0: the next time).
var faults = sync.OnceValue(func() map[string]int {
	m := map[string]int{}
	for _, p := range strings.Split(os.Getenv(FaultEnv), ",") {
		p = strings.TrimSpace(p)
		n := 1
		if at := strings.LastIndex(p, "@"); at > 0 {
			if v, err := strconv.Atoi(p[at+1:]); err == nil && v > 0 {
				p, n = p[:at], v
			}
		}
		if p != "" {
			m[p] = n - 1
		}
	}
	return m
})

var faultMu sync.Mutex

// FaultPoint kills the calling process with SIGKILL when CRHOOK_FAULT
// names point. Exported for the commands' own points.
func FaultPoint(point string) { faultPoint(point) }

func faultPoint(point string) {
	if len(faults()) == 0 {
		return
	}
	faultMu.Lock()
	left, ok := faults()[point]
	if ok && left > 0 {
		faults()[point] = left - 1
	}
	faultMu.Unlock()
	if !ok || left > 0 {
		return
	}
	_ = unix.Kill(os.Getpid(), unix.SIGKILL)
	select {} // the signal is on its way
}
