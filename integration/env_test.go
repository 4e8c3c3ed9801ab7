package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/crhook/crhook/crcore/crtest"
)

var (
	buildOnce sync.Once
	buildErr  error
	builtDir  string
	crhookBin string
	rootfsDir string // template: busybox, its applet links, counter
)

func cleanupBuilt() {
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// setup skips when not root, then builds crhook and the rootfs once.
func setup(t *testing.T) {
	t.Helper()
	crtest.RequireRoot(t)
	for _, need := range []string{"/bin/busybox", "gcc"} {
		if _, err := exec.LookPath(need); err != nil {
			t.Fatalf("%s is missing: run `make deps` (it installs busybox-static, gcc, runc and crun)", need)
		}
	}
	buildOnce.Do(func() { buildErr = build(t) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func build(t *testing.T) error {
	d, err := os.MkdirTemp("", "crhook-it-")
	if err != nil {
		return err
	}
	builtDir = d
	crhookBin = os.Getenv("CRHOOK_TEST_BIN")
	if crhookBin == "" {
		crhookBin = filepath.Join(d, "crhook")
		cmd := exec.Command("go", "build", "-o", crhookBin, "./cmd/crhook")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build crhook: %w\n%s", err, out)
		}
	}
	rootfsDir = filepath.Join(d, "rootfs")
	for _, sub := range []string{"bin", "data", "proc", "sys", "dev", "tmp", "var/log"} {
		if err := os.MkdirAll(filepath.Join(rootfsDir, sub), 0o755); err != nil {
			return err
		}
	}
	if out, err := exec.Command("cp", "/bin/busybox", filepath.Join(rootfsDir, "bin/busybox")).CombinedOutput(); err != nil {
		return fmt.Errorf("copy busybox: %w: %s", err, out)
	}
	if out, err := exec.Command("chroot", rootfsDir, "/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		return fmt.Errorf("busybox --install: %w: %s", err, out)
	}
	counter := crtest.BuildC(t, "counter", true)
	if out, err := exec.Command("cp", counter, filepath.Join(rootfsDir, "bin/counter")).CombinedOutput(); err != nil {
		return fmt.Errorf("copy counter: %w: %s", err, out)
	}
	return nil
}

// runner is one OCI runtime as the tests drive it.
type runner struct {
	name string // runc or crun
	root string // --root
	// argv0 runs the runtime; for crun on a hybrid cgroup host it enters
	// a mount namespace without the cgroup2 mount first (see crunArgv).
	argv0 []string
}

func newRunner(t *testing.T, name string) *runner {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (make deps installs it)", name)
	}
	r := &runner{name: name, root: t.TempDir(), argv0: []string{name}}
	if name == "crun" {
		r.argv0 = crunArgv()
	}
	return r
}

// crunArgv works around crun 1.8 refusing hybrid cgroup hosts ("cgroups
// in hybrid mode not supported, drop all controllers from cgroupv2")
// when the cgroup2 mount has controllers (hugetlb here): crun then runs
// in a mount namespace where /sys/fs/cgroup/unified is unmounted, so it
// sees a v1-only host. Container state, kill and delete work from the
// host namespace all the same.
func crunArgv() []string {
	b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	if err != nil || strings.TrimSpace(string(b)) == "" {
		return []string{"crun"}
	}
	return []string{"unshare", "-m", "sh", "-c", `umount /sys/fs/cgroup/unified && exec crun "$@"`, "crun"}
}

func (r *runner) cmd(args ...string) *exec.Cmd {
	a := append(append([]string{}, r.argv0...), append([]string{"--root", r.root}, args...)...)
	return exec.Command(a[0], a[1:]...)
}

func (r *runner) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := r.cmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", r.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// container is one container of a bundle.
type container struct {
	r      *runner
	id     string
	bundle string
	data   string // host dir bind-mounted at /data
}

// newBundle makes a bundle with a fresh copy of the rootfs, a config from
// `runc spec` running args, and DATA bind-mounted at /data.
func newBundle(t *testing.T, args ...string) (bundle, data string) {
	t.Helper()
	bundle = filepath.Join(t.TempDir(), "bundle")
	data = filepath.Join(t.TempDir(), "data")
	for _, d := range []string{bundle, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", rootfsDir, filepath.Join(bundle, "rootfs")).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v: %s", err, out)
	}
	if out, err := exec.Command("runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	editSpec(t, bundle, func(s *specs.Spec) {
		s.Process.Args = args
		s.Process.Terminal = false
		s.Root.Readonly = false
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "rw"}})
	})
	return bundle, data
}

