//go:build linux && amd64

package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
)

// TestVerifyCLI: crhook verify exits 0 on a good dump and 1 naming the
// file on a corrupt one.
func TestVerifyCLI(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^count 3$`, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "img")
	if out, err := exec.Command(crhookBin, "dump", "-t", strconv.Itoa(p.Pid), "-D", dir).CombinedOutput(); err != nil {
		t.Fatalf("dump: %v\n%s", err, out)
	}
	crtest.Reap(p.Pid)
	if out, err := exec.Command(crhookBin, "verify", dir).CombinedOutput(); err != nil {
		t.Fatalf("verify of a good dump: %v\n%s", err, out)
	}
	name := "pages-" + strconv.Itoa(p.Pid) + ".img"
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 100)
	b[0] ^= 1
	f.WriteAt(b, 100)
	f.Close()
	out, err := exec.Command(crhookBin, "verify", dir).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), name) {
		t.Fatalf("verify of a corrupt %s: %v\n%s", name, err, out)
	}
}
