//go:build linux

package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Cgroups is where a process sits in each cgroup hierarchy, as
// /proc/PID/cgroup says: V1 maps a controller name ("freezer",
// "name=systemd") to its path; Unified is the v2 path (the "0::" line),
// empty when there is none.
type Cgroups struct {
	V1         map[string]string
	Unified    string
	HasUnified bool
}

// ReadCgroups parses /proc/PID/cgroup.
func ReadCgroups(pid int) (*Cgroups, error) {
	p := fmt.Sprintf("/proc/%d/cgroup", pid)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read cgroups of pid %d: %w", pid, err)
	}
	cg, err := ParseCgroups(b)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	return cg, nil
}

// ParseCgroups parses the text of a /proc/PID/cgroup file.
func ParseCgroups(b []byte) (*Cgroups, error) {
	cg := &Cgroups{V1: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("line %d: %q: not ID:CONTROLLERS:PATH", n, line)
		}
		if parts[0] == "0" && parts[1] == "" {
			cg.Unified, cg.HasUnified = parts[2], true
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			cg.V1[c] = parts[2]
		}
	}
	return cg, sc.Err()
}

// Mounts of cgroup file systems, from /proc/self/mountinfo: V1 maps each
// controller (or "name=X") to its hierarchy's mount point, Unified is the
// cgroup2 mount ("" if none). Only mounts of a hierarchy's root count.
type Mounts struct {
	V1      map[string]string
	Unified string
}

// ReadMounts parses /proc/self/mountinfo.
func ReadMounts() (*Mounts, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return ParseMounts(b), nil
}

// ParseMounts parses mountinfo text.
func ParseMounts(b []byte) *Mounts {
	m := &Mounts{V1: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 >= len(f) || f[3] != "/" {
			continue
		}
		mp, fstype := unescapeMount(f[4]), f[sep+1]
		switch fstype {
		case "cgroup2":
			if m.Unified == "" {
				m.Unified = mp
			}
		case "cgroup":
			for _, o := range strings.Split(f[sep+3], ",") {
				switch o {
				case "rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children", "noprefix", "cpuset_v2_mode", "xattr":
					continue
				}
				if strings.HasPrefix(o, "release_agent=") {
					continue
				}
				if _, dup := m.V1[o]; !dup {
					m.V1[o] = mp
				}
			}
		}
	}
	return m
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// Freezer freezes and thaws one cgroup.
type Freezer interface {
	// Freeze stops every task of the cgroup and returns once all are
	// frozen, or thaws again and fails when ctx ends first.
	Freeze(ctx context.Context) error
	// Thaw lets the tasks run again.
	Thaw() error
	// Frozen reads the cgroup's current state.
	Frozen() (bool, error)
	// Path is the cgroup's directory.
	Path() string
}

// ErrNoFreezer: the process has no cgroup that crhook may freeze.
var ErrNoFreezer = errors.New("no freezable cgroup")

// FreezerFor returns the freezer of pid's cgroup: the v1 freezer
// hierarchy when the process is in one, else the v2 hierarchy. It
// refuses (ErrNoFreezer) a root cgroup and a cgroup that holds crhook
// itself: freezing it would freeze the caller.
func FreezerFor(pid int) (Freezer, error) {
	cg, err := ReadCgroups(pid)
	if err != nil {
		return nil, err
	}
	self, err := ReadCgroups(os.Getpid())
	if err != nil {
		return nil, err
	}
	m, err := ReadMounts()
	if err != nil {
		return nil, err
	}
	if p, ok := cg.V1["freezer"]; ok && m.V1["freezer"] != "" {
		switch {
		case p == "/":
			return nil, fmt.Errorf("pid %d is in the root freezer cgroup: %w", pid, ErrNoFreezer)
		case self.V1["freezer"] == p || strings.HasPrefix(self.V1["freezer"], p+"/"):
			return nil, fmt.Errorf("pid %d shares freezer cgroup %s with crhook: %w", pid, p, ErrNoFreezer)
		}
		return &v1Freezer{dir: filepath.Join(m.V1["freezer"], p)}, nil
	}
	if cg.HasUnified && m.Unified != "" {
		p := cg.Unified
		switch {
		case p == "/":
			return nil, fmt.Errorf("pid %d is in the root cgroup: %w", pid, ErrNoFreezer)
		case self.Unified == p || strings.HasPrefix(self.Unified, p+"/"):
			return nil, fmt.Errorf("pid %d shares cgroup %s with crhook: %w", pid, p, ErrNoFreezer)
		}
		dir := filepath.Join(m.Unified, p)
		if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err != nil {
			return nil, fmt.Errorf("cgroup %s: %w (%w)", dir, ErrNoFreezer, err)
		}
		return &v2Freezer{dir: dir}, nil
	}
	return nil, fmt.Errorf("pid %d: no v1 freezer or v2 hierarchy mounted: %w", pid, ErrNoFreezer)
}

// NewV1Freezer and NewV2Freezer name a cgroup directory directly.
func NewV1Freezer(dir string) Freezer { return &v1Freezer{dir: dir} }

// NewV2Freezer: see NewV1Freezer.
func NewV2Freezer(dir string) Freezer { return &v2Freezer{dir: dir} }

const freezePoll = time.Millisecond

type v1Freezer struct{ dir string }

func (f *v1Freezer) Path() string { return f.dir }

func (f *v1Freezer) state() (string, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, "freezer.state"))
	if err != nil {
		return "", fmt.Errorf("read freezer state: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (f *v1Freezer) write(s string) error {
	if err := os.WriteFile(filepath.Join(f.dir, "freezer.state"), []byte(s), 0); err != nil {
		return fmt.Errorf("write freezer state %s: %w", s, err)
	}
	return nil
}

// Freeze writes FROZEN and polls until the state reads FROZEN. A task
// in an uninterruptible sleep keeps the cgroup FREEZING; writing FROZEN
// again retries it (as runc does).
func (f *v1Freezer) Freeze(ctx context.Context) error {
	for i := 0; ; i++ {
		if i%100 == 0 {
			if err := f.write("FROZEN"); err != nil {
				return fmt.Errorf("freeze %s: %w", f.dir, err)
			}
		}
		s, err := f.state()
		if err != nil {
			return fmt.Errorf("freeze %s: %w", f.dir, errors.Join(err, f.Thaw()))
		}
		if s == "FROZEN" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("freeze %s: still %s: %w", f.dir, s, errors.Join(ctx.Err(), f.Thaw()))
		case <-time.After(freezePoll):
		}
	}
}

