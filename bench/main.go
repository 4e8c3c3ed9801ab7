// Command bench checkpoints and restores benchmark workloads with crhook
// and, when the environment names one in CRIU=/path/to/criu, with CRIU in
// the same invocation, and prints a Markdown table of medians with the
// ratio crhook/CRIU per figure.
//
// Runs alternate between the tools (crhook first on even runs, CRIU first
// on odd ones) so that drift of the machine hits both alike. Images go to
// a tmpfs mounted for the run. The driver is a child subreaper: every
// process it starts, and every process a restore creates, is its
// descendant, is killed after each run and reaped at once, so the pids a
// restore needs are free.
//
// Usage (as root, from the module root; `make bench` does this):
//
//	CRIU=/opt/criu-src/criu/criu go run ./bench -crhook bin/crhook [-runs 5] [-sizes 64,512,2048]
//
//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	crhook string
	criu   string
	memhog string // built executable
	// counterSrc is the container's init (container.go); ctr what the
	// container runs share.
	counterSrc string
	ctr        containerEnv
	work       string // temp dir: logs, stats, the tmpfs mount point
	images     string // tmpfs
	runs       int
	verify     bool
	cmdLimit   time.Duration
	// debugLogs, if set, keeps the tools' logs there (crhook at debug
	// level); otherwise CRIU's logs go to the temp dir, crhook's to
	// stderr, which ends in the error of a failed run.
	debugLogs string
}

func (c *config) criuLogs() string {
	if c.debugLogs != "" {
		return c.debugLogs
	}
	return c.work
}

func run() (retErr error) {
	var (
		crhookBin = flag.String("crhook", "bin/crhook", "crhook binary")
		src       = flag.String("memhog", "crcore/testdata/memhog.c", "source of the workload program")
		counter   = flag.String("counter", "crcore/testdata/counter.c", "source of the container workload's init (built static)")
		runs      = flag.Int("runs", 5, "runs per workload and tool (the median is reported)")
		sizes     = flag.String("sizes", "64,512,2048", "MiB of touched memory, one memhog workload each")
		only      = flag.String("only", "", "comma-separated workload names to run (default: all)")
		verify    = flag.Bool("verify", true, "after the first restore of each workload and tool, check the restored memory hash")
		out       = flag.String("o", "", "also write the table to this file")
		limit     = flag.Duration("timeout", 2*time.Minute, "limit for one dump or restore command")
		logs      = flag.String("logs", "", "keep the tools' logs in this directory, crhook's at debug level")
	)
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("needs root (ptrace, tmpfs mount, restore with the original pids)")
	}
	if *runs < 1 || *runs > 100 {
		return fmt.Errorf("-runs %d: want 1..100", *runs)
	}
	cfg := &config{runs: *runs, verify: *verify, cmdLimit: *limit, counterSrc: *counter}
	var err error
	if *logs != "" {
		if err := os.MkdirAll(*logs, 0o700); err != nil {
			return err
		}
		if cfg.debugLogs, err = filepath.Abs(*logs); err != nil {
			return err
		}
	}
	if cfg.crhook, err = filepath.Abs(*crhookBin); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.crhook); err != nil {
		return fmt.Errorf("crhook binary: %w (run make build)", err)
	}
	if c := os.Getenv("CRIU"); c != "" {
		if cfg.criu, err = filepath.Abs(c); err != nil {
			return err
		}
		if _, err := os.Stat(cfg.criu); err != nil {
			return fmt.Errorf("CRIU: %w", err)
		}
	}
	var mibs []int
	maxMiB := 0
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > 64<<10 {
			return fmt.Errorf("-sizes: bad size %q", s)
		}
		mibs = append(mibs, n)
		maxMiB = max(maxMiB, n)
	}

	// An fd inherited from our caller (make's jobserver, a shell's pipe)
	// would reach the workload and make it undumpable.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return os.NewSyscallError("close_range", err)
	}
	// Orphans (a restored tree once the restorer exits, the children of
	// a killed root) become our children and are reaped at once.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl PR_SET_CHILD_SUBREAPER", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	if cfg.work, err = os.MkdirTemp("", "crhook-bench-"); err != nil {
		return err
	}
	defer func() {
		if err := os.RemoveAll(cfg.work); err != nil && retErr == nil {
			retErr = err
		}
	}()
	// Run a copy: a `make build` elsewhere must not swap the binary
	// between runs.
	if err := copyFile(cfg.crhook, filepath.Join(cfg.work, "crhook")); err != nil {
		return err
	}
	cfg.crhook = filepath.Join(cfg.work, "crhook")
	cfg.memhog = filepath.Join(cfg.work, "memhog")
	if err := buildMemhog(ctx, *src, cfg.memhog); err != nil {
		return err
	}
	cfg.images = filepath.Join(cfg.work, "images")
	if err := os.Mkdir(cfg.images, 0o700); err != nil {
		return err
	}
	// One image at a time lives on the tmpfs (each is removed after its
	// restore); leave room for CRIU's and crhook's overheads.
	tmpfsMiB := 2*maxMiB + 512
	if err := unix.Mount("crhook-bench", cfg.images, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
		fmt.Sprintf("size=%dm,mode=0700", tmpfsMiB)); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", cfg.images, err)
	}
	defer func() {
		if err := unmount(cfg.images); err != nil && retErr == nil {
			retErr = err
		}
	}()

	wls := workloads(mibs)
	if *only != "" {
		keep := map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			keep[strings.TrimSpace(n)] = true
		}
		var sel []workload
		for _, w := range wls {
			if keep[w.name] {
				sel = append(sel, w)
			}
		}
		wls = sel
	}
	tools := []string{toolCrhook}
	if cfg.criu != "" {
		tools = append(tools, toolCRIU)
	} else {
		fmt.Fprintln(os.Stderr, "bench: CRIU is not set: crhook only, no ratios")
	}

	var results []*result
	for _, w := range wls {
		rs := benchWorkload(ctx, cfg, w, tools)
		results = append(results, rs...)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	table := renderTable(cfg, results)
	fmt.Print(table)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func unmount(dir string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			// Last resort: detach, so that no mount outlives us.
			if e := unix.Unmount(dir, unix.MNT_DETACH); e == nil {
				return nil
			}
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
