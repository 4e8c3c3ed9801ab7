//go:build linux

package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// maxHookState bounds what a hook reads from stdin: a state is a few
// hundred bytes plus annotations.
const maxHookState = 1 << 20

// HookState is the state an OCI hook reads on stdin. Two dialects exist:
//
//   - runc: {"ociVersion","id","status":"creating","pid","bundle","annotations"}
//   - crun: the same plus "root" (the rootfs, relative to the bundle), and
//     a status of "created" or "starting"; for createContainer and
//     startContainer the pid may be 0.
type HookState struct {
	Version     string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      string            `json:"status"`
	Pid         int               `json:"pid"`
	Bundle      string            `json:"bundle"`
	Root        string            `json:"root,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ErrBadHookState: the hook's stdin is not a usable OCI state.
var ErrBadHookState = errors.New("bad OCI hook state")

// ReadHookState reads and checks the state on r. It needs an id and an
// absolute bundle path; a pid is checked by the caller, which knows
// whether its stage has one.
func ReadHookState(r io.Reader) (*HookState, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxHookState+1))
	if err != nil {
		return nil, fmt.Errorf("read hook state: %w", err)
	}
	return ParseHookState(b)
}

// ParseHookState decodes a state in either dialect.
func ParseHookState(b []byte) (*HookState, error) {
	if len(b) > maxHookState {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrBadHookState, maxHookState)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty stdin (expected the container's state as JSON)", ErrBadHookState)
	}
	var st HookState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadHookState, err)
	}
	switch {
	case st.ID == "":
		return nil, fmt.Errorf("%w: no container id", ErrBadHookState)
	case st.Bundle == "":
		return nil, fmt.Errorf("%w: no bundle", ErrBadHookState)
	case !filepath.IsAbs(st.Bundle):
		return nil, fmt.Errorf("%w: bundle %q is not absolute", ErrBadHookState, st.Bundle)
	case st.Pid < 0:
		return nil, fmt.Errorf("%w: pid %d", ErrBadHookState, st.Pid)
	}
	return &st, nil
}

// RootPath is the container's rootfs as an absolute path, if the state
// names one (crun's "root").
func (s *HookState) RootPath() string {
	if s.Root == "" || filepath.IsAbs(s.Root) {
		return s.Root
	}
	return filepath.Join(s.Bundle, s.Root)
}
