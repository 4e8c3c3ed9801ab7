//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The states runc 1.1.5 and crun 1.8.1 hand their hooks (captured here).
func TestParseHookState(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     HookState
		root     string
	}{
		{"runc createRuntime",
			`{"ociVersion":"1.0.2-dev","id":"r2","status":"creating","pid":1148,"bundle":"/tmp/exp/b2","annotations":{"io.crhook.restore":"/tmp/x"}}`,
			HookState{Version: "1.0.2-dev", ID: "r2", Status: "creating", Pid: 1148, Bundle: "/tmp/exp/b2", Annotations: map[string]string{"io.crhook.restore": "/tmp/x"}}, ""},
		{"crun createRuntime",
			`{"ociVersion":"1.0","id":"c2","pid":1990,"root":"rootfs","bundle":"/tmp/exp/b2","status":"created","annotations":{"io.crhook.restore":"/tmp/x"}}`,
			HookState{Version: "1.0", ID: "c2", Status: "created", Pid: 1990, Root: "rootfs", Bundle: "/tmp/exp/b2", Annotations: map[string]string{"io.crhook.restore": "/tmp/x"}}, "/tmp/exp/b2/rootfs"},
		{"crun startContainer",
			`{"ociVersion":"1.0","id":"c2","pid":0,"root":"/abs/rootfs","bundle":"/b","status":"starting"}`,
			HookState{Version: "1.0", ID: "c2", Status: "starting", Root: "/abs/rootfs", Bundle: "/b"}, "/abs/rootfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseHookState([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
			if got.RootPath() != tc.root {
				t.Errorf("RootPath %q, want %q", got.RootPath(), tc.root)
			}
		})
	}
	for _, bad := range []string{"", "{", "[]", `{"id":"a"}`, `{"bundle":"/b"}`, `{"id":"a","bundle":"b"}`, `{"id":"a","bundle":"/b","pid":-1}`, `{"id":"a","bundle":"/b","pid":"x"}`} {
		if _, err := ParseHookState([]byte(bad)); !errors.Is(err, ErrBadHookState) {
			t.Errorf("ParseHookState(%q): %v, want ErrBadHookState", bad, err)
		}
	}
	if _, err := ReadHookState(strings.NewReader(strings.Repeat(" ", maxHookState+5))); !errors.Is(err, ErrBadHookState) {
		t.Errorf("oversized state: %v", err)
	}
}

func TestParseContainerState(t *testing.T) {
	crun := `{"ociVersion":"1.0.0","id":"c2","pid":1990,"status":"running","bundle":"/tmp/b2","rootfs":"rootfs","created":"2026-11-26T19:22:44.618826Z","systemd-scope":"","owner":"root","annotations":{"a":"b"}}`
	st, err := ParseContainerState([]byte(crun))
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != "c2" || st.Pid != 1990 || st.Status != specs.StateRunning || st.Bundle != "/tmp/b2" || st.Rootfs != "/tmp/b2/rootfs" || st.Annotations["a"] != "b" || st.Owner != "root" {
		t.Errorf("crun state: %+v", st)
	}
	runc := `{"ociVersion":"1.0.2-dev","id":"c1","pid":23947,"status":"running","bundle":"/tmp/exp/b","rootfs":"/tmp/exp/b/rootfs","created":"2026-11-26T19:20:29.877220986Z","owner":""}`
	if st, err = ParseContainerState([]byte(runc)); err != nil || st.Pid != 23947 || st.Rootfs != "/tmp/exp/b/rootfs" {
		t.Errorf("runc state: %+v, %v", st, err)
	}
	if _, err := ParseContainerState([]byte(`{}`)); err == nil {
		t.Error("a state without id was accepted")
	}
}

