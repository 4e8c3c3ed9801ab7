package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/crhook/crhook/crcore"
	ocirt "github.com/crhook/crhook/runtime"
)

type checkpointOpts struct {
	id              string
	dir             string
	runtime         string
	root            string
	leaveRunning    bool
	includeExternal bool
	statsFile       string
	progressAfter   time.Duration
}

func checkpointCmd(g *globals) *cobra.Command {
	var o checkpointOpts
	c := &cobra.Command{
		Use:   "checkpoint ID -D DIR [--runtime runc|crun] [--root STATE_ROOT] [--leave-running] [--include-external]",
		Short: "Checkpoint the runc or crun container ID into DIR",
		Long: "Checkpoint the container ID: freeze its cgroup, dump the process tree of its\n" +
			"init into DIR, then kill the container (or, with --leave-running, let it go on).\n" +
			"DIR also gets " + ocirt.MetaFile + " (container, bundle, config digest, stdio).\n" +
			"Restore with `crhook install-hooks BUNDLE --images DIR` and a new container\n" +
			"from the same bundle.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			if o.dir == "" {
				return usagef("checkpoint: -D DIR is required")
			}
			o.progressAfter = g.progressAfter
			return checkpoint(cmd.Context(), o, logrus.NewEntry(g.log))
		},
	}
	c.Flags().StringVarP(&o.dir, "images-dir", "D", "", "directory for the images (created 0700)")
	c.Flags().StringVar(&o.runtime, "runtime", ocirt.Runc, "the container's runtime: runc or crun")
	c.Flags().StringVar(&o.root, "root", "", "the runtime's state root (its --root); default: the runtime's")
	c.Flags().BoolVar(&o.leaveRunning, "leave-running", false, "keep the container running after the checkpoint (default: kill it)")
	c.Flags().StringVar(&o.statsFile, "stats", "", "write the dump's timings and page counts as JSON to this file")
	c.Flags().BoolVar(&o.includeExternal, "include-external", false, "also dump processes of the container outside its init's tree (runc exec)")
	return c
}

func checkpoint(ctx context.Context, o checkpointOpts, log *logrus.Entry) error {
	if ctx == nil {
		ctx = context.Background()
	}
	rt, err := ocirt.New(o.runtime, o.root)
	if err != nil {
		return usagef("checkpoint: %v", err)
	}
	log = log.WithFields(logrus.Fields{"container": o.id, "runtime": rt.Name})
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	unlock, err := ocirt.Lock(lctx, o.id)
	cancel()
	if err != nil {
		return fmt.Errorf("checkpoint container %s: %w", o.id, err)
	}
	defer unlock()

	st, err := rt.State(ctx, o.id)
	if err != nil {
		return fmt.Errorf("checkpoint container %s: %w", o.id, err)
	}
	switch st.Status {
	case specs.StateRunning:
	case specs.ContainerState("paused"):
		return fmt.Errorf("checkpoint container %s: it is paused: resume it first (crhook freezes it itself)", o.id)
	default:
		return fmt.Errorf("checkpoint container %s: it is %s: %w", o.id, st.Status, ocirt.ErrNotRunning)
	}
	pid := st.Pid
	// failed names the container's stop, when it was killed or deleted
	// meanwhile: the error of the step that met it (a vanished /proc
	// file, a zombie) would not say so.
	failed := func(err error) error {
		if initGone(pid) {
			return fmt.Errorf("checkpoint container %s: it stopped while being checkpointed (killed or deleted meanwhile?): %w", o.id, err)
		}
		return fmt.Errorf("checkpoint container %s: %w", o.id, err)
	}
	if err := ownPidNS(pid); err != nil {
		return failed(err)
	}
	digest, err := ocirt.BundleDigest(st.Bundle)
	if err != nil {
		return fmt.Errorf("checkpoint container %s: %w", o.id, err)
	}
	if abs, err := filepath.Abs(o.dir); err == nil {
		o.dir = abs
	}

	// Freeze, and thaw on every path: Dump calls thaw once it holds every
	// task; the deferred call covers the failures before that.
	var thaw func() error
	var freezeStart time.Time
	cgroupPath := ""
	fr, err := ocirt.FreezerFor(pid)
	switch {
	case errors.Is(err, ocirt.ErrNoFreezer):
		log.WithError(err).Warn("dumping without freezing the container's cgroup")
	case err != nil:
		return failed(err)
	default:
		cgroupPath = fr.Path()
		// The guard thaws the cgroup if crhook dies while it is frozen.
		exe, err := self()
		if err != nil {
			return fmt.Errorf("checkpoint container %s: %w", o.id, err)
		}
		guard, err := ocirt.StartThawGuard(exe, []string{thawGuardCmdName}, fr)
		if err != nil {
			return fmt.Errorf("checkpoint container %s: %w", o.id, err)
		}
		// Without "done" the guard thaws once more: harmless after ours.
		defer guard.Abort()
		freezeStart = time.Now()
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = fr.Freeze(fctx)
		cancel()
		if err != nil {
			return failed(err)
		}
		crcore.FaultPoint("checkpoint:after-freeze")
		var once sync.Once
		var thawErr error
		thaw = func() error {
			once.Do(func() {
				if thawErr = fr.Thaw(); thawErr == nil {
					guard.Release()
				}
			})
			return thawErr
		}
		defer func() {
			if err := thaw(); err != nil {
				log.WithError(err).Error("thaw container")
			}
		}()
		log.WithField("cgroup", cgroupPath).Debug("frozen")
	}

	extra, err := checkExternal(pid, o.includeExternal)
	if err != nil {
		return failed(err)
	}
	if len(extra) > 0 {
		log.WithField("pids", extra).Info("including processes outside the init's tree")
	}
	stdio := ocirt.ReadStdio(pid)
	prog, stopProgress := startProgress("checkpoint", os.Stderr, o.progressAfter)
	res, err := crcore.Dump(ctx, crcore.DumpOptions{
		Pid: pid, ExtraRoots: extra, ImageDir: o.dir, LeaveRunning: o.leaveRunning, Thaw: thaw,
		Progress: prog, Log: log,
	})
	stopProgress()
	if err != nil {
		return failed(err)
	}
	if !freezeStart.IsZero() {
		// The container stopped running at the freeze, not once Dump
		// had seized it; it runs again (or died) when Dump returns.
		res.Stats.FrozenTime = time.Since(freezeStart)
	}
	metaErr := ocirt.WriteCheckpoint(o.dir, &ocirt.Checkpoint{
		Version: 1, ID: o.id, Runtime: rt.Name, Root: o.root, Bundle: st.Bundle,
		ConfigDigest: digest, InitPid: pid, Pids: res.Pids, Stdio: stdio,
		Cgroup: cgroupPath, Created: time.Now().UTC(),
	})
	if !o.leaveRunning {
		// Dump killed the tree; its init's death ends the container. Make
		// sure through the runtime, which also stops anything left.
		if err := stopContainer(ctx, rt, o.id); err != nil {
			log.WithError(err).Warn("kill container")
		}
	}
	if metaErr != nil {
		return fmt.Errorf("checkpoint container %s: images written, but: %w", o.id, metaErr)
	}
	if err := writeStats(o.statsFile, res.Stats); err != nil {
		return fmt.Errorf("checkpoint container %s: images written, but: %w", o.id, err)
	}
	log.WithFields(logrus.Fields{"dir": o.dir, "tasks": len(res.Pids), "frozen": res.Stats.FrozenTime}).Info("checkpointed")
	return nil
}

