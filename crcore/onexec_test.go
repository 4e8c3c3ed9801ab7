//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// traced reports whether every thread of pid has a tracer.
func traced(pid int) bool {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(ents) == 0 {
		return false
	}
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if err != nil || strings.Contains(string(b), "TracerPid:\t0\n") {
			return false
		}
	}
	return true
}

// TestRestoreOnExecInPidns plays the part of a container runtime: the
// tree program runs as pid 1 of a new pid namespace and is dumped; a new
// "init" in another new pid namespace waits on its stdin and then execs,
// as runc init does at "runc start"; RestoreOnExec transplants the tree
// into it. Without CAP_CHECKPOINT_RESTORE in the new init (a default
// container), the tree's pids are chosen from outside.
func TestRestoreOnExecInPidns(t *testing.T) {
	crtest.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	for _, privileged := range []bool{true, false} {
		name := "unprivileged"
		if privileged {
			name = "privileged"
		}
		t.Run(name, func(t *testing.T) {
			bin := crtest.BuildC(t, "tree", true)
			log := filepath.Join(t.TempDir(), "log")
			cmd := exec.Command(bin, log)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			p := &crtest.Proc{Pid: cmd.Process.Pid, Log: log, Cmd: cmd}
			t.Cleanup(func() { crtest.KillAndReap(p.Pid) })
			p.WaitLine(t, `^C got t5$`, 10*time.Second)
			before := treeIDs(p)
			dir := filepath.Join(t.TempDir(), "img")
			if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
				t.Fatalf("dump: %v", err)
			}
			cmd.Wait()
			n := len(p.Lines())

			// The new "container": pid 1 of a new namespace, waiting for
			// its start signal on stdin.
			args := []string{"/bin/sh", "-c", "read x; exec /bin/true"}
			if !privileged {
				args = append([]string{setpriv, "--inh-caps=-all", "--bounding-set=-checkpoint_restore,-sys_admin", "--"}, args...)
			}
			init := exec.Command(args[0], args[1:]...)
			init.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
			start, err := init.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := init.Start(); err != nil {
				t.Fatal(err)
			}
			initPid := init.Process.Pid
			init.Process.Release()
			t.Cleanup(func() { crtest.KillAndReap(initPid) })
			type result struct {
				r   *crcore.Restored
				err error
			}
			done := make(chan result, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			go func() {
				r, err := crcore.RestoreOnExec(ctx, crcore.RestoreOptions{ImageDir: dir}, initPid)
				done <- result{r, err}
			}()
			deadline := time.Now().Add(10 * time.Second)
			for !traced(initPid) {
				if time.Now().After(deadline) {
					t.Fatal("the new init was not seized")
				}
				time.Sleep(5 * time.Millisecond)
			}
			// setpriv execs sh: wait for sh to block in read.
			time.Sleep(200 * time.Millisecond)
			fmt.Fprintln(start, "go")
			start.Close()
			res := <-done
			if res.err != nil {
				t.Fatalf("restore on exec: %v", res.err)
			}
			p.WaitLine(t, fmt.Sprintf(`^C got t%d$`, countTokens(p.Lines()[:n])+10), 10*time.Second)
			checkTreeIDs(t, p, n, append([]int{initPid}, crtest.Descendants(initPid)...), before)
		})
	}
}
