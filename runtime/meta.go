//go:build linux

package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MetaFile is written beside a container checkpoint's images.
const MetaFile = "crhook-container.json"

// Checkpoint is the content of MetaFile: what a restore into a new
// container needs besides the images.
type Checkpoint struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	Runtime string `json:"runtime"`
	Root    string `json:"root,omitempty"`
	Bundle  string `json:"bundle"`
	// ConfigDigest is ConfigDigest of the bundle's config.json at
	// checkpoint time.
	ConfigDigest string `json:"config_digest"`
	// InitPid is the init's pid on the host at checkpoint time.
	InitPid int `json:"init_pid"`
	// Pids are the checkpointed processes (host pids).
	Pids []int `json:"pids,omitempty"`
	// Stdio maps the init's fds 0, 1 and 2 to what they were: a restore
	// puts the new container's stdio in their place.
	Stdio   []StdioFile `json:"stdio"`
	Cgroup  string      `json:"cgroup,omitempty"`
	Created time.Time   `json:"created"`
}

// StdioFile is one of the init's standard fds.
type StdioFile struct {
	Fd int `json:"fd"`
	// Kind: "null", "pipe", "tty", "socket", "file" or "closed".
	Kind string `json:"kind"`
	// Target is the /proc/PID/fd link ("pipe:[123]", "/dev/null").
	Target string `json:"target,omitempty"`
}

// ReadStdio describes pid's fds 0, 1 and 2.
func ReadStdio(pid int) []StdioFile {
	var out []StdioFile
	for fd := 0; fd < 3; fd++ {
		p := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
		link, err := os.Readlink(p)
		if err != nil {
			out = append(out, StdioFile{Fd: fd, Kind: "closed"})
			continue
		}
		kind := "file"
		var st unix.Stat_t
		statErr := unix.Stat(p, &st)
		switch {
		case link == "/dev/null":
			kind = "null"
		case strings.HasPrefix(link, "pipe:"):
			kind = "pipe"
		case strings.HasPrefix(link, "socket:"):
			kind = "socket"
		case statErr == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && (unix.Major(st.Rdev) == 136 || unix.Major(st.Rdev) == 5 || unix.Major(st.Rdev) == 4):
			kind = "tty"
		}
		out = append(out, StdioFile{Fd: fd, Kind: kind, Target: link})
	}
	return out
}

// WriteCheckpoint writes c to DIR/MetaFile, 0600.
func WriteCheckpoint(dir string, c *Checkpoint) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", MetaFile, err)
	}
	p := filepath.Join(dir, MetaFile)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	return f.Close()
}

// ErrNoMeta: the image directory has no MetaFile (a plain `crhook dump`).
var ErrNoMeta = errors.New("no " + MetaFile)

// ReadCheckpoint reads DIR/MetaFile.
func ReadCheckpoint(dir string) (*Checkpoint, error) {
	p := filepath.Join(dir, MetaFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", dir, ErrNoMeta)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode %s: %w", p, err)
	}
	return &c, nil
}
