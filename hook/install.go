//go:build linux

package hook

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	ocirt "github.com/crhook/crhook/runtime"
)

// HookArgs are the argv crhook registers as a createRuntime hook.
var HookArgs = []string{"crhook", "hook"}

// InstallHooks adds crhook (at path self) as a createRuntime hook of
// BUNDLE/config.json and, when imageDir is set, the restore annotation
// naming it. It is idempotent: a hook already pointing at self is kept,
// one pointing at another crhook binary with crhook's args is replaced.
// Fields of config.json the OCI types do not know are kept. It reports
// whether the file changed.
func InstallHooks(bundle, self, imageDir string) (bool, error) {
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("install hooks: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return false, fmt.Errorf("install hooks: decode %s: %w", p, err)
	}
	var hooks specs.Hooks
	if raw, ok := top["hooks"]; ok {
		if err := json.Unmarshal(raw, &hooks); err != nil {
			return false, fmt.Errorf("install hooks: decode hooks of %s: %w", p, err)
		}
	}
	annotations := map[string]string{}
	if raw, ok := top["annotations"]; ok {
		if err := json.Unmarshal(raw, &annotations); err != nil {
			return false, fmt.Errorf("install hooks: decode annotations of %s: %w", p, err)
		}
	}
	orig := hooks
	orig.CreateRuntime = append([]specs.Hook(nil), hooks.CreateRuntime...)
	want := specs.Hook{Path: self, Args: HookArgs}
	found := false
	var kept []specs.Hook
	for _, h := range hooks.CreateRuntime {
		if reflect.DeepEqual(h.Args, HookArgs) && filepath.Base(h.Path) == "crhook" || h.Path == self {
			if !found {
				kept = append(kept, want)
				found = true
			}
			continue
		}
		kept = append(kept, h)
	}
	if !found {
		kept = append(kept, want)
	}
	hooks.CreateRuntime = kept
	changed := !reflect.DeepEqual(orig.CreateRuntime, hooks.CreateRuntime)
	if imageDir != "" {
		abs, err := filepath.Abs(imageDir)
		if err != nil {
			return false, fmt.Errorf("install hooks: %w", err)
		}
		if annotations[ocirt.RestoreAnnotation] != abs {
			annotations[ocirt.RestoreAnnotation] = abs
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	if top["hooks"], err = json.Marshal(&hooks); err != nil {
		return false, fmt.Errorf("install hooks: %w", err)
	}
	if len(annotations) > 0 {
		if top["annotations"], err = json.Marshal(annotations); err != nil {
			return false, fmt.Errorf("install hooks: %w", err)
		}
	}
	out, err := json.MarshalIndent(top, "", "\t")
	if err != nil {
		return false, fmt.Errorf("install hooks: %w", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return false, fmt.Errorf("install hooks: %w", err)
	}
	tmp := p + ".crhook.tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), fi.Mode().Perm()); err != nil {
		return false, fmt.Errorf("install hooks: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("install hooks: %w", err)
	}
	return true, nil
}

// RemoveRestore drops the restore annotation from BUNDLE/config.json,
// keeping the hook (a no-op without it). It reports whether it changed.
func RemoveRestore(bundle string) (bool, error) {
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("remove restore annotation: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return false, fmt.Errorf("remove restore annotation: decode %s: %w", p, err)
	}
	annotations := map[string]string{}
	if raw, ok := top["annotations"]; ok {
		if err := json.Unmarshal(raw, &annotations); err != nil {
			return false, fmt.Errorf("remove restore annotation: %w", err)
		}
	}
	if _, ok := annotations[ocirt.RestoreAnnotation]; !ok {
		return false, nil
	}
	delete(annotations, ocirt.RestoreAnnotation)
	if len(annotations) == 0 {
		delete(top, "annotations")
	} else if top["annotations"], err = json.Marshal(annotations); err != nil {
		return false, err
	}
	out, err := json.MarshalIndent(top, "", "\t")
	if err != nil {
		return false, err
	}
	if err := os.WriteFile(p, append(out, '\n'), 0o644); err != nil { //nolint:gosec // p exists (read above): WriteFile keeps its mode, 0644 only if it vanished meanwhile
		return false, fmt.Errorf("remove restore annotation: %w", err)
	}
	return true, nil
}