// initGone reports whether the container's init pid has exited (gone,
// or a zombie), waiting a little: a task killed under the dump may still
// be on its way out when the dump fails.
func initGone(pid int) bool {
	for deadline := time.Now().Add(500 * time.Millisecond); ; {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := bytes.LastIndexByte(b, ')'); i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ownPidNS refuses a container that shares crhook's pid namespace: its
// "tree" would not be the container.
func ownPidNS(pid int) error {
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return fmt.Errorf("read pid namespace of %d: %w", pid, err)
	}
	ours, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return fmt.Errorf("read own pid namespace: %w", err)
	}
	if theirs == ours {
		return fmt.Errorf("init %d shares crhook's pid namespace: only containers with their own pid namespace can be checkpointed", pid)
	}
	return nil
}

// ErrExternal: the container has processes outside its init's tree.
var ErrExternal = errors.New("processes outside the init's tree")

// checkExternal fails when the container's pid namespace holds processes
// that are not descendants of its init (`runc exec`), naming them. With
// include it returns instead the roots of their trees (those whose parent
// is not one of them: in the namespace, orphans of a parent outside it),
// which the dump takes as children of the init.
// Precondition: the container is frozen, so that the lists hold still.
func checkExternal(pid int, include bool) ([]int, error) {
	all, err := ocirt.PidNSTasks(pid)
	if err != nil {
		return nil, err
	}
	tree, err := ocirt.Tree(pid)
	if err != nil {
		return nil, err
	}
	ext := ocirt.Outside(all, tree)
	if len(ext) == 0 {
		return nil, nil
	}
	if include {
		return externalRoots(ext)
	}
	names := make([]string, len(ext))
	for i, p := range ext {
		names[i] = ocirt.Describe(p)
	}
	return nil, fmt.Errorf("%w: %s (from runc/crun exec?): stop them, or pass --include-external", ErrExternal, strings.Join(names, ", "))
}

// externalRoots keeps the processes of ext whose parent is not in ext.
func externalRoots(ext []int) ([]int, error) {
	in := map[int]bool{}
	for _, p := range ext {
		in[p] = true
	}
	var roots []int
	for _, p := range ext {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return nil, fmt.Errorf("read parent of %d: %w", p, err)
		}
		// The fields after the command, which may hold anything, ")".
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			return nil, fmt.Errorf("read parent of %d: short /proc/%d/stat", p, p)
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("read parent of %d: %w", p, err)
		}
		if !in[ppid] {
			roots = append(roots, p)
		}
	}
	return roots, nil
}

// stopContainer kills the container through its runtime unless it has
// stopped already, and waits (bounded) until the runtime says stopped.
func stopContainer(ctx context.Context, rt *ocirt.Runtime, id string) error {
	deadline := time.Now().Add(5 * time.Second)
	killed := false
	for {
		st, err := rt.State(ctx, id)
		if err != nil {
			return err
		}
		if st.Status == specs.StateStopped {
			return nil
		}
		if !killed && time.Now().After(deadline.Add(-4*time.Second)) {
			if err := rt.Kill(ctx, id, "KILL"); err != nil {
				return err
			}
			killed = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s is still %s", id, st.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// thawGuardCmdName is the hidden subcommand that runs the thaw guard of
// a checkpoint (runtime.StartThawGuard).
const thawGuardCmdName = "thaw-guard"

func thawGuardCmd() *cobra.Command {
	return &cobra.Command{
		Use:    thawGuardCmdName + " v1|v2 CGROUP_DIR",
		Short:  "Thaw CGROUP_DIR when the checkpoint that froze it dies (started by crhook checkpoint)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		// No log set-up: stdin is the pipe, stdout the ready signal.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(_ *cobra.Command, args []string) error {
			return ocirt.RunThawGuard(os.Stdin, os.Stdout, args[0], args[1])
		},
	}
}
