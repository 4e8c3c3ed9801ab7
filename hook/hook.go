// Package hook is crhook's OCI runtime hook: it reads the stage from
// argv and the container's state from stdin, and, for a container whose
// config carries the io.crhook.restore annotation, starts a detached
// restore shim that transplants the checkpoint into the container's init
// when the runtime starts it (DESIGN section 2).
//
// The model: the hook runs in the host's namespaces while the runtime's
// init (runc init, or crun's child) waits, already inside the container's
// namespaces and cgroups, for "start". The hook checks the image
// directory, double-forks the shim (setsid, stdio on /dev/null: runc
// reads the hook's stdout and stderr until EOF), waits until the shim has
// seized every thread of the init, and returns. At "start" the init
// execs the entrypoint; the shim, which traces it with
// PTRACE_O_TRACEEXEC, replaces the new program by the checkpoint before
// it runs one instruction. The init keeps the container's namespaces,
// cgroups, credentials, seccomp filter and stdio: a restore gains no
// privilege over what the container's config grants.
//
// A container without the annotation costs one JSON decode: the hook
// exits 0 before touching anything else.
//
//go:build linux

package hook

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	ocirt "github.com/crhook/crhook/runtime"
)

// Stages a restore can run at: both run in the runtime's namespace
// after the init was created and before it is started (runc and podman
// treat a hooks.d "prestart" as createRuntime).
const (
	StageCreateRuntime = "createRuntime"
	StagePrestart      = "prestart"
)

// Options of one hook run.
type Options struct {
	// Args are the hook's arguments after "crhook hook": empty, or the
	// stage name.
	Args []string
	// Stdin carries the state JSON; Stderr gets diagnostics that the
	// runtime folds into its error.
	Stdin  io.Reader
	Stderr io.Writer
	// Self is the crhook executable to start the shim from.
	Self string
	// ReadyTimeout bounds the wait for the shim to seize the init.
	ReadyTimeout time.Duration
}

// Plan is what a hook run decided to do.
type Plan struct {
	State    *ocirt.HookState
	Stage    string
	ImageDir string
	// Restore is false for a container without the annotation.
	Restore bool
	// Warnings were printed on stderr (a config mismatch in "warn"
	// mode, missing metadata).
	Warnings []string
}

// StageFromArgs returns the stage named in args, or createRuntime when
// there is none (how `crhook install-hooks` registers the hook).
func StageFromArgs(args []string) (string, error) {
	switch len(args) {
	case 0:
		return StageCreateRuntime, nil
	case 1:
		return args[0], nil
	}
	return "", fmt.Errorf("hook: expected at most one argument (the stage), got %q", args)
}

// Run is `crhook hook`: a no-op without the annotation, else start the
// shim and wait until it holds the init.
func Run(o Options) (*Plan, error) {
	plan, err := Prepare(o.Args, o.Stdin, o.Stderr)
	if err != nil || !plan.Restore {
		return plan, err
	}
	timeout := o.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if err := StartShim(o.Self, plan.State.Pid, plan.ImageDir, timeout); err != nil {
		return plan, fmt.Errorf("restore container %s: %w", plan.State.ID, err)
	}
	return plan, nil
}

// Prepare parses the stage and the state and checks the image directory
// against the bundle. It starts nothing.
func Prepare(args []string, stdin io.Reader, stderr io.Writer) (*Plan, error) {
	stage, err := StageFromArgs(args)
	if err != nil {
		return nil, err
	}
	st, err := ocirt.ReadHookState(stdin)
	if err != nil {
		return nil, err
	}
	plan := &Plan{State: st, Stage: stage}
	dir, ok := st.Annotations[ocirt.RestoreAnnotation]
	if !ok {
		return plan, nil
	}
	plan.Restore = true
	if stage != StageCreateRuntime && stage != StagePrestart {
		return plan, fmt.Errorf("restore container %s: hook stage %q: the restore shim must start at createRuntime (or prestart), before the container's init execs", st.ID, stage)
	}
	if st.Pid <= 0 {
		return plan, fmt.Errorf("restore container %s: the state at stage %s has no pid of the container's init", st.ID, stage)
	}
	if dir == "" {
		return plan, fmt.Errorf("restore container %s: annotation %s is empty", st.ID, ocirt.RestoreAnnotation)
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(st.Bundle, dir)
	}
	plan.ImageDir = dir
	if fi, err := os.Stat(dir); err != nil {
		return plan, fmt.Errorf("restore container %s: image directory: %w", st.ID, err)
	} else if !fi.IsDir() {
		return plan, fmt.Errorf("restore container %s: image directory %s is not a directory", st.ID, dir)
	}
	if err := checkBundle(plan, st.Annotations[ocirt.ConfigCheckAnnotation]); err != nil {
		return plan, err
	}
	for _, w := range plan.Warnings {
		fmt.Fprintf(stderr, "crhook hook: warning: %s\n", w)
	}
	return plan, nil
}

// ErrConfigMismatch: the bundle's config is not the checkpointed one.
var ErrConfigMismatch = errors.New("bundle config differs from the checkpointed container's")

// checkBundle compares the bundle's config digest with the one recorded
// at checkpoint time. mode is the io.crhook.config-check annotation:
// "" or "refuse" fails on a mismatch, "warn" warns, "off" skips.
func checkBundle(plan *Plan, mode string) error {
	id := plan.State.ID
	switch mode {
	case "", "refuse", "warn":
	case "off":
		return nil
	default:
		return fmt.Errorf("restore container %s: annotation %s=%q: want refuse, warn or off", id, ocirt.ConfigCheckAnnotation, mode)
	}
	meta, err := ocirt.ReadCheckpoint(plan.ImageDir)
	if errors.Is(err, ocirt.ErrNoMeta) {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s has no %s (not made by crhook checkpoint): the bundle is not checked", plan.ImageDir, ocirt.MetaFile))
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore container %s: %w", id, err)
	}
	got, err := ocirt.BundleDigest(plan.State.Bundle)
	if err != nil {
		return fmt.Errorf("restore container %s: %w", id, err)
	}
	if got == meta.ConfigDigest {
		return nil
	}
	msg := fmt.Sprintf("%s config %s, checkpoint of %s had %s", plan.State.Bundle, got, meta.Bundle, meta.ConfigDigest)
	if mode == "warn" {
		plan.Warnings = append(plan.Warnings, ErrConfigMismatch.Error()+": "+msg)
		return nil
	}
	return fmt.Errorf("restore container %s: %w: %s (annotation %s=warn restores anyway)", id, ErrConfigMismatch, msg, ocirt.ConfigCheckAnnotation)
}
