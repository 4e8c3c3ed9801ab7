//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	toolCrhook = "crhook"
	toolCRIU   = "CRIU"
)

// workload is one target kind: memhog with its arguments.
type workload struct {
	name  string
	label string
	mib   int
	procs int
	thr   int
	// container: a runc container instead of memhog (container.go).
	container bool
}

func workloads(mibs []int) []workload {
	var w []workload
	for _, n := range mibs {
		w = append(w, workload{name: fmt.Sprintf("memhog%d", n), label: fmt.Sprintf("memhog %d MiB", n), mib: n, procs: 1, thr: 1})
	}
	w = append(w,
		workload{name: "tree200", label: "tree of 200 processes", mib: 1, procs: 200, thr: 1},
		workload{name: "threads1000", label: "1000 threads", mib: 1, procs: 1, thr: 1000},
		workload{name: "container", label: "busybox container", procs: 1, thr: 1, container: true},
	)
	return w
}

// sample is the outcome of one dump and restore.
type sample struct {
	dumpWall    time.Duration
	frozen      time.Duration
	restoreWall time.Duration
	imageBytes  int64
	rssKiB      int64 // the larger of the dump's and the restore's peak RSS
	// Phases, from the tools' own stats.
	memDump    time.Duration // crhook memory_ns; CRIU memdump+memwrite
	restoreIn  time.Duration // crhook total_ns of restore; CRIU restore_time
	pagesWrote uint64
}

// dumpStats fills the dump's phases of s from the tool's own stats:
// crhook's --stats file, or CRIU's stats-dump.
func (s *sample) dumpStats(tool, crhookStats, criuStats string) error {
	switch tool {
	case toolCrhook:
		st, err := readCrhookStats(crhookStats)
		if err != nil {
			return err
		}
		s.frozen, s.memDump, s.pagesWrote = time.Duration(st.FrozenNs), time.Duration(st.MemoryNs), st.PagesWritten
	case toolCRIU:
		st, err := readCRIUStats(criuStats)
		if err != nil {
			return err
		}
		d := st.GetDump()
		if d == nil {
			return errors.New("CRIU stats-dump: no dump entry")
		}
		us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
		s.frozen = us(d.GetFreezingTime()) + us(d.GetFrozenTime())
		s.memDump = us(d.GetMemdumpTime()) + us(d.GetMemwriteTime())
		s.pagesWrote = d.GetPagesWritten()
	}
	return nil
}

type result struct {
	w       workload
	tool    string
	samples []sample
	// note replaces the figures: "not supported yet", an error.
	note string
}

func benchWorkload(ctx context.Context, cfg *config, w workload, tools []string) []*result {
	byTool := map[string]*result{}
	var out []*result
	for _, t := range tools {
		r := &result{w: w, tool: t}
		byTool[t] = r
		out = append(out, r)
	}
	for i := 0; i < cfg.runs; i++ {
		order := tools
		if i%2 == 1 {
			order = reversed(tools)
		}
		for _, t := range order {
			r := byTool[t]
			if r.note != "" {
				continue
			}
			if ctx.Err() != nil {
				return out
			}
			fmt.Fprintf(os.Stderr, "bench: %s %s run %d/%d\n", w.label, t, i+1, cfg.runs)
			s, note, err := runOnce(ctx, cfg, w, t, i == 0 && cfg.verify)
			switch {
			case err != nil:
				r.note = "error: " + err.Error()
				fmt.Fprintf(os.Stderr, "bench: %s %s: %v\n", w.label, t, err)
			case note != "":
				r.note = note
			default:
				r.samples = append(r.samples, s)
			}
		}
	}
	return out
}

func reversed(s []string) []string {
	r := make([]string, len(s))
	for i, v := range s {
		r[len(s)-1-i] = v
	}
	return r
}

