//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The container workload: a runc container of a busybox-static rootfs
// whose init is the static counter of crcore/testdata (it appends
// "count N" to /data/log every 10 ms; /data is a host directory). crhook
// checkpoints it with `crhook checkpoint` and restores it through its
// createRuntime hook into a new container of the same bundle; CRIU goes
// through `runc --criu checkpoint` and `runc --criu restore -d`. Each
// tool has its own bundle (CRIU's has no hook). The restore wall runs
// from the runtime's start until the counter has counted on past the
// checkpointed value; install-hooks, which only edits config.json, is
// outside it. Peak RSS is the larger of the checkpoint command's
// (crhook, or runc with CRIU under it, children included) and the
// restorer's (crhook's hook shim; runc with CRIU).

// containerEnv is what the container runs need, made on first use.
type containerEnv struct {
	runc   string
	root   string // runc --root
	rootfs string // template: busybox, its applet links, counter
	err    error  // why container runs cannot be made
	done   bool
}

// containerSetup builds the rootfs template once per bench run.
func containerSetup(ctx context.Context, cfg *config) (*containerEnv, error) {
	e := &cfg.ctr
	if e.done {
		return e, e.err
	}
	e.done = true
	e.err = func() error {
		var err error
		if e.runc, err = exec.LookPath("runc"); err != nil {
			return fmt.Errorf("runc is not installed (make deps): %w", err)
		}
		busybox := "/bin/busybox"
		if _, err := os.Stat(busybox); err != nil {
			return fmt.Errorf("busybox-static is not installed (make deps): %w", err)
		}
		e.root = filepath.Join(cfg.work, "runc-root")
		e.rootfs = filepath.Join(cfg.work, "rootfs")
		for _, sub := range []string{"bin", "data", "proc", "sys", "dev", "tmp"} {
			if err := os.MkdirAll(filepath.Join(e.rootfs, sub), 0o755); err != nil {
				return err
			}
		}
		if err := copyFile(busybox, filepath.Join(e.rootfs, "bin/busybox")); err != nil {
			return err
		}
		if b, err := exec.CommandContext(ctx, "chroot", e.rootfs, "/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
			return fmt.Errorf("busybox --install: %w: %s", err, b)
		}
		return buildStatic(ctx, cfg.counterSrc, filepath.Join(e.rootfs, "bin/counter"))
	}()
	return e, e.err
}

// containerBundle makes (once per tool) a bundle running the counter,
// and empties its data directory.
func containerBundle(ctx context.Context, cfg *config, e *containerEnv, tool string) (bundle, data string, err error) {
	bundle = filepath.Join(cfg.work, "bundle-"+strings.ToLower(tool))
	data = filepath.Join(cfg.work, "data-"+strings.ToLower(tool))
	if err := os.RemoveAll(data); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return "", "", err
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err == nil {
		return bundle, data, nil
	}
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return "", "", err
	}
	if b, err := exec.CommandContext(ctx, "cp", "-a", e.rootfs, filepath.Join(bundle, "rootfs")).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("copy rootfs: %w: %s", err, b)
	}
	if b, err := exec.CommandContext(ctx, e.runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("runc spec: %w: %s", err, b)
	}
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return "", "", err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return "", "", fmt.Errorf("%s: %w", p, err)
	}
	s.Process.Args = []string{"/bin/counter", "/data/log"}
	s.Process.Terminal = false
	s.Root.Readonly = false
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "rw"}})
	if b, err = json.MarshalIndent(&s, "", "\t"); err != nil {
		return "", "", err
	}
	return bundle, data, os.WriteFile(p, b, 0o644)
}

