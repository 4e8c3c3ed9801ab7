package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
	ocirt "github.com/crhook/crhook/runtime"
)

// TestCheckpointRacesKill: `runc kill` or `runc delete -f` of a container
// while `crhook checkpoint --leave-running` works on it, at several
// moments (freezing, seizing, dumping, done). The checkpoint ends, with
// an error or not, in bounded time, and leaves no thaw guard, no frozen
// cgroup and no traced process; the container then dies and is deleted
// as usual.
func TestCheckpointRacesKill(t *testing.T) {
	setup(t)
	r := newRunner(t, "runc")
	for _, op := range []string{"kill", "delete"} {
		for i, when := range []string{"at once", "frozen", "seized"} {
			t.Run(op+" "+when, func(t *testing.T) {
				bundle, data := newBundle(t, "/bin/counter", "/data/log")
				id := fmt.Sprintf("crhook-it-race-%d-%s-%d", os.Getpid(), op, i)
				c := r.mustStart(t, id, bundle, data)
				waitCount(t, filepath.Join(data, "log"), 0, 5, 10*time.Second, func() string { return "" })
				pid := c.state(t).Pid
				fr, err := ocirt.FreezerFor(pid)
				if err != nil {
					t.Fatal(err)
				}
				tree := append([]int{pid}, crtest.Descendants(pid)...)
				guards := guardPids()

				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, crhookBin, "checkpoint", id, "-D", filepath.Join(t.TempDir(), "images"),
					"--root", r.root, "--leave-running")
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				start := time.Now()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				// Strike at the moment named, seen from outside (bounded:
				// the checkpoint may be over before it is seen).
				hit := true
				switch when {
				case "frozen":
					hit = poll(10*time.Second, done, func() bool { f, _ := fr.Frozen(); return f })
				case "seized":
					hit = poll(10*time.Second, done, func() bool { tp, _ := tracerPid(pid); return tp != 0 })
				}
				args := []string{"kill", id, "KILL"}
				if op == "delete" {
					args = []string{"delete", "-f", id}
				}
				rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
				defer rcancel()
				rc := r.cmd(args...)
				rcmd := exec.CommandContext(rctx, rc.Args[0], rc.Args[1:]...)
				rout, rerr := rcmd.CombinedOutput()
				if rctx.Err() != nil {
					t.Errorf("runc %s hangs", strings.Join(args, " "))
				}
				var cerr error
				select {
				case cerr = <-done:
				case <-time.After(90 * time.Second):
					cancel()
					<-done
					t.Fatalf("crhook checkpoint did not end within 90s of runc %s\n%s", op, out.String())
				}
				t.Logf("%s seen: %v; checkpoint ended after %v: %v (runc %s: %v %s)\n%s", when, hit, time.Since(start).Round(time.Millisecond), cerr, op, rerr, bytes.TrimSpace(rout), bytes.TrimSpace(out.Bytes()))
				if ctx.Err() != nil {
					t.Fatalf("crhook checkpoint ran into its 2 minute timeout")
				}

				// A failure says the container went away, not some
				// /proc file.
				if cerr != nil && !strings.Contains(out.String(), "stopped") && !strings.Contains(out.String(), "not running") && !strings.Contains(out.String(), "does not exist") {
					t.Errorf("the failed checkpoint does not say that the container stopped:\n%s", out.String())
				}
				waitNoGuard(t, guards)
				if _, err := os.Stat(fr.Path()); err == nil {
					if frozen, err := fr.Frozen(); err == nil && frozen {
						t.Errorf("cgroup %s left frozen", fr.Path())
					}
				}
				for _, p := range tree {
					if tp, err := tracerPid(p); err == nil && tp != 0 {
						t.Errorf("pid %d of the container left traced by %d", p, tp)
					}
				}
				// Whoever won, the container goes away as usual.
				c.destroy()
				deadline := time.Now().Add(10 * time.Second)
				for _, p := range tree {
					for alive(p) {
						if time.Now().After(deadline) {
							st, _ := crtest.State(p)
							t.Fatalf("pid %d of the container survives its deletion (state %c)", p, st)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
				if out, err := r.cmd("state", id).CombinedOutput(); err == nil {
					t.Errorf("container %s still exists after delete -f: %s", id, out)
				}
			})
		}
	}
}

// poll calls cond every millisecond until it holds (true), done has a
// value (false; it is put back) or timeout passes (false).
func poll(timeout time.Duration, done chan error, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case err := <-done:
			done <- err
			return false
		default:
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// tracerPid reads TracerPid of pid.
func tracerPid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			var n int
			_, err := fmt.Sscan(strings.TrimSpace(v), &n)
			return n, err
		}
	}
	return 0, fmt.Errorf("pid %d: no TracerPid", pid)
}

// alive: pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := crtest.State(pid)
	return err == nil && st != 'Z' && st != 'X'
}
