//go:build linux

package hook

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	ocirt "github.com/crhook/crhook/runtime"
)

func TestStageFromArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		ok   bool
	}{
		{nil, StageCreateRuntime, true},
		{[]string{"prestart"}, "prestart", true},
		{[]string{"a", "b"}, "", false},
	} {
		got, err := StageFromArgs(tc.args)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("StageFromArgs(%q) = %q, %v", tc.args, got, err)
		}
	}
}

// bundle writes a config.json and returns the bundle dir.
func bundle(t *testing.T, s *specs.Spec, extra string) string {
	t.Helper()
	d := t.TempDir()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if extra != "" {
		b = append(b[:len(b)-1], []byte(","+extra+"}")...)
	}
	if err := os.WriteFile(filepath.Join(d, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func state(id, bundle string, pid int, ann map[string]string) string {
	b, _ := json.Marshal(ocirt.HookState{Version: "1.0.2", ID: id, Status: "creating", Pid: pid, Bundle: bundle, Annotations: ann})
	return string(b)
}

func TestPrepare(t *testing.T) {
	spec := &specs.Spec{Version: "1.0.2", Process: &specs.Process{Args: []string{"/bin/counter"}}}
	b := bundle(t, spec, "")
	images := t.TempDir()
	digest, err := ocirt.BundleDigest(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := ocirt.WriteCheckpoint(images, &ocirt.Checkpoint{Version: 1, ID: "c", Bundle: b, ConfigDigest: digest}); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := ocirt.WriteCheckpoint(other, &ocirt.Checkpoint{Version: 1, ID: "c", Bundle: "/x", ConfigDigest: "sha256:00"}); err != nil {
		t.Fatal(err)
	}
	plain := t.TempDir() // a `crhook dump` directory: no metadata

	ann := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		stdin   string
		restore bool
		err     string
		warn    string
	}{
		{"no annotation", state("c", b, 7, nil), false, "", ""},
		{"other annotations", state("c", b, 7, ann("x", "y")), false, "", ""},
		{"match", state("c", b, 7, ann(ocirt.RestoreAnnotation, images)), true, "", ""},
		{"mismatch refused", state("c", b, 7, ann(ocirt.RestoreAnnotation, other)), true, "bundle config differs", ""},
		{"mismatch warned", state("c", b, 7, ann(ocirt.RestoreAnnotation, other, ocirt.ConfigCheckAnnotation, "warn")), true, "", "differs"},
		{"mismatch off", state("c", b, 7, ann(ocirt.RestoreAnnotation, other, ocirt.ConfigCheckAnnotation, "off")), true, "", ""},
		{"bad check mode", state("c", b, 7, ann(ocirt.RestoreAnnotation, other, ocirt.ConfigCheckAnnotation, "maybe")), true, "want refuse, warn or off", ""},
		{"no metadata", state("c", b, 7, ann(ocirt.RestoreAnnotation, plain)), true, "", "not made by crhook checkpoint"},
		{"missing dir", state("c", b, 7, ann(ocirt.RestoreAnnotation, "/nonexistent")), true, "image directory", ""},
		{"empty dir name", state("c", b, 7, ann(ocirt.RestoreAnnotation, "")), true, "is empty", ""},
		{"no pid", state("c", b, 0, ann(ocirt.RestoreAnnotation, images)), true, "no pid", ""},
		{"malformed", "{", false, "bad OCI hook state", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			plan, err := Prepare(nil, strings.NewReader(tc.stdin), &stderr)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if plan.Restore != tc.restore {
				t.Errorf("Restore %v, want %v", plan.Restore, tc.restore)
			}
			if !strings.Contains(stderr.String(), tc.warn) || (tc.warn == "" && stderr.Len() > 0) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.warn)
			}
		})
	}
	// Relative image dirs are the bundle's.
	if err := os.Mkdir(filepath.Join(b, "img"), 0o700); err != nil {
		t.Fatal(err)
	}
	plan, err := Prepare(nil, strings.NewReader(state("c", b, 7, ann(ocirt.RestoreAnnotation, "img"))), &bytes.Buffer{})
	if err != nil || plan.ImageDir != filepath.Join(b, "img") {
		t.Errorf("relative dir: %+v %v", plan, err)
	}
	if _, err := Prepare(nil, strings.NewReader("{"), &bytes.Buffer{}); !errors.Is(err, ocirt.ErrBadHookState) {
		t.Errorf("malformed: %v", err)
	}
}

func TestInstallHooks(t *testing.T) {
	spec := &specs.Spec{Version: "1.0.2", Hooks: &specs.Hooks{
		CreateRuntime: []specs.Hook{{Path: "/usr/bin/other", Args: []string{"other"}}, {Path: "/old/crhook", Args: HookArgs}},
		Poststop:      []specs.Hook{{Path: "/bin/true"}},
	}}
	b := bundle(t, spec, `"x-vendor":{"keep":true}`)
	d0, _ := ocirt.BundleDigest(b)
	changed, err := InstallHooks(b, "/usr/local/bin/crhook", "")
	if err != nil || !changed {
		t.Fatalf("first install: %v %v", changed, err)
	}
	changed, err = InstallHooks(b, "/usr/local/bin/crhook", filepath.Join(b, "img"))
	if err != nil || !changed {
		t.Fatalf("install with images: %v %v", changed, err)
	}
	changed, err = InstallHooks(b, "/usr/local/bin/crhook", filepath.Join(b, "img"))
	if err != nil || changed {
		t.Fatalf("second install changed the bundle: %v %v", changed, err)
	}
	s, err := ocirt.LoadSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	cr := s.Hooks.CreateRuntime
	if len(cr) != 2 || cr[0].Path != "/usr/bin/other" || cr[1].Path != "/usr/local/bin/crhook" || len(s.Hooks.Poststop) != 1 {
		t.Errorf("hooks: %+v", s.Hooks)
	}
	if s.Annotations[ocirt.RestoreAnnotation] != filepath.Join(b, "img") {
		t.Errorf("annotations: %v", s.Annotations)
	}
	raw, _ := os.ReadFile(filepath.Join(b, "config.json"))
	if !strings.Contains(string(raw), `"x-vendor"`) {
		t.Error("an unknown top-level field was dropped")
	}
	if d, _ := ocirt.BundleDigest(b); d != d0 {
		t.Error("install-hooks changed the config digest")
	}
	if changed, err := RemoveRestore(b); err != nil || !changed {
		t.Fatalf("RemoveRestore: %v %v", changed, err)
	}
	if s, _ := ocirt.LoadSpec(b); s.Annotations[ocirt.RestoreAnnotation] != "" || len(s.Hooks.CreateRuntime) != 2 {
		t.Errorf("after RemoveRestore: %+v %+v", s.Annotations, s.Hooks)
	}
}

func TestTracedBy(t *testing.T) {
	// Nobody traces us.
	if ok, err := tracedBy(os.Getpid(), 1); ok || err != nil {
		t.Errorf("tracedBy(self, 1) = %v, %v", ok, err)
	}
	if ok, err := tracedBy(os.Getpid(), 0); !ok || err != nil {
		t.Errorf("tracedBy(self, 0) = %v, %v (TracerPid 0 is untraced)", ok, err)
	}
	if !alive(os.Getpid()) || alive(1<<30) {
		t.Error("alive")
	}
}
