//go:build linux && amd64

package crcore_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
)

// inotify watches come back with their paths, masks and numbers (a gap
// in the numbers included), and report events on the watched paths after
// the restore.
func TestInotifyRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{"sub"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"f", "x"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := startKind(t, "inotify", dir)
	p.WaitLine(t, `^watches 1 2 4$`, time.Second)
	img := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, img)
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("modified"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "s1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	goAndWait(t, p, pid, 1)
	r := run(p.Lines(), 1)
	sameState(t, p.Lines(), r)
	got := tagged(r, "event")
	want := []string{"wd 1 mask 100 name new", "wd 2 mask 2 name -", "wd 4 mask 100 name s1"}
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}
