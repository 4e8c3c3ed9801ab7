//go:build linux && amd64

package crcore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// The helper process: the test binary re-executed to run one Dump or
// Restore, so that a fault point (crcore.FaultEnv) can kill it.
const helperEnv = "CRCORE_TEST_HELPER"

// helperProcess is the helper's whole run; TestMain calls it, before any
// test, when helperEnv is set.
func helperProcess(mode string) {
	dir := os.Getenv("CRCORE_TEST_DIR")
	var err error
	switch mode {
	case "dump":
		pid, _ := strconv.Atoi(os.Getenv("CRCORE_TEST_PID"))
		_, err = crcore.Dump(context.Background(), crcore.DumpOptions{Pid: pid, ImageDir: dir, LeaveRunning: os.Getenv("CRCORE_TEST_LEAVE") != ""})
	case "restore":
		if os.Getenv("CRCORE_TEST_NOINHERIT") != "" {
			crcore.SetInheritCopyOnWrite(false)
		}
		var res *crcore.Restored
		res, err = crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir, PidWait: 5 * time.Second})
		if err == nil {
			fmt.Println("restored", res.Pid)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runHelper runs the helper with fault point fault and returns how it
// ended, and its stderr.
func runHelper(t *testing.T, mode, fault string, env ...string) (unix.WaitStatus, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, crcore.FaultEnv+"="+fault)
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("helper %s (fault %s) hangs", mode, fault)
	}
	return unix.WaitStatus(cmd.ProcessState.Sys().(syscall.WaitStatus)), stderr.String()
}

// tracerPid returns TracerPid of /proc/PID/status.
func tracerPid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no TracerPid")
}

func waitUntraced(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tp, err := tracerPid(pid)
		if err != nil {
			t.Fatalf("pid %d: %v (did the target die?)", pid, err)
		}
		if tp == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still traced by %d", pid, tp)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// codeHashes returns the hashes of the executable mappings of pid.
func codeHashes(t *testing.T, pid int) map[string]string {
	out := map[string]string{}
	for line, h := range crtest.HashVMAs(t, pid) {
		f := strings.Fields(line)
		if len(f) > 1 && strings.Contains(f[1], "x") && !strings.Contains(line, "[vdso]") {
			out[line] = h
		}
	}
	return out
}

// checkCounting checks that the counter p counts on, one by one.
func checkCounting(t *testing.T, p *crtest.Proc) {
	t.Helper()
	counts := p.Counts()
	last := counts[len(counts)-1]
	p.WaitLine(t, "^count "+strconv.FormatUint(last+10, 10)+"$", 10*time.Second)
	all := p.Counts()
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			t.Fatalf("counts not consecutive: %d then %d", all[i-1], all[i])
		}
	}
	if st, _ := crtest.State(p.Pid); st != 'S' && st != 'R' {
		t.Fatalf("pid %d in state %c", p.Pid, st)
	}
}

// TestDumpKilledMidway kills crhook at every fault point of a dump: the
// target must run on, untraced, with its code unchanged and every count
// in order; the images it left must not pass verification.
func TestDumpKilledMidway(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", false)
	for _, point := range []string{"after-seize", "after-inject", "in-inject", "in-syscall", "in-batch", "at-batch-stop", "after-memory", "before-checksums"} {
		t.Run(point, func(t *testing.T) {
			args := []string{bin}
			if point == "in-syscall" {
				// Handlers on every stop signal: no batch, one
				// syscall a stop (the first, brk, is killed in).
				args = append(args, "catch")
			}
			p := crtest.Start(t, args...)
			p.WaitLine(t, `^count 3$`, 10*time.Second)
			before := codeHashes(t, p.Pid)
			dir := filepath.Join(t.TempDir(), "img")
			ws, stderr := runHelper(t, "dump", "dump:"+point, "CRCORE_TEST_PID="+strconv.Itoa(p.Pid), "CRCORE_TEST_DIR="+dir)
			if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
				t.Fatalf("helper not killed at %s: %v\n%s", point, ws, stderr)
			}
			waitUntraced(t, p.Pid)
			checkCounting(t, p)
			after := codeHashes(t, p.Pid)
			for line, h := range before {
				if after[line] != h {
					t.Errorf("code %s changed", line)
				}
			}
			for _, l := range p.Lines() {
				if strings.HasPrefix(l, "caught") {
					t.Errorf("a handler ran: %s", l)
					break
				}
			}
			if err := crcore.Verify(dir); err == nil {
				t.Errorf("Verify accepts the images of a dump killed at %s", point)
			} else if !errors.Is(err, crcore.ErrBadImage) {
				t.Errorf("Verify: %v, want ErrBadImage", err)
			}
		})
	}
}

