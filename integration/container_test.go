package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// roundTrip is the common scenario: a counter container is checkpointed
// with `crhook checkpoint`, and a new container of the same bundle,
// carrying the restore annotation and crhook's hook, counts on from the
// checkpointed value.
type roundTrip struct {
	runtime      string
	leaveRunning bool
	// inRootfs: the counter logs into its rootfs (/var/log/counter)
	// instead of the bind-mounted /data.
	inRootfs bool
	// stdioFile: the container's stdout and stderr are a host file (as
	// `runc run -d >file` makes them), which the restored process must
	// not reopen: it keeps the new container's.
	stdioFile bool
}

func (rt roundTrip) run(t *testing.T) {
	setup(t)
	r := newRunner(t, rt.runtime)
	logIn := "/data/log"
	if rt.inRootfs {
		logIn = "/var/log/counter"
	}
	bundle, data := newBundle(t, "/bin/counter", logIn)
	logPath := filepath.Join(data, "log")
	if rt.inRootfs {
		logPath = filepath.Join(bundle, "rootfs/var/log/counter")
	}
	id := fmt.Sprintf("crhook-it-%d", os.Getpid())
	var out, out2 *os.File
	if rt.stdioFile {
		var err error
		if out, err = os.Create(filepath.Join(t.TempDir(), "stdout")); err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		// The new container's stdio is another file, as on another host.
		if out2, err = os.Create(filepath.Join(t.TempDir(), "stdout2")); err != nil {
			t.Fatal(err)
		}
		defer out2.Close()
	}
	c, err := r.startStdio(t, id, bundle, data, out)
	if err != nil {
		t.Fatal(err)
	}
	waitCount(t, logPath, 0, 20, 10*time.Second, func() string { return "" })
	before := lastCount(t, logPath)

	images := filepath.Join(t.TempDir(), "images")
	args := []string{"checkpoint", id, "-D", images, "--runtime", rt.runtime, "--root", r.root}
	if rt.leaveRunning {
		args = append(args, "--leave-running")
	}
	mustCrhook(t, args...)
	var n0 uint64
	if rt.leaveRunning {
		// It goes on counting...
		lines := waitCount(t, logPath, 0, lastCount(t, logPath)+10, 5*time.Second, func() string { return "" })
		if st := c.state(t); st.Status != "running" {
			t.Fatalf("after --leave-running the container is %s", st.Status)
		}
		// ...until we stop it; the restored one restarts from the dump.
		c.r.mustRun(t, "kill", id, "KILL")
		_ = lines
	} else {
		c.waitStatus(t, "stopped", 5*time.Second)
		n0 = lastCount(t, logPath)
		if n0 < before {
			t.Fatalf("count went back from %d to %d", before, n0)
		}
	}
	c.delete(t)
	if _, err := os.Stat(filepath.Join(images, "crhook-container.json")); err != nil {
		t.Fatalf("checkpoint wrote no crhook-container.json: %v", err)
	}
	stop := lastCount(t, logPath)
	from := len(logLines(t, logPath))

	mustCrhook(t, "install-hooks", bundle, "--images", images)
	// Idempotent: a second run changes nothing.
	if out := mustCrhook(t, "install-hooks", bundle, "--images", images); out != "" {
		t.Errorf("second install-hooks changed the bundle: %q", out)
	}
	c2, err := r.startStdio(t, id, bundle, data, out2)
	if err != nil {
		t.Fatalf("%v%s", err, restoreLog(images))
	}
	lines := waitCount(t, logPath, from, stop+20, 10*time.Second, func() string { return restoreLog(images) })
	fresh := lines[from:]
	for _, l := range fresh {
		if strings.HasPrefix(l, "ready") {
			t.Fatalf("the new container started the counter afresh (%q) instead of restoring it%s", l, restoreLog(images))
		}
	}
	cs := counts(fresh)
	switch {
	case rt.leaveRunning:
		if cs[0] <= before || cs[0] > stop+1 {
			t.Fatalf("restored counter began at %d; the checkpoint was taken between %d and %d", cs[0], before, stop)
		}
	case cs[0] != n0+1:
		t.Fatalf("restored counter began at %d, want %d (checkpointed at %d)%s", cs[0], n0+1, n0, restoreLog(images))
	}
	// The restored container is a container like any other.
	st := c2.state(t)
	if st.Status != "running" || st.Pid <= 0 {
		t.Fatalf("restored container: %+v", st)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cg), id) {
		t.Errorf("restored pid %d is not in the container's cgroups:\n%s", st.Pid, cg)
	}
	c2.r.mustRun(t, "kill", id, "KILL")
	c2.delete(t)
}