func (f *v1Freezer) Thaw() error {
	if err := f.write("THAWED"); err != nil {
		return fmt.Errorf("thaw %s: %w", f.dir, err)
	}
	return nil
}

func (f *v1Freezer) Frozen() (bool, error) {
	s, err := f.state()
	return s == "FROZEN", err
}

type v2Freezer struct{ dir string }

func (f *v2Freezer) Path() string { return f.dir }

func (f *v2Freezer) write(v string) error {
	if err := os.WriteFile(filepath.Join(f.dir, "cgroup.freeze"), []byte(v), 0); err != nil {
		return fmt.Errorf("write cgroup.freeze %s: %w", v, err)
	}
	return nil
}

// Frozen reads "frozen" from cgroup.events: 1 once every task is stopped.
func (f *v2Freezer) Frozen() (bool, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("read cgroup.events: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "frozen "); ok {
			return strings.TrimSpace(v) == "1", nil
		}
	}
	return false, fmt.Errorf("read cgroup.events of %s: no frozen field", f.dir)
}

func (f *v2Freezer) Freeze(ctx context.Context) error {
	if err := f.write("1"); err != nil {
		return fmt.Errorf("freeze %s: %w", f.dir, err)
	}
	for {
		ok, err := f.Frozen()
		if err != nil {
			return fmt.Errorf("freeze %s: %w", f.dir, errors.Join(err, f.Thaw()))
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("freeze %s: %w", f.dir, errors.Join(ctx.Err(), f.Thaw()))
		case <-time.After(freezePoll):
		}
	}
}

func (f *v2Freezer) Thaw() error {
	if err := f.write("0"); err != nil {
		return fmt.Errorf("thaw %s: %w", f.dir, err)
	}
	return nil
}