// runOnce starts the workload, dumps it with tool, restores it, checks
// it runs, kills it. A tool's "not supported" comes back as note.
func runOnce(ctx context.Context, cfg *config, w workload, tool string, verify bool) (s sample, note string, err error) {
	if w.container {
		return runContainer(ctx, cfg, w, tool)
	}
	tag := fmt.Sprintf("%s-%s", w.name, strings.ToLower(tool))
	logf := filepath.Join(cfg.work, tag+".log")
	imgDir := filepath.Join(cfg.images, tag)
	for _, p := range []string{logf, imgDir} {
		if err := os.RemoveAll(p); err != nil {
			return s, "", err
		}
	}
	defer os.RemoveAll(imgDir)

	target, err := startTarget(ctx, cfg, w, logf)
	if err != nil {
		return s, "", err
	}
	pid := target.Process.Pid
	// reapTarget kills what is left of the original tree and reaps it;
	// it runs before any restore and, on failure, on the way out.
	reaped := false
	reapTarget := func() error {
		if reaped {
			return nil
		}
		reaped = true
		unix.Kill(-pid, unix.SIGKILL)
		unix.Kill(pid, unix.SIGKILL)
		target.Wait()
		return reapAll(10 * time.Second)
	}
	defer reapTarget()

	if tool == toolCRIU {
		if err := os.Mkdir(imgDir, 0o700); err != nil {
			return s, "", err
		}
	}
	dstats := filepath.Join(cfg.work, tag+".dump-stats.json")
	rstats := filepath.Join(cfg.work, tag+".restore-stats.json")
	var dargs, rargs []string
	switch tool {
	case toolCrhook:
		dargs = []string{cfg.crhook, "dump", "-t", strconv.Itoa(pid), "-D", imgDir, "--stats", dstats}
		rargs = []string{cfg.crhook, "restore", "-D", imgDir, "-d", "--stats", rstats}
		if cfg.debugLogs != "" {
			dargs = append(dargs, "--log-level", "debug", "--log-file", filepath.Join(cfg.debugLogs, tag+".crhook-dump.log"))
			rargs = append(rargs, "--log-level", "debug", "--log-file", filepath.Join(cfg.debugLogs, tag+".crhook-restore.log"))
		}
	case toolCRIU:
		dargs = []string{cfg.criu, "dump", "-t", strconv.Itoa(pid), "-D", imgDir,
			"-o", filepath.Join(cfg.criuLogs(), tag+".criu-dump.log")}
		rargs = []string{cfg.criu, "restore", "-D", imgDir, "-d",
			"-o", filepath.Join(cfg.criuLogs(), tag+".criu-restore.log")}
	}

	dw, drss, derr := timed(ctx, cfg.cmdLimit, dargs)
	if derr != nil {
		if tool == toolCrhook && strings.Contains(derr.Error(), "not supported") {
			fmt.Fprintf(os.Stderr, "bench: %s: crhook: %v\n", w.label, derr)
			return s, "not supported yet", nil
		}
		return s, "", fmt.Errorf("dump: %w", derr)
	}
	s.dumpWall, s.rssKiB = dw, drss
	if s.imageBytes, err = imageBytes(imgDir); err != nil {
		return s, "", err
	}
	if err := s.dumpStats(tool, dstats, filepath.Join(imgDir, "stats-dump")); err != nil {
		return s, "", err
	}

	// The dump killed the tree; make sure, reap it, wait for its pids.
	if err := reapTarget(); err != nil {
		return s, "", err
	}
	if err := waitPidFree(pid, 5*time.Second); err != nil {
		return s, "", err
	}

	rw, rrss, rerr := timed(ctx, cfg.cmdLimit, rargs)
	// Whatever happened, nothing restored may outlive this run.
	defer killTree(pid)
	if rerr != nil {
		return s, "", fmt.Errorf("restore: %w", rerr)
	}
	s.restoreWall, s.rssKiB = rw, max(s.rssKiB, rrss)
	if err := checkRestored(pid, w); err != nil {
		return s, "", err
	}
	switch tool {
	case toolCrhook:
		st, err := readCrhookStats(rstats)
		if err != nil {
			return s, "", err
		}
		s.restoreIn = time.Duration(st.TotalNs)
	case toolCRIU:
		if st, err := readCRIUStats(filepath.Join(imgDir, "stats-restore")); err == nil {
			s.restoreIn = time.Duration(st.GetRestore().GetRestoreTime()) * time.Microsecond
		}
	}
	if verify {
		if err := verifyMemory(pid, logf, w); err != nil {
			return s, "", err
		}
	}
	return s, "", nil
}

// startTarget starts memhog in its own session, stdio on /dev/null, and
// waits for its "ready".
func startTarget(ctx context.Context, cfg *config, w workload, logf string) (*exec.Cmd, error) {
	c := exec.Command(cfg.memhog, logf, strconv.Itoa(w.mib), strconv.Itoa(w.procs), strconv.Itoa(w.thr))
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return nil, err
	}
	// Filling fresh memory runs near 1 GB/s on this machine kind.
	limit := 30*time.Second + time.Duration(w.mib)*20*time.Millisecond
	if err := waitLine(ctx, logf, "ready", 1, limit); err != nil {
		unix.Kill(-c.Process.Pid, unix.SIGKILL)
		unix.Kill(c.Process.Pid, unix.SIGKILL)
		c.Wait()
		reapAll(10 * time.Second)
		return nil, fmt.Errorf("start %s: %w", w.label, err)
	}
	return c, nil
}