// (a) checkpoint, delete, restore into a new container of the bundle.
func TestRuncRoundTrip(t *testing.T) { roundTrip{runtime: "runc"}.run(t) }

// (b) --leave-running keeps the container going.
func TestRuncLeaveRunning(t *testing.T) { roundTrip{runtime: "runc", leaveRunning: true}.run(t) }

// (c) a container that writes into its own rootfs.
func TestRuncRootfsWriter(t *testing.T) { roundTrip{runtime: "runc", inRootfs: true}.run(t) }

// The new container's stdio replaces the checkpointed one's (here host
// files that do not exist any more for the restored process).
func TestRuncStdioFiles(t *testing.T) { roundTrip{runtime: "runc", stdioFile: true}.run(t) }

// (d) the same with crun.
func TestCrunRoundTrip(t *testing.T) { roundTrip{runtime: "crun"}.run(t) }

// (e) a shell with a background child and a pipeline between two of its
// processes.
func TestRuncShellTree(t *testing.T) {
	setup(t)
	r := newRunner(t, "runc")
	script := `/bin/counter /data/bg.log & i=0; while :; do i=$((i+1)); echo "count $i"; usleep 20000; done | cat >> /data/log`
	bundle, data := newBundle(t, "/bin/sh", "-c", script)
	logPath, bgPath := filepath.Join(data, "log"), filepath.Join(data, "bg.log")
	id := fmt.Sprintf("crhook-it-sh-%d", os.Getpid())
	c := r.mustStart(t, id, bundle, data)
	waitCount(t, logPath, 0, 10, 10*time.Second, func() string { return "" })
	waitCount(t, bgPath, 0, 10, 10*time.Second, func() string { return "" })
	n, b := lastCount(t, logPath), lastCount(t, bgPath)
	images := filepath.Join(t.TempDir(), "images")
	mustCrhook(t, "checkpoint", id, "-D", images, "--root", r.root)
	c.delete(t)
	n1, b1 := lastCount(t, logPath), lastCount(t, bgPath)
	from, bgFrom := len(logLines(t, logPath)), len(logLines(t, bgPath))
	mustCrhook(t, "install-hooks", bundle, "--images", images)
	_, err := r.start(t, id, bundle, data)
	if err == nil {
		// Wait for progress, or for the shim to give up.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !strings.Contains(restoreLog(images), "level=error") {
			if cs := counts(logLines(t, bgPath)[bgFrom:]); len(cs) > 0 && cs[len(cs)-1] > b1+10 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err != nil {
		t.Fatalf("%v%s", err, restoreLog(images))
	}
	logs := waitCount(t, logPath, from, n1+10, 10*time.Second, func() string { return restoreLog(images) })
	bgs := waitCount(t, bgPath, bgFrom, b1+10, 10*time.Second, func() string { return restoreLog(images) })
	if cs := counts(bgs[bgFrom:]); cs[0] <= b || cs[0] > b1+1 {
		t.Errorf("background counter began at %d; the checkpoint was taken between %d and %d", cs[0], b, b1)
	}
	if cs := counts(logs[from:]); cs[0] <= n || cs[0] > n1+1 {
		t.Errorf("pipeline began at %d; the checkpoint was taken between %d and %d", cs[0], n, n1)
	}
}

// (f) the hook leaves a bundle without the annotation alone.
func TestHookNoAnnotation(t *testing.T) {
	setup(t)
	r := newRunner(t, "runc")
	bundle, data := newBundle(t, "/bin/counter", "/data/log")
	mustCrhook(t, "install-hooks", bundle)
	s, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s), crhookBin) || strings.Contains(string(s), "io.crhook.restore") {
		t.Fatalf("install-hooks without --images: config.json has no hook or has the annotation:\n%s", s)
	}
	r.mustStart(t, fmt.Sprintf("crhook-it-noop-%d", os.Getpid()), bundle, data)
	lines := waitCount(t, filepath.Join(data, "log"), 0, 5, 10*time.Second, func() string { return "" })
	if !strings.HasPrefix(lines[0], "rseq") && !strings.HasPrefix(lines[0], "ready") {
		t.Errorf("the container did not start afresh: %q", lines[0])
	}
}

