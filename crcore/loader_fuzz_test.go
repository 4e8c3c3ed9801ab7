//go:build linux && amd64

package crcore

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
	"github.com/crhook/crhook/crcore/internal/image"
)

// FuzzLoadImages replaces one file of a real dump (a counter's) with the
// fuzzer's bytes, re-signs the directory as a hostile image maker would,
// and loads it as a restore does: no panic, no unbounded allocation, and
// every failure names an image file (decoding errors also the offset,
// inside the file).
func FuzzLoadImages(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root to make the seed dump")
	}
	bin := crtest.BuildC(f, "counter", false)
	log := filepath.Join(f.TempDir(), "log")
	cmd := exec.Command(bin, log)
	if err := cmd.Start(); err != nil {
		f.Fatal(err)
	}
	p := &crtest.Proc{Pid: cmd.Process.Pid, Log: log}
	cmd.Process.Release()
	p.WaitLine(f, `^count 2$`, 10*time.Second)
	base := filepath.Join(f.TempDir(), "img")
	if _, err := Dump(context.Background(), DumpOptions{Pid: p.Pid, ImageDir: base}); err != nil {
		crtest.KillAndReap(p.Pid)
		f.Fatal(err)
	}
	crtest.Reap(p.Pid)
	ents, _ := os.ReadDir(base)
	var names []string
	orig := map[string][]byte{}
	for _, e := range ents {
		if e.Name() == image.ChecksumsFile {
			continue
		}
		b, err := os.ReadFile(filepath.Join(base, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		names = append(names, e.Name())
		orig[e.Name()] = b
	}
	sort.Strings(names)
	for i, n := range names {
		b := orig[n]
		if len(b) > 64<<10 {
			b = b[:64<<10]
		}
		f.Add(uint8(i), b)
	}
	// One working copy per fuzzing process; each input changes one file,
	// put back before the next.
	work := filepath.Join(f.TempDir(), "work")
	if out, err := exec.Command("cp", "-a", base, work).CombinedOutput(); err != nil {
		f.Fatalf("cp: %v %s", err, out)
	}
	f.Fuzz(func(t *testing.T, idx uint8, data []byte) {
		name := names[int(idx)%len(names)]
		path := filepath.Join(work, name)
		defer os.WriteFile(path, orig[name], 0o600)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(work, image.ChecksumsFile))
		d, err := image.OpenDir(work)
		if err != nil {
			t.Fatal(err)
		}
		err = d.WriteChecksums()
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		s, err := loadVerified(work)
		if err == nil {
			s.dir.Close()
			return
		}
		if !strings.Contains(err.Error(), ".img") {
			t.Fatalf("error %q names no image file", err)
		}
		var ie *image.Error
		if errors.As(err, &ie) && ie.File == name && (ie.Offset < 0 || ie.Offset > int64(len(data))) {
			t.Fatalf("error %q: offset %d outside %s's %d bytes", err, ie.Offset, name, len(data))
		}
		if !errors.Is(err, ErrBadImage) && !errors.Is(err, ErrNotSupported) && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %q matches neither ErrBadImage nor ErrNotSupported", err)
		}
	})
}
