//go:build linux && amd64

package crcore_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

// Seccomp filters come back in every thread, and the restore survives a
// filter that kills the process on munmap (the restore's own last
// syscall). Threads that shared filters share them again: a later TSYNC
// succeeds and reaches both; a thread with a filter of its own keeps it.
func TestSeccompRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	for _, mode := range []string{"sync", "split"} {
		t.Run(mode, func(t *testing.T) {
			p := startKind(t, "seccomp", mode)
			dir := dumpKind(t, p.Pid, false)
			pid := restoreKind(t, dir)
			goAndWait(t, p, pid, 1)
			before, after := tagged(p.Lines(), "before"), tagged(run(p.Lines(), 1), "after")
			slices.Sort(before)
			slices.Sort(after)
			if len(before) != 2 || !slices.Equal(before, after) {
				t.Errorf("seccomp state after restore differs:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
			want := []string{"before main mode 2 filters 2 getppid 1 getsid 0 getpgid 0"}
			if mode == "sync" {
				want = append(want, "before worker mode 2 filters 2 getppid 1 getsid 0 getpgid 0", "tsync 0",
					"synced main mode 2 filters 3 getppid 1 getsid 0 getpgid 13")
			} else {
				want = append(want, "before worker mode 2 filters 3 getppid 1 getsid 22 getpgid 0")
			}
			for _, w := range want {
				if !slices.Contains(p.Lines(), w) {
					t.Errorf("no %q in the log:\n%s", w, strings.Join(p.Lines(), "\n"))
				}
			}
		})
	}
}
