//go:build linux && amd64

package crcore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// TestFileMappings: a MAP_SHARED file mapping stays the file (writes after
// restore reach it; its pages are not in the image), and a MAP_PRIVATE
// one keeps its own changed page (the only one dumped) over the file.
func TestFileMappings(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "mapfile", false)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(data, make([]byte, 16384), 0o600); err != nil {
		t.Fatal(err)
	}
	p := crtest.Start(t, bin, data)
	p.WaitLine(t, `^ready$`, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "img")
	res, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.Reap(p.Pid)
	// The shared mapping's change is in the file, not in the image.
	b, _ := os.ReadFile(data)
	if !bytes.HasPrefix(b, []byte("shared-1")) {
		t.Fatalf("the file lacks the shared mapping's write")
	}
	if bytes.Contains(b, []byte("private-1")) {
		t.Fatalf("a private mapping's write reached the file")
	}
	pages, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	for _, pg := range pages {
		img, _ := os.ReadFile(pg)
		if bytes.Contains(img, []byte("shared-1")) {
			t.Errorf("%s holds the shared mapping's page: it belongs to the file", filepath.Base(pg))
		}
		if bytes.Contains(img, []byte("private-1")) {
			goto private
		}
	}
	t.Errorf("no pages file holds the private mapping's changed page")
private:
	_ = res

	r, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(r.Pid) })
	unix.Kill(r.Pid, unix.SIGUSR1)
	p.WaitLine(t, `^private private-1 shared shared-1$`, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(data)
		if bytes.Equal(b[8192:8200], []byte("shared-2")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a write into the restored shared mapping did not reach the file")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