func buildStatic(ctx context.Context, src, out string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args := []string{"-O2", "-Wall", "-Werror", "-static", "-o", out, src}
	if b, err := exec.CommandContext(ctx, "gcc", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// runcCmd runs runc with our state root, stdio on /dev/null (a detached
// container keeps the runtime's stdio).
func runcCmd(ctx context.Context, e *containerEnv, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, e.runc, append([]string{"--root", e.root}, args...)...)
	return c
}

func runcRun(ctx context.Context, e *containerEnv, args ...string) error {
	c := runcCmd(ctx, e, args...)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	c.Stdin, c.Stdout, c.Stderr = null, null, null
	logf := filepath.Join(e.root, "runc.log")
	os.Remove(logf)
	c.Args = append(c.Args[:1], append([]string{"--log", logf}, c.Args[1:]...)...)
	if err := c.Run(); err != nil {
		msg, _ := os.ReadFile(logf)
		return fmt.Errorf("runc %s: %w: %s", args[0], err, lastLine(msg))
	}
	return nil
}

// containerGone kills and deletes the container if it exists, and reaps
// what it leaves to us (we are the subreaper of its init).
func containerGone(e *containerEnv, id string) {
	runcCmd(context.Background(), e, "kill", id, "KILL").Run()
	for i := 0; i < 100; i++ {
		if runcCmd(context.Background(), e, "delete", "-f", id).Run() == nil {
			break
		}
		if _, err := os.Stat(filepath.Join(e.root, id)); errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := reapAll(10 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "bench: reap container:", err)
	}
}

// waitDeleted deletes a container once its runtime says it stopped.
func waitDeleted(ctx context.Context, e *containerEnv, id string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := runcCmd(ctx, e, "state", id).Output()
		if err != nil {
			return nil // gone already (runc checkpoint destroys it)
		}
		var st struct{ Status string }
		if json.Unmarshal(out, &st) == nil && st.Status == "stopped" {
			if b, err := runcCmd(ctx, e, "delete", id).CombinedOutput(); err != nil {
				return fmt.Errorf("runc delete %s: %w: %s", id, err, lastLine(b))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s is still %s after its checkpoint", id, st.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// counts returns the "count N" values of the log past line from, and
// whether a "ready" line (a fresh start) is among them.
func logCounts(path string, from int) (cs []uint64, lines int, fresh bool) {
	b, _ := os.ReadFile(path)
	all := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(b) == 0 {
		all = nil
	}
	for i := from; i < len(all); i++ {
		if v, ok := strings.CutPrefix(all[i], "count "); ok {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				cs = append(cs, n)
			}
		}
		if strings.HasPrefix(all[i], "ready") {
			fresh = true
		}
	}
	return cs, len(all), fresh
}

// waitCounted waits until the log has a count >= n past line from.
func waitCounted(ctx context.Context, path string, from int, n uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if cs, _, _ := logCounts(path, from); len(cs) > 0 && cs[len(cs)-1] >= n {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the counter did not reach %d within %v", n, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	shimRe  = regexp.MustCompile(`shim=(\d+)`)
	totalRe = regexp.MustCompile(`msg=restored .*total=([0-9.]+[µmn]?s)`)
)

// shimStats waits (bounded) for the hook's shim, reparented to us, to
// exit and returns its peak RSS and the restore's own timer, both read
// from its log and its rusage.
func shimStats(imgDir string, limit time.Duration) (rssKiB int64, total time.Duration, err error) {
	b, err := os.ReadFile(filepath.Join(imgDir, "restore.log"))
	if err != nil {
		return 0, 0, err
	}
	if m := totalRe.FindSubmatch(b); m != nil {
		total, _ = time.ParseDuration(string(m[1]))
	}
	m := shimRe.FindSubmatch(b)
	if m == nil {
		return 0, total, errors.New("restore.log names no shim")
	}
	pid, _ := strconv.Atoi(string(m[1]))
	deadline := time.Now().Add(limit)
	for {
		var ws unix.WaitStatus
		var ru unix.Rusage
		p, err := unix.Wait4(pid, &ws, unix.WNOHANG, &ru)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, total, fmt.Errorf("wait for shim %d: %w", pid, err)
		case p == pid:
			return ru.Maxrss, total, nil
		}
		if time.Now().After(deadline) {
			return 0, total, fmt.Errorf("shim %d still running after %v", pid, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// runContainer is runOnce for the container workload.
func runContainer(ctx context.Context, cfg *config, w workload, tool string) (s sample, note string, err error) {
	e, err := containerSetup(ctx, cfg)
	if err != nil {
		return s, "not run: " + err.Error(), nil
	}
	tag := fmt.Sprintf("%s-%s", w.name, strings.ToLower(tool))
	imgDir := filepath.Join(cfg.images, tag)
	if err := os.RemoveAll(imgDir); err != nil {
		return s, "", err
	}
	defer os.RemoveAll(imgDir)
	bundle, data, err := containerBundle(ctx, cfg, e, tool)
	if err != nil {
		return s, "", err
	}
	logPath := filepath.Join(data, "log")
	id := fmt.Sprintf("crhook-bench-%d-%s", os.Getpid(), strings.ToLower(tool))
	containerGone(e, id)
	defer containerGone(e, id)

	if tool == toolCrhook {
		if b, err := exec.CommandContext(ctx, cfg.crhook, "install-hooks", bundle, "--no-restore").CombinedOutput(); err != nil {
			return s, "", fmt.Errorf("crhook install-hooks: %w: %s", err, lastLine(b))
		}
	}
	if err := runcRun(ctx, e, "run", "-d", "--bundle", bundle, id); err != nil {
		return s, "", err
	}
	if err := waitCounted(ctx, logPath, 0, 50, 30*time.Second); err != nil {
		return s, "", fmt.Errorf("start: %w", err)
	}

	dstats := filepath.Join(cfg.work, tag+".dump-stats.json")
	var dargs []string
	switch tool {
	case toolCrhook:
		dargs = []string{cfg.crhook, "checkpoint", id, "-D", imgDir, "--root", e.root, "--stats", dstats}
		if cfg.debugLogs != "" {
			dargs = append(dargs, "--log-level", "debug", "--log-file", filepath.Join(cfg.debugLogs, tag+".crhook-checkpoint.log"))
		}
	case toolCRIU:
		dargs = []string{e.runc, "--root", e.root, "--criu", cfg.criu, "checkpoint", "--image-path", imgDir,
			"--work-path", filepath.Join(cfg.criuLogs(), tag+"-work"), id}
		if err := os.MkdirAll(filepath.Join(cfg.criuLogs(), tag+"-work"), 0o700); err != nil {
			return s, "", err
		}
	}
	dw, drss, derr := timed(ctx, cfg.cmdLimit, dargs)
	if derr != nil {
		if tool == toolCRIU {
			return s, "not run: runc checkpoint with CRIU failed: " + derr.Error() + criuLogTail(cfg, tag, "dump.log"), nil
		}
		return s, "", fmt.Errorf("checkpoint: %w", derr)
	}
	s.dumpWall, s.rssKiB = dw, drss
	if s.imageBytes, err = imageBytes(imgDir); err != nil {
		return s, "", err
	}
	// CRIU writes its stats in its work directory.
	if err := s.dumpStats(tool, dstats, filepath.Join(cfg.criuLogs(), tag+"-work", "stats-dump")); err != nil {
		return s, "", err
	}
	if err := waitDeleted(ctx, e, id); err != nil {
		return s, "", err
	}
	if err := reapAll(10 * time.Second); err != nil {
		return s, "", err
	}
	cs, from, _ := logCounts(logPath, 0)
	if len(cs) == 0 {
		return s, "", errors.New("the counter logged no count")
	}
	n0 := cs[len(cs)-1]

	t0 := time.Now()
	var rrss int64
	switch tool {
	case toolCrhook:
		if b, err := exec.CommandContext(ctx, cfg.crhook, "install-hooks", bundle, "--images", imgDir).CombinedOutput(); err != nil {
			return s, "", fmt.Errorf("crhook install-hooks: %w: %s", err, lastLine(b))
		}
		t0 = time.Now()
		if err := runcRun(ctx, e, "run", "-d", "--bundle", bundle, id); err != nil {
			return s, "", fmt.Errorf("restore: %w%s", err, shimLogTail(imgDir))
		}
	case toolCRIU:
		rw := filepath.Join(cfg.criuLogs(), tag+"-rwork")
		if err := os.MkdirAll(rw, 0o700); err != nil {
			return s, "", err
		}
		rargs := []string{e.runc, "--root", e.root, "--criu", cfg.criu, "restore", "-d", "--image-path", imgDir,
			"--work-path", rw, "--bundle", bundle, id}
		_, rss, err := timed(ctx, cfg.cmdLimit, rargs)
		if err != nil {
			return s, "not run: runc restore with CRIU failed: " + err.Error() + criuLogTail(cfg, tag+"-r", "restore.log"), nil
		}
		rrss = rss
	}
	if err := waitCounted(ctx, logPath, from, n0+1, 30*time.Second); err != nil {
		return s, "", fmt.Errorf("restore: %w%s", err, shimLogTail(imgDir))
	}
	s.restoreWall = time.Since(t0)
	cs, _, fresh := logCounts(logPath, from)
	if fresh || cs[0] != n0+1 {
		return s, "", fmt.Errorf("restored counter began at %d (fresh start: %v), want %d", cs[0], fresh, n0+1)
	}
	switch tool {
	case toolCrhook:
		var err error
		if rrss, s.restoreIn, err = shimStats(imgDir, 10*time.Second); err != nil {
			return s, "", err
		}
	case toolCRIU:
		if st, err := readCRIUStats(filepath.Join(cfg.criuLogs(), tag+"-rwork", "stats-restore")); err == nil {
			s.restoreIn = time.Duration(st.GetRestore().GetRestoreTime()) * time.Microsecond
		}
	}
	s.rssKiB = max(s.rssKiB, rrss)
	return s, "", nil
}

func shimLogTail(imgDir string) string {
	b, err := os.ReadFile(filepath.Join(imgDir, "restore.log"))
	if err != nil {
		return ""
	}
	return "; restore.log: " + lastLine(b)
}

// criuLogTail quotes the last error line of CRIU's log in runc's work
// directory.
func criuLogTail(cfg *config, tag, name string) string {
	dir := filepath.Join(cfg.criuLogs(), tag+"-work")
	if strings.HasSuffix(tag, "-r") {
		dir = filepath.Join(cfg.criuLogs(), strings.TrimSuffix(tag, "-r")+"-rwork")
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	var last string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error") || strings.Contains(l, "error") {
			last = strings.TrimSpace(l)
		}
	}
	if last == "" {
		return ""
	}
	return " (criu " + name + ": " + last + ")"
}
