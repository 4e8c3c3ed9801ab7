package pb_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGeneratedUpToDate runs generate.sh into a temporary directory and
// requires its output to equal the committed *.pb.go files byte for byte.
func TestGeneratedUpToDate(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc not installed (make generate installs it): ", err)
	}
	if !havePlugin() {
		t.Skip("protoc-gen-go not in PATH or $(go env GOPATH)/bin (make generate installs it)")
	}

	out := t.TempDir()
	cmd := exec.Command("bash", "generate.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, b)
	}

	gen := pbFiles(t, filepath.Join(out, "proto"))
	have := pbFiles(t, ".")
	if !slices.Equal(gen, have) {
		t.Fatalf("generate.sh makes %v, committed are %v; run make generate", gen, have)
	}
	for _, name := range gen {
		g, err := os.ReadFile(filepath.Join(out, "proto", name))
		if err != nil {
			t.Fatal(err)
		}
		h, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g, h) {
			t.Errorf("%s differs from generate.sh's output; run make generate (and check protoc --version matches the header)", name)
		}
	}
}

func havePlugin() bool {
	if _, err := exec.LookPath("protoc-gen-go"); err == nil {
		return true
	}
	b, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return false
	}
	for _, dir := range filepath.SplitList(strings.TrimSpace(string(b))) {
		if _, err := os.Stat(filepath.Join(dir, "bin", "protoc-gen-go")); err == nil {
			return true
		}
	}
	return false
}

func pbFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	slices.Sort(m)
	return m
}
