//go:build linux

package hook

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocirt "github.com/crhook/crhook/runtime"
)

// FuzzHookState feeds arbitrary stdin to the hook: no panic; a state
// that does not parse is ErrBadHookState; a container without the restore
// annotation is never restored.
func FuzzHookState(f *testing.F) {
	for _, s := range []string{
		`{"ociVersion":"1.0.2","id":"c1","status":"created","pid":42,"bundle":"/b"}`,
		`{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b","annotations":{"io.crhook.restore":"/img"}}`,
		`{"ociVersion":"1.0.0","id":"c1","status":"starting","pid":0,"bundle":"/b","root":"rootfs","annotations":{"io.crhook.restore":"img","io.crhook.config-check":"warn"}}`,
		`{"id":"","bundle":"rel"}`, `[]`, `null`, ``, `{"pid":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		plan, err := Prepare([]string{StageCreateRuntime}, bytes.NewReader(data), io.Discard)
		if plan == nil {
			if err == nil {
				t.Fatal("no plan and no error")
			}
			if !errors.Is(err, ocirt.ErrBadHookState) {
				t.Fatalf("unparsable state gives %v, not ErrBadHookState", err)
			}
			return
		}
		if _, ok := plan.State.Annotations[ocirt.RestoreAnnotation]; !ok && (plan.Restore || err != nil) {
			t.Fatalf("no annotation, yet restore=%v err=%v", plan.Restore, err)
		}
		if plan.Restore && err == nil && (plan.State.Pid <= 0 || plan.ImageDir == "") {
			t.Fatalf("restore planned without a pid or an image dir: %+v", plan)
		}
	})
}

// FuzzAnnotation feeds arbitrary annotation values (the image directory
// and the config-check mode) to a well-formed state: no panic; the plan's
// image dir is absolute; a bad mode or a missing directory is an error
// naming the container.
func FuzzAnnotation(f *testing.F) {
	f.Add("img", "")
	f.Add("/nonexistent", "refuse")
	f.Add("../../etc", "warn")
	f.Add("", "off")
	f.Add("img\x00x", "bogus")
	bundle := f.TempDir()
	os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}`), 0o600)
	os.MkdirAll(filepath.Join(bundle, "img"), 0o700)
	f.Fuzz(func(t *testing.T, dir, mode string) {
		st := map[string]any{
			"ociVersion": "1.0.2", "id": "fuzz", "status": "creating", "pid": 4242, "bundle": bundle,
			"annotations": map[string]string{ocirt.RestoreAnnotation: dir, ocirt.ConfigCheckAnnotation: mode},
		}
		b, _ := json.Marshal(st)
		plan, err := Prepare(nil, bytes.NewReader(b), io.Discard)
		if plan == nil {
			// Only a value JSON cannot carry gets here.
			if !errors.Is(err, ocirt.ErrBadHookState) {
				t.Fatalf("no plan: %v", err)
			}
			return
		}
		if !plan.Restore {
			t.Fatal("annotated container not planned for restore")
		}
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz") {
				t.Fatalf("error %q does not name the container", err)
			}
			return
		}
		if !filepath.IsAbs(plan.ImageDir) {
			t.Fatalf("image dir %q is not absolute", plan.ImageDir)
		}
	})
}
