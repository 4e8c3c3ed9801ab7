package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nsProcs maps the pids (as the container sees them) of the processes in
// the pid namespace of host pid init to their host pids.
func nsProcs(t *testing.T, init int) map[int]int {
	t.Helper()
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); err != nil || ns != want {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f, ok := strings.CutPrefix(l, "NSpid:"); ok {
				fs := strings.Fields(f)
				if n, err := strconv.Atoi(fs[len(fs)-1]); err == nil {
					out[n] = p
				}
			}
		}
	}
	return out
}

// external: a counter container plus a second counter started by
// `RUNTIME exec -d` (outside the init's tree, its stdout and stderr a
// pipe to the test). Without --include-external the checkpoint names it;
// with it both are dumped, and a new container of the bundle runs both
// on from their checkpointed counts, in its cgroup, with their pids.
func external(t *testing.T, runtime string) {
	setup(t)
	r := newRunner(t, runtime)
	bundle, data := newBundle(t, "/bin/counter", "/data/log")
	logPath, log2 := filepath.Join(data, "log"), filepath.Join(data, "log2")
	id := fmt.Sprintf("crhook-it-extin-%s-%d", runtime, os.Getpid())
	c := r.mustStart(t, id, bundle, data)
	waitCount(t, logPath, 0, 5, 10*time.Second, func() string { return "" })

	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	ex := r.cmd("exec", "-d", id, "/bin/counter", "/data/log2")
	// crun exec passes its caller's rlimits on (runc applies the
	// config's): give it the config's, since a restore cannot raise a
	// hard limit above the container's without CAP_SYS_RESOURCE.
	ex.Args = append([]string{"prlimit", "--nofile=1024:1024", "--"}, ex.Args...)
	if ex.Path, err = exec.LookPath("prlimit"); err != nil {
		t.Fatal(err)
	}
	ex.Stdin, ex.Stdout, ex.Stderr = null, pw, pw
	err = ex.Run()
	pw.Close()
	if err != nil {
		t.Fatalf("%s exec: %v", runtime, err)
	}
	waitCount(t, log2, 0, 5, 10*time.Second, func() string { return "" })
	init := c.state(t).Pid
	var execPid int // in the container
	for ns, host := range nsProcs(t, init) {
		if ns != 1 {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", host)); strings.Contains(string(b), "log2") {
				execPid = ns
			}
		}
	}
	if execPid == 0 {
		t.Fatalf("no exec'd counter in the container's pid namespace: %v", nsProcs(t, init))
	}

	images := filepath.Join(t.TempDir(), "images")
	_, stderr, code := crhook(t, "", "checkpoint", id, "-D", images, "--runtime", runtime, "--root", r.root)
	if code != 1 || !strings.Contains(stderr, "outside the init's tree") || !strings.Contains(stderr, "counter /data/log2") {
		t.Fatalf("checkpoint without --include-external: exit %d, stderr %q; want exit 1 naming the exec'd counter", code, stderr)
	}

	mustCrhook(t, "checkpoint", id, "-D", images, "--runtime", runtime, "--root", r.root, "--include-external")
	c.waitStatus(t, "stopped", 10*time.Second)
	c.delete(t)
	n1, n2 := lastCount(t, logPath), lastCount(t, log2)
	from1, from2 := len(logLines(t, logPath)), len(logLines(t, log2))

	mustCrhook(t, "install-hooks", bundle, "--images", images)
	c2, err := r.start(t, id, bundle, data)
	if err != nil {
		t.Fatalf("%v%s", err, restoreLog(images))
	}
	l1 := waitCount(t, logPath, from1, n1+10, 20*time.Second, func() string { return restoreLog(images) })
	l2 := waitCount(t, log2, from2, n2+10, 20*time.Second, func() string { return restoreLog(images) })
	if cs := counts(l1[from1:]); cs[0] != n1+1 {
		t.Errorf("restored init counter began at %d, want %d%s", cs[0], n1+1, restoreLog(images))
	}
	if cs := counts(l2[from2:]); cs[0] != n2+1 {
		t.Errorf("restored exec'd counter began at %d, want %d%s", cs[0], n2+1, restoreLog(images))
	}
	st := c2.state(t)
	if st.Status != "running" {
		t.Fatalf("restored container: %+v", st)
	}
	procs := nsProcs(t, st.Pid)
	host, ok := procs[execPid]
	if !ok {
		t.Fatalf("the exec'd counter is not pid %d in the new container: %v", execPid, procs)
	}
	for _, p := range []int{st.Pid, host} {
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(cg), id) {
			t.Errorf("restored pid %d is not in the container's cgroups:\n%s", p, cg)
		}
	}
	c2.r.mustRun(t, "kill", id, "KILL")
	c2.delete(t)
}

func TestRuncIncludeExternal(t *testing.T) { external(t, "runc") }

func TestCrunIncludeExternal(t *testing.T) { external(t, "crun") }