// (f) malformed state is refused, a missing image dir too, and a bundle
// whose config is not the checkpointed one.
func TestHookRejects(t *testing.T) {
	setup(t)
	for _, tc := range []struct {
		name, stdin, want string
		args              []string
	}{
		{"empty", "", "empty stdin", nil},
		{"not json", "{oops", "bad OCI hook state", nil},
		{"no id", `{"ociVersion":"1.0.2","pid":1,"bundle":"/x"}`, "no container id", nil},
		{"no bundle", `{"ociVersion":"1.0.2","id":"a","pid":1}`, "no bundle", nil},
		{"relative bundle", `{"ociVersion":"1.0.2","id":"a","pid":1,"bundle":"x"}`, "not absolute", nil},
		{"missing images", `{"ociVersion":"1.0.2","id":"a","pid":1,"bundle":"/","annotations":{"io.crhook.restore":"/nonexistent/crhook"}}`, "image directory", nil},
		{"pid 0", `{"ociVersion":"1.0","id":"a","pid":0,"root":"rootfs","bundle":"/","status":"starting","annotations":{"io.crhook.restore":"/"}}`, "no pid", []string{"hook", "createRuntime"}},
		{"late stage", `{"ociVersion":"1.0","id":"a","pid":5,"bundle":"/","annotations":{"io.crhook.restore":"/"}}`, "must start at createRuntime", []string{"hook", "poststart"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if args == nil {
				args = []string{"hook"}
			}
			_, stderr, code := crhook(t, tc.stdin, args...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("crhook hook <<%q: exit %d, stderr %q; want exit 1 naming %q", tc.stdin, code, stderr, tc.want)
			}
		})
	}
	// No annotation, either dialect: exit 0 at once.
	for _, st := range []string{
		`{"ociVersion":"1.0.2-dev","id":"r2","status":"creating","pid":1148,"bundle":"/tmp/b"}`,
		`{"ociVersion":"1.0","id":"c2","pid":0,"root":"rootfs","bundle":"/tmp/b","status":"starting"}`,
	} {
		start := time.Now()
		if _, stderr, code := crhook(t, st, "hook"); code != 0 || stderr != "" {
			t.Errorf("crhook hook <<%s: exit %d, stderr %q; want a silent 0", st, code, stderr)
		}
		t.Logf("no-op hook took %v", time.Since(start))
	}

	// A runtime refuses the container when the hook fails: here the
	// bundle's config changed after the checkpoint.
	r := newRunner(t, "runc")
	bundle, data := newBundle(t, "/bin/counter", "/data/log")
	images := t.TempDir()
	meta := `{"version":1,"id":"x","runtime":"runc","bundle":"/elsewhere","config_digest":"sha256:0000"}`
	if err := os.WriteFile(filepath.Join(images, "crhook-container.json"), []byte(meta), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCrhook(t, "install-hooks", bundle, "--images", images)
	_, err := r.start(t, fmt.Sprintf("crhook-it-mismatch-%d", os.Getpid()), bundle, data)
	if err == nil || !strings.Contains(err.Error(), "bundle config differs") {
		t.Fatalf("runc run with a mismatching checkpoint: %v; want the hook's refusal", err)
	}
}

// checkpoint names processes outside the init's tree (runc exec).
func TestCheckpointExternal(t *testing.T) {
	setup(t)
	r := newRunner(t, "runc")
	bundle, data := newBundle(t, "/bin/counter", "/data/log")
	id := fmt.Sprintf("crhook-it-ext-%d", os.Getpid())
	c := r.mustStart(t, id, bundle, data)
	waitCount(t, filepath.Join(data, "log"), 0, 5, 10*time.Second, func() string { return "" })
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	ex := r.cmd("exec", "-d", id, "/bin/sleep", "600")
	ex.Stdin, ex.Stdout, ex.Stderr = null, null, null
	if err := ex.Run(); err != nil {
		t.Fatalf("runc exec: %v", err)
	}
	images := filepath.Join(t.TempDir(), "images")
	_, stderr, code := crhook(t, "", "checkpoint", id, "-D", images, "--root", r.root)
	if code != 1 || !strings.Contains(stderr, "outside the init's tree") || !strings.Contains(stderr, "sleep 600") {
		t.Fatalf("checkpoint with a runc exec process: exit %d, stderr %q; want exit 1 naming it", code, stderr)
	}
	// Nothing happened to the container: thawed, still counting.
	if st := c.state(t); st.Status != "running" {
		t.Fatalf("container is %s after the refused checkpoint", st.Status)
	}
	n := lastCount(t, filepath.Join(data, "log"))
	waitCount(t, filepath.Join(data, "log"), 0, n+5, 5*time.Second, func() string { return " (still frozen?)" })
	if _, err := os.Stat(images); err == nil {
		t.Errorf("the refused checkpoint left %s", images)
	}
}
