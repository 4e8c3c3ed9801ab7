//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// A child that shares its parent's address space without being its
// thread (clone with CLONE_VM, or vfork before exec) makes the dump fail
// at once, with an error that says so and matches ErrNotSupported; the
// tree runs on untraced. (A vfork parent sleeps where PTRACE_INTERRUPT
// cannot reach it: the dump must see the child before stopping it.)
func TestSharedVMRefused(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "sharevm", false)
	for _, mode := range []string{"clonevm", "vfork"} {
		t.Run(mode, func(t *testing.T) {
			p := crtest.Start(t, bin, mode)
			child, _ := strconv.Atoi(p.WaitLine(t, `^child (\d+)$`, 5*time.Second)[1])
			t.Cleanup(func() {
				unix.Kill(child, unix.SIGKILL)
				crtest.KillAndReap(p.Pid)
				crtest.ReapGone(t, []int{p.Pid, child}, 5*time.Second) // the child, our orphan
			})
			p.WaitLine(t, `^count 3$`, 5*time.Second)
			imgs := filepath.Join(t.TempDir(), "img")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := crcore.Dump(ctx, crcore.DumpOptions{Pid: p.Pid, ImageDir: imgs})
			if err == nil {
				t.Fatal("dump succeeded")
			}
			if !errors.Is(err, crcore.ErrNotSupported) {
				t.Errorf("dump error %q does not match ErrNotSupported", err)
			}
			for _, w := range []string{fmt.Sprintf("pid %d", child), "address space", "CLONE_VM", "vfork"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("dump error %q does not say %q", err, w)
				}
			}
			if _, err := os.Stat(imgs); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed dump left %s behind (%v)", imgs, err)
			}
			n := len(p.Lines())
			deadline := time.Now().Add(5 * time.Second)
			for linesWith(p.Lines()[n:], "count ") < 3 {
				if time.Now().After(deadline) {
					t.Fatal("the child does not count on after the failed dump")
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, pid := range []int{p.Pid, child} {
				status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
				if !strings.Contains(string(status), "\nTracerPid:\t0\n") {
					t.Errorf("pid %d still traced after the failed dump", pid)
				}
			}
		})
	}
}