// TestDumpKilledInThreadBatch kills crhook while one thread of a
// multi-threaded target runs a crash-safe batch of injected syscalls,
// or sits at its stop signal: the leader's process batch (the first),
// and another thread's own batch (the third; the second is the
// leader's). Every thread must run on untraced, counting, with its
// signal mask and pending signals as they were, no stop signal left
// pending or run, and the code unchanged.
func TestDumpKilledInThreadBatch(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "threads", false)
	threadState := func(pid int) map[string]string {
		out := map[string]string{}
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range ents {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				for _, k := range []string{"SigBlk:", "SigPnd:", "ShdPnd:", "SigIgn:", "SigCgt:", "TracerPid:"} {
					if strings.HasPrefix(l, k) {
						keep = append(keep, l)
					}
				}
			}
			out[e.Name()] = strings.Join(keep, " ")
		}
		return out
	}
	for _, point := range []string{"in-batch", "at-batch-stop", "in-batch@3", "at-batch-stop@3"} {
		t.Run(point, func(t *testing.T) {
			p := crtest.Start(t, bin, "3")
			p.WaitLine(t, `^thread 2 count 3 `, 10*time.Second)
			before, code := threadState(p.Pid), codeHashes(t, p.Pid)
			if len(before) != 4 {
				t.Fatalf("threads: %v", before)
			}
			dir := filepath.Join(t.TempDir(), "img")
			ws, stderr := runHelper(t, "dump", "dump:"+point, "CRCORE_TEST_PID="+strconv.Itoa(p.Pid), "CRCORE_TEST_DIR="+dir)
			if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
				t.Fatalf("helper not killed at %s: %v\n%s", point, ws, stderr)
			}
			waitUntraced(t, p.Pid)
			deadline := time.Now().Add(5 * time.Second)
			var after map[string]string
			for {
				after = threadState(p.Pid)
				if maps.Equal(after, before) || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond) // threads still leaving their stops
			}
			if !maps.Equal(after, before) {
				t.Errorf("thread state changed:\nbefore %v\nafter  %v", before, after)
			}
			n := len(p.Lines())
			for i := range 3 {
				lineAfter(t, p, n, fmt.Sprintf(`^thread %d count \d+ `, i))
			}
			for line, h := range code {
				if codeHashes(t, p.Pid)[line] != h {
					t.Errorf("code %s changed", line)
				}
			}
		})
	}
}

// huskChildren lists our children that are husks (argv[0] crhook-husk)
// and not yet zombies.
func huskChildren() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmd, []byte("crhook-husk\x00")) {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err == nil && strings.Contains(string(st), fmt.Sprintf("\nPPid:\t%d\n", me)) {
			out = append(out, pid)
		}
	}
	return out
}

// present reports the pids that still exist, zombies too, reaping
// those that are our zombies: a zombie keeps its pid from a restore.
func present(pids []int) []int {
	var out []int
	for _, pid := range pids {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if st, err := crtest.State(pid); err == nil && st != 'X' {
			out = append(out, pid)
		}
	}
	return out
}

// checkNoStray fails when a process of pids, or a husk of ours, stays
// beyond a short grace period (PTRACE_O_EXITKILL acts at once, the
// reaping of the dead takes a moment). The killed restorer's tasks die
// as orphans of this test (a subreaper), once their own parent is gone:
// until then they are another's zombies, and they are waited for, or
// the next restore finds their pids taken.
func checkNoStray(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := append(present(pids), present(huskChildren())...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				st, _ := crtest.State(pid)
				t.Errorf("pid %d (%q, state %c) survives", pid, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}), st)
				crtest.KillAndReap(pid)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dumpTree dumps the tree test program (killing it) and returns the image
// dir and the dumped pids.
func dumpTree(t *testing.T) (string, []int) {
	t.Helper()
	bin := crtest.BuildC(t, "tree", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^C got t[0-9]+$`, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "img")
	res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.Reap(p.Pid)
	crtest.ReapGone(t, res.Pids, 5*time.Second)
	return dir, res.Pids
}

// TestRestoreKilledMidway kills crhook at points of a restore: no task of
// the image, and no husk, survives it.
func TestRestoreKilledMidway(t *testing.T) {
	crtest.RequireRoot(t)
	dir, pids := dumpTree(t)
	for _, point := range []string{"after-husk", "after-clone", "after-memory", "in-parent-fill"} {
		t.Run(point, func(t *testing.T) {
			env := []string{"CRCORE_TEST_DIR=" + dir}
			if point == "in-parent-fill" {
				// The children's shared pages copied from their
				// parent's image, not inherited: a copy in progress.
				env = append(env, "CRCORE_TEST_NOINHERIT=1")
			}
			ws, stderr := runHelper(t, "restore", "restore:"+point, env...)
			if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
				t.Fatalf("helper not killed at %s: %v\n%s", point, ws, stderr)
			}
			checkNoStray(t, pids)
		})
	}
	// The images are intact: a restore without faults still works.
	checkNoStray(t, pids)
	ws, stderr := runHelper(t, "restore", "", "CRCORE_TEST_DIR="+dir)
	if ws.ExitStatus() != 0 {
		t.Fatalf("restore after the faults: %v\n%s", ws, stderr)
	}
	for _, pid := range pids {
		crtest.KillAndReap(pid)
	}
	checkNoStray(t, pids)
}