func TestStateFromDir(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "r1"), 0o700)
	os.WriteFile(filepath.Join(root, "r1", "state.json"), []byte(fmt.Sprintf(`{"id":"r1","init_process_pid":%d,"config":{"rootfs":"/b/rootfs","labels":["bundle=/b"]}}`, os.Getpid())), 0o600)
	r := &Runtime{Name: Runc, Binary: "/nonexistent/runc", Root: root}
	st, err := r.stateFromDir("r1")
	if err != nil || st.Bundle != "/b" || st.Pid != os.Getpid() || st.Status != specs.StateRunning {
		t.Errorf("runc dir state: %+v, %v", st, err)
	}
	os.MkdirAll(filepath.Join(root, "c1"), 0o700)
	os.WriteFile(filepath.Join(root, "c1", "status"), []byte(`{"pid":999999999,"bundle":"/cb","rootfs":"/cb/rootfs"}`), 0o600)
	r = &Runtime{Name: Crun, Root: root}
	st, err = r.stateFromDir("c1")
	if err != nil || st.Bundle != "/cb" || st.Status != specs.StateStopped {
		t.Errorf("crun dir state: %+v, %v", st, err)
	}
}

func TestParseCgroups(t *testing.T) {
	in := "9:name=systemd:/c1\n6:freezer:/c1\n2:cpu,cpuacct:/x\n0::/c1\n"
	cg, err := ParseCgroups([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if cg.V1["freezer"] != "/c1" || cg.V1["cpu"] != "/x" || cg.V1["cpuacct"] != "/x" || cg.V1["name=systemd"] != "/c1" || !cg.HasUnified || cg.Unified != "/c1" {
		t.Errorf("%+v", cg)
	}
	if _, err := ParseCgroups([]byte("garbage\n")); err == nil {
		t.Error("garbage accepted")
	}
	v2, _ := ParseCgroups([]byte("0::/user.slice\n"))
	if len(v2.V1) != 0 || v2.Unified != "/user.slice" {
		t.Errorf("pure v2: %+v", v2)
	}
}

func TestParseMounts(t *testing.T) {
	in := `30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
36 30 0:32 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 30 0:32 /sub /mnt/freezer\040sub rw - cgroup cgroup rw,freezer
`
	m := ParseMounts([]byte(in))
	if m.V1["freezer"] != "/sys/fs/cgroup/freezer" || m.V1["cpu"] != "/sys/fs/cgroup/cpu" || m.V1["name=systemd"] != "/sys/fs/cgroup/systemd" || m.Unified != "/sys/fs/cgroup/unified" {
		t.Errorf("%+v", m)
	}
	if unescapeMount(`/a\040b`) != "/a b" {
		t.Error("unescape")
	}
}

// busyCgroup makes a new cgroup named name-PID under mount with a busy
// shell in it, removed (thawed, the shell killed) at test end. It skips
// without root or without the hierarchy.
func busyCgroup(t *testing.T, mount, name string, newFreezer func(string) Freezer) (string, *exec.Cmd) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	if _, err := os.Stat(mount); err != nil {
		t.Skipf("%s is not mounted here", mount)
	}
	dir := filepath.Join(mount, fmt.Sprintf("%s-%d", name, os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		newFreezer(dir).Thaw()
		cmd.Wait()
		for i := 0; i < 100 && os.Remove(dir) != nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	return dir, cmd
}

// freezeCase puts a sleeping child into a new cgroup under mount and
// checks freeze and thaw with real tasks.
func freezeCase(t *testing.T, mount string, newFreezer func(string) Freezer) {
	dir, cmd := busyCgroup(t, mount, "crhook-test", newFreezer)
	f := newFreezer(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Frozen(); !ok || err != nil {
		t.Fatalf("Frozen after Freeze: %v %v", ok, err)
	}
	// Frozen: no CPU time accrues.
	u0 := cpuTime(t, cmd.Process.Pid)
	time.Sleep(100 * time.Millisecond)
	if u1 := cpuTime(t, cmd.Process.Pid); u1 != u0 {
		t.Errorf("frozen task ran: utime+stime %s -> %s", u0, u1)
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.Frozen(); ok {
		t.Error("still frozen after Thaw")
	}
	time.Sleep(100 * time.Millisecond)
	if u1 := cpuTime(t, cmd.Process.Pid); u1 == u0 {
		t.Error("thawed task does not run")
	}
}

func cpuTime(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	return f[11] + "+" + f[12]
}

func TestFreezeV1(t *testing.T) {
	m, err := ReadMounts()
	if err != nil {
		t.Fatal(err)
	}
	if m.V1["freezer"] == "" {
		t.Skip("no v1 freezer hierarchy mounted")
	}
	freezeCase(t, m.V1["freezer"], NewV1Freezer)
}

func TestFreezeV2(t *testing.T) {
	m, err := ReadMounts()
	if err != nil {
		t.Fatal(err)
	}
	if m.Unified == "" {
		t.Skip("no cgroup2 hierarchy mounted")
	}
	freezeCase(t, m.Unified, NewV2Freezer)
}

func TestFreezerForRefusesOwnCgroup(t *testing.T) {
	// A child in our own cgroups: freezing it would freeze us.
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := FreezerFor(cmd.Process.Pid); !errors.Is(err, ErrNoFreezer) {
		t.Errorf("FreezerFor a process of our own cgroup: %v, want ErrNoFreezer", err)
	}
}

func TestPidNSAndTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 10 & sleep 10 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		exec.Command("pkill", "-KILL", "-P", fmt.Sprint(cmd.Process.Pid)).Run()
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var tree []int
	for i := 0; i < 100; i++ {
		var err error
		if tree, err = Tree(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if len(tree) == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(tree) != 3 {
		t.Fatalf("tree of sh with two children: %v", tree)
	}
	all, err := PidNSTasks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if out := Outside(tree, all); len(out) != 0 {
		t.Errorf("tree members outside our pid namespace: %v", out)
	}
	if out := Outside(all, tree); len(out) == 0 {
		t.Error("nothing outside the tree in the whole namespace")
	}
	if d := Describe(cmd.Process.Pid); !strings.Contains(d, "sleep 10 & sleep 10") {
		t.Errorf("Describe: %q", d)
	}
}

func TestLockSerializes(t *testing.T) {
	LockDir = t.TempDir()
	unlock, err := Lock(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, "c1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: %v", err)
	}
	other, err := Lock(context.Background(), "c2")
	if err != nil {
		t.Fatalf("another container's lock: %v", err)
	}
	other()
	var wg sync.WaitGroup
	got := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		u, err := Lock(context.Background(), "c1")
		if err == nil {
			close(got)
			u()
		}
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-got:
		t.Fatal("lock taken while held")
	default:
	}
	unlock()
	wg.Wait()
	for _, bad := range []string{"", "..", "a/b"} {
		if _, err := Lock(context.Background(), bad); err == nil {
			t.Errorf("Lock(%q) accepted", bad)
		}
	}
}

func TestConfigDigest(t *testing.T) {
	s := &specs.Spec{Version: "1.0.2", Process: &specs.Process{Args: []string{"/bin/counter"}}, Annotations: map[string]string{"x": "y"}}
	d0, err := ConfigDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	s2 := *s
	s2.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/bin/crhook", Args: []string{"crhook", "hook"}}}}
	s2.Annotations = map[string]string{"x": "y", RestoreAnnotation: "/img", ConfigCheckAnnotation: "warn"}
	if d, _ := ConfigDigest(&s2); d != d0 {
		t.Error("hooks and crhook's annotations change the digest")
	}
	if s2.Annotations[RestoreAnnotation] != "/img" {
		t.Error("ConfigDigest changed its argument")
	}
	s3 := *s
	s3.Process = &specs.Process{Args: []string{"/bin/other"}}
	if d, _ := ConfigDigest(&s3); d == d0 {
		t.Error("a different entrypoint has the same digest")
	}
}

func TestCheckpointMeta(t *testing.T) {
	dir := t.TempDir()
	c := &Checkpoint{Version: 1, ID: "c", Runtime: Runc, Bundle: "/b", ConfigDigest: "sha256:1", Stdio: ReadStdio(os.Getpid())}
	if err := WriteCheckpoint(dir, c); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, MetaFile))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s is %v, want 0600", MetaFile, fi.Mode())
	}
	got, err := ReadCheckpoint(dir)
	if err != nil || got.ConfigDigest != "sha256:1" || len(got.Stdio) != 3 {
		t.Errorf("%+v %v", got, err)
	}
	if _, err := ReadCheckpoint(t.TempDir()); !errors.Is(err, ErrNoMeta) {
		t.Errorf("missing meta: %v", err)
	}
}