func editSpec(t *testing.T, bundle string, f func(*specs.Spec)) {
	t.Helper()
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	f(&s)
	if b, err = json.MarshalIndent(&s, "", "\t"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs a detached container with stdio on /dev/null. A detached
// runtime passes its own stdio through to the container, so the
// runtime's errors go to a --log file instead, read on failure.
func (r *runner) start(t *testing.T, id, bundle, data string) (*container, error) {
	return r.startStdio(t, id, bundle, data, nil)
}

// startStdio is start with the container's stdout and stderr on out.
func (r *runner) startStdio(t *testing.T, id, bundle, data string, out *os.File) (*container, error) {
	t.Helper()
	c := &container{r: r, id: id, bundle: bundle, data: data}
	logFile := filepath.Join(t.TempDir(), "runtime.log")
	cmd := r.cmd("--log", logFile, "run", "-d", "--bundle", bundle, id)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if out == nil {
		out = null
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, out, out
	t.Cleanup(func() { c.destroy() })
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(logFile)
		return c, fmt.Errorf("%s run %s: %w: %s", r.name, id, err, strings.TrimSpace(string(msg)))
	}
	return c, nil
}

func (r *runner) mustStart(t *testing.T, id, bundle, data string) *container {
	t.Helper()
	c, err := r.start(t, id, bundle, data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *container) destroy() {
	c.r.cmd("kill", c.id, "KILL").Run()
	for i := 0; i < 50; i++ {
		if c.r.cmd("delete", "-f", c.id).Run() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type ociState struct {
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

func (c *container) state(t *testing.T) ociState {
	t.Helper()
	var st ociState
	out := c.r.mustRun(t, "state", c.id)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%s state %s: %v: %s", c.r.name, c.id, err, out)
	}
	return st
}

func (c *container) waitStatus(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := c.state(t)
		if st.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %s after %v, want %s", c.id, st.Status, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *container) delete(t *testing.T) {
	t.Helper()
	c.waitStatus(t, "stopped", 5*time.Second)
	c.r.mustRun(t, "delete", c.id)
}

// crhook runs the binary under test.
func crhook(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	// Bounded: a hung checkpoint fails the test instead of the run.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, crhookBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run crhook: %v", err)
	}
	return o.String(), e.String(), 0
}

func mustCrhook(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := crhook(t, "", args...)
	if code != 0 {
		t.Fatalf("crhook %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// logLines reads a counter log.
func logLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// counts returns the "count N" values of lines, in order.
func counts(lines []string) []uint64 {
	var out []uint64
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "count "); ok {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// waitCount waits until the log at path has a count of at least n past
// line `from`.
func waitCount(t *testing.T, path string, from int, n uint64, timeout time.Duration, why func() string) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lines := logLines(t, path)
		if len(lines) > from {
			if cs := counts(lines[from:]); len(cs) > 0 && cs[len(cs)-1] >= n {
				return lines
			}
		}
		if time.Now().After(deadline) {
			tail := lines
			if len(tail) > 5 {
				tail = tail[len(tail)-5:]
			}
			t.Fatalf("%s: no count >= %d past line %d after %v; log ends %q%s", path, n, from, timeout, tail, why())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastCount(t *testing.T, path string) uint64 {
	t.Helper()
	cs := counts(logLines(t, path))
	if len(cs) == 0 {
		t.Fatalf("%s has no count line", path)
	}
	return cs[len(cs)-1]
}

// restoreLog is the shim's log for failure messages.
func restoreLog(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "restore.log"))
	if err != nil {
		return "\n(no restore.log: " + err.Error() + ")"
	}
	return "\nrestore.log:\n" + string(b)
}
