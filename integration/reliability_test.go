package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	ocirt "github.com/crhook/crhook/runtime"
)

// guardPids lists the running thaw guards of crhook checkpoints.
func guardPids() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.HasPrefix(b, []byte("crhook-thaw-guard\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

// waitNoGuard fails unless every thaw guard of ours is gone in time.
func waitNoGuard(t *testing.T, before []int) {
	t.Helper()
	old := map[int]bool{}
	for _, p := range before {
		old[p] = true
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []int
		for _, p := range guardPids() {
			if !old[p] {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thaw guards still running: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitThawed waits (bounded) until the cgroup of pid is not frozen.
func waitThawed(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	fr, err := ocirt.FreezerFor(pid)
	if err != nil {
		t.Fatalf("freezer of pid %d: %v", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		frozen, err := fr.Frozen()
		if err != nil {
			t.Fatalf("freezer state of %s: %v", fr.Path(), err)
		}
		if !frozen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cgroup %s still frozen after %v", fr.Path(), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counting waits for the counter log at path to advance by n.
func counting(t *testing.T, path string, n uint64, why string) {
	t.Helper()
	last := lastCount(t, path)
	waitCount(t, path, 0, last+n, 15*time.Second, func() string { return why })
}

// A crhook SIGKILLed while the container's cgroup is frozen must not leave
// it frozen: its thaw guard thaws it.
func TestCheckpointKilledWhileFrozen(t *testing.T) {
	setup(t)
	r := newRunner(t, "runc")
	bundle, data := newBundle(t, "/bin/counter", "/data/log")
	logPath := filepath.Join(data, "log")
	id := fmt.Sprintf("crhook-it-thaw-%d", os.Getpid())
	c := r.mustStart(t, id, bundle, data)
	waitCount(t, logPath, 0, 5, 10*time.Second, func() string { return "" })
	pid := c.state(t).Pid
	guards := guardPids()

	images := filepath.Join(t.TempDir(), "images")
	cmd := exec.Command(crhookBin, "checkpoint", id, "-D", images, "--root", r.root)
	cmd.Env = append(os.Environ(), crcore.FaultEnv+"=checkpoint:after-freeze")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatal("crhook checkpoint with the fault point hangs")
	}
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("crhook checkpoint did not die at the fault point: %v\n%s", cmd.ProcessState, stderr.String())
	}
	waitThawed(t, pid, 10*time.Second)
	counting(t, logPath, 10, " (the container stayed frozen)")
	if st := c.state(t); st.Status != "running" || st.Pid != pid {
		t.Fatalf("container after the killed checkpoint: %+v", st)
	}
	waitNoGuard(t, guards)
}

// A successful checkpoint leaves no guard behind, and a later checkpoint
// of the same container works.
func TestCheckpointGuardGone(t *testing.T) {
	setup(t)
	r := newRunner(t, "runc")
	bundle, data := newBundle(t, "/bin/counter", "/data/log")
	logPath := filepath.Join(data, "log")
	id := fmt.Sprintf("crhook-it-guard-%d", os.Getpid())
	c := r.mustStart(t, id, bundle, data)
	waitCount(t, logPath, 0, 5, 10*time.Second, func() string { return "" })
	guards := guardPids()
	mustCrhook(t, "checkpoint", id, "-D", filepath.Join(t.TempDir(), "images"), "--root", r.root, "--leave-running")
	waitNoGuard(t, guards)
	waitThawed(t, c.state(t).Pid, 5*time.Second)
	counting(t, logPath, 10, "")
}

var _ = context.Background
var _ = strings.Contains
