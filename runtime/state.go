//go:build linux

package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Names of the runtimes crhook knows.
const (
	Runc = "runc"
	Crun = "crun"
)

// ErrNotRunning: the container exists but has no live init.
var ErrNotRunning = errors.New("container is not running")

// Runtime is one OCI runtime binary with its state root.
type Runtime struct {
	// Name is Runc or Crun: it picks the state dialect and the default
	// state root.
	Name string
	// Binary is the executable to run; default: Name, looked up in PATH.
	Binary string
	// Root is the runtime's --root (state directory); empty: the
	// runtime's default.
	Root string
}

// New checks name and returns the runtime with its defaults.
func New(name, root string) (*Runtime, error) {
	switch name {
	case Runc, Crun:
	default:
		return nil, fmt.Errorf("runtime %q: not runc or crun", name)
	}
	return &Runtime{Name: name, Binary: name, Root: root}, nil
}

// StateRoot is the directory the runtime keeps its containers' state in.
func (r *Runtime) StateRoot() string {
	if r.Root != "" {
		return r.Root
	}
	if r.Name == Crun {
		return "/run/crun"
	}
	return "/run/runc"
}

// ContainerState is what `runc state` and `crun state` print: the OCI
// state plus each runtime's extra fields. crun's rootfs may be relative
// to the bundle.
type ContainerState struct {
	specs.State
	Rootfs  string    `json:"rootfs,omitempty"`
	Created time.Time `json:"created,omitempty"`
	Owner   string    `json:"owner,omitempty"`
}

func (r *Runtime) command(ctx context.Context, args ...string) *exec.Cmd {
	var a []string
	if r.Root != "" {
		a = append(a, "--root", r.Root)
	}
	bin := r.Binary
	if bin == "" {
		bin = r.Name
	}
	return exec.CommandContext(ctx, bin, append(a, args...)...)
}

func (r *Runtime) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := r.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("%s %s: %w", r.Name, strings.Join(args, " "), err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", r.Name, strings.Join(args, " "), err, msg)
	}
	return out, nil
}

// State returns the container's state as the runtime tells it. When the
// runtime's binary is missing it falls back to the state directory.
func (r *Runtime) State(ctx context.Context, id string) (*ContainerState, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	out, err := r.run(ctx, "state", id)
	if errors.Is(err, exec.ErrNotFound) {
		return r.stateFromDir(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read state of %s: %w", id, err)
	}
	return ParseContainerState(out)
}

// ParseContainerState decodes `runc state` or `crun state` output.
func ParseContainerState(b []byte) (*ContainerState, error) {
	var st ContainerState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode container state: %w", err)
	}
	if st.ID == "" {
		return nil, errors.New("decode container state: no id")
	}
	if st.Bundle != "" && st.Rootfs != "" && !filepath.IsAbs(st.Rootfs) {
		st.Rootfs = filepath.Join(st.Bundle, st.Rootfs)
	}
	return &st, nil
}

// stateFromDir reads the state directory directly: runc's
// ROOT/ID/state.json (libcontainer's format) or crun's ROOT/ID/status.
// Only what crhook needs is filled in.
func (r *Runtime) stateFromDir(id string) (*ContainerState, error) {
	dir := filepath.Join(r.StateRoot(), id)
	switch r.Name {
	case Crun:
		b, err := os.ReadFile(filepath.Join(dir, "status"))
		if err != nil {
			return nil, fmt.Errorf("read state of %s: %w", id, err)
		}
		var s struct {
			Pid    int    `json:"pid"`
			Bundle string `json:"bundle"`
			Rootfs string `json:"rootfs"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("decode %s: %w", filepath.Join(dir, "status"), err)
		}
		st := &ContainerState{State: specs.State{ID: id, Pid: s.Pid, Bundle: s.Bundle}, Rootfs: s.Rootfs}
		st.Status = liveStatus(s.Pid)
		return st, nil
	default:
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			return nil, fmt.Errorf("read state of %s: %w", id, err)
		}
		var s struct {
			Pid    int `json:"init_process_pid"`
			Config struct {
				Rootfs string   `json:"rootfs"`
				Labels []string `json:"labels"`
			} `json:"config"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("decode %s: %w", filepath.Join(dir, "state.json"), err)
		}
		st := &ContainerState{State: specs.State{ID: id, Pid: s.Pid}, Rootfs: s.Config.Rootfs}
		for _, l := range s.Config.Labels {
			if b, ok := strings.CutPrefix(l, "bundle="); ok {
				st.Bundle = b
			}
		}
		st.Status = liveStatus(s.Pid)
		return st, nil
	}
}

// liveStatus is the best a state directory tells without the runtime:
// running if the init pid is alive (a paused container also reads
// "running" here).
func liveStatus(pid int) specs.ContainerState {
	if pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			return specs.StateRunning
		}
	}
	return specs.StateStopped
}

// Kill sends sig (a name such as "KILL") to the container's init through
// the runtime.
func (r *Runtime) Kill(ctx context.Context, id, sig string) error {
	if _, err := r.run(ctx, "kill", id, sig); err != nil {
		return fmt.Errorf("kill container %s: %w", id, err)
	}
	return nil
}

// CheckID refuses ids that cannot name a state or lock file.
func CheckID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("container id %q: not a valid id", id)
	}
	return nil
}
