//go:build linux

package procfs

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
)

// TestReadFile: ReadFile returns what os.ReadFile does, for a file larger
// than its first buffer, and os-style errors.
func TestReadFile(t *testing.T) {
	// Files of this process that do not change between two reads;
	// then a file of several buffers (4 KiB the first).
	for _, p := range []string{"/proc/self/auxv", "/proc/self/cmdline"} {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadFile(%s) = %d bytes, %v; os.ReadFile %d bytes", p, len(got), err, len(want))
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes: four buffers
	f := t.TempDir() + "/big"
	if err := os.WriteFile(f, big, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadFile(f); err != nil || !bytes.Equal(got, big) {
		t.Errorf("ReadFile of %d bytes = %d bytes, %v", len(big), len(got), err)
	}
	_, err := ReadFile("/proc/self/no-such-file")
	var pe *os.PathError
	if !errors.Is(err, os.ErrNotExist) || !errors.As(err, &pe) {
		t.Errorf("ReadFile of a missing file: %v, want an *os.PathError matching os.ErrNotExist", err)
	}
}

// TestReadDirNames: the names os.ReadDir lists, without . and ..
func TestReadDirNames(t *testing.T) {
	dir := t.TempDir()
	var want []string
	for _, n := range []string{"a", "b", "10", "2"} {
		if err := os.WriteFile(dir+"/"+n, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		want = append(want, n)
	}
	got, err := ReadDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("ReadDirNames = %v, want %v", got, want)
	}
	if _, err := ReadDirNames(dir + "/none"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadDirNames of a missing directory: %v", err)
	}
}