// timed runs argv and returns its wall time and peak RSS in KiB.
func timed(ctx context.Context, limit time.Duration, argv []string) (time.Duration, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	c.Stdout = &stderr
	t0 := time.Now()
	err := c.Run()
	wall := time.Since(t0)
	if err != nil {
		return wall, 0, fmt.Errorf("%s %s: %w: %s", filepath.Base(argv[0]), argv[1], err, lastLine(stderr.Bytes()))
	}
	var rss int64
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	return wall, rss, nil
}

// reapAll reaps our children until none is left. Precondition: no
// exec.Cmd of ours is still to be waited for (it would be reaped here).
func reapAll(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return os.NewSyscallError("wait4", err)
		case p > 0:
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("children still running after %v", limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// killTree kills a restored tree (root pid, its process group) and reaps
// it: once the restorer exits, its members are our children.
func killTree(pid int) {
	unix.Kill(-pid, unix.SIGKILL)
	unix.Kill(pid, unix.SIGKILL)
	if err := reapAll(10 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "bench: reap restored tree:", err)
	}
}

func waitPidFree(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still taken after %v", pid, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkRestored checks that the restored tree runs and has the shape
// of the workload: its processes and the root's threads.
func checkRestored(pid int, w workload) error {
	if err := checkRunning(pid); err != nil {
		return err
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("restored pid %d: %w", pid, err)
	}
	if len(tasks) != w.thr {
		return fmt.Errorf("restored pid %d has %d threads, want %d", pid, len(tasks), w.thr)
	}
	procs, err := countTree(pid, 0)
	if err != nil {
		return err
	}
	if procs != w.procs {
		return fmt.Errorf("restored tree of pid %d has %d processes, want %d", pid, procs, w.procs)
	}
	return nil
}

// countTree counts pid and its descendants, each checked running.
func countTree(pid, depth int) (int, error) {
	if depth > 64 {
		return 0, fmt.Errorf("process tree deeper than %d", depth)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0, fmt.Errorf("restored pid %d: %w", pid, err)
	}
	n := 1
	for _, f := range strings.Fields(string(b)) {
		c, err := strconv.Atoi(f)
		if err != nil {
			return 0, fmt.Errorf("pid %d children: %w", pid, err)
		}
		if err := checkRunning(c); err != nil {
			return 0, err
		}
		k, err := countTree(c, depth+1)
		if err != nil {
			return 0, err
		}
		n += k
	}
	return n, nil
}

func checkRunning(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return fmt.Errorf("restored pid %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return fmt.Errorf("restored pid %d: bad stat", pid)
	}
	if st := b[i+2]; st == 'Z' || st == 'X' || st == 't' || st == 'T' {
		return fmt.Errorf("restored pid %d: state %c", pid, st)
	}
	return nil
}

// verifyMemory asks the restored root to rehash its memory.
func verifyMemory(pid int, logf string, w workload) error {
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		return fmt.Errorf("signal restored pid %d: %w", pid, err)
	}
	limit := 30*time.Second + time.Duration(w.mib)*20*time.Millisecond
	if err := waitLine(context.Background(), logf, "check ", 1, limit); err != nil {
		return fmt.Errorf("restored pid %d: %w", pid, err)
	}
	b, err := os.ReadFile(logf)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte("check ok")) {
		return fmt.Errorf("restored pid %d: memory differs from the dumped one", pid)
	}
	return nil
}

// waitLine waits until logf has n lines starting with prefix.
func waitLine(ctx context.Context, logf, prefix string, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if b, err := os.ReadFile(logf); err == nil {
			got := 0
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, prefix) {
					got++
				}
			}
			if got >= n {
				return nil
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q line in %s within %v", prefix, filepath.Base(logf), limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// imageBytes sums the images in dir, leaving out CRIU's stats and logs.
func imageBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "stats-") || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}

// crhookStats mirrors the JSON of crcore.Stats.
type crhookStats struct {
	FrozenNs     int64  `json:"frozen_ns"`
	MemoryNs     int64  `json:"memory_ns"`
	TotalNs      int64  `json:"total_ns"`
	PagesWritten uint64 `json:"pages_written"`
}

func readCrhookStats(path string) (*crhookStats, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st crhookStats
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &st, nil
}

func buildMemhog(ctx context.Context, src, out string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args := []string{"-O2", "-Wall", "-Werror", "-static", "-pthread", "-o", out, src}
	if b, err := exec.CommandContext(ctx, "gcc", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
