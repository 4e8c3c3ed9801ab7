package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/crhook/crhook/proto"
)

// TestVerifyFiles: a directory whose files match their checksums
// verifies, and holds its small files for NewReader; a missing file, one
// of another size, a symlink, an image file the checksums do not list
// and a flipped byte are each refused, naming the file. Both ways of opening are run: openat2 beneath the directory,
// and the os.Root a kernel without openat2 leaves (fd -1).
func TestVerifyFiles(t *testing.T) {
	for _, raw := range []bool{true, false} {
		t.Run(map[bool]string{true: "openat2", false: "os.Root"}[raw], func(t *testing.T) {
			cases := []struct {
				name, want string
				edit       func(dir string)
			}{
				{"good", "", func(string) {}},
				{"missing", "b.img: missing", func(dir string) { os.Remove(filepath.Join(dir, "b.img")) }},
				{"size", "b.img: size", func(dir string) {
					if err := os.Truncate(filepath.Join(dir, "b.img"), 3); err != nil {
						t.Fatal(err)
					}
				}},
				{"symlink", "b.img: not a regular file", func(dir string) {
					p := filepath.Join(dir, "b.img")
					os.Rename(p, p+".real")
					if err := os.Symlink("b.img.real", p); err != nil {
						t.Fatal(err)
					}
				}},
				{"unlisted", "c.img: not listed", func(dir string) {
					if err := os.WriteFile(filepath.Join(dir, "c.img"), []byte("x"), 0o600); err != nil {
						t.Fatal(err)
					}
				}},
				{"flipped byte", "b.img: checksum mismatch", func(dir string) {
					p := filepath.Join(dir, "b.img")
					b, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					b[len(b)-1] ^= 1
					if err := os.WriteFile(p, b, 0o600); err != nil {
						t.Fatal(err)
					}
				}},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					d := newDir(t)
					writeImage(t, d, "a.img", Pstree, pstree(10))
					writeImage(t, d, "b.img", Pstree, pstree(20), pstree(30))
					if err := d.WriteChecksums(); err != nil {
						t.Fatal(err)
					}
					c.edit(d.Path())
					v, err := OpenDir(d.Path())
					if err != nil {
						t.Fatal(err)
					}
					defer v.Close()
					if !raw {
						v.fd = -1
					}
					err = v.VerifyChecksums()
					if c.want == "" {
						if err != nil {
							t.Fatalf("verify: %v", err)
						}
						if len(v.held) != 2 {
							t.Errorf("held %d files, want 2", len(v.held))
						}
						r, err := v.NewReader("b.img", Pstree)
						if err != nil {
							t.Fatal(err)
						}
						defer r.Close()
						got, err := ReadAll[pb.PstreeEntry](r)
						if err != nil || len(got) != 2 || got[1].GetPid() != 30 {
							t.Errorf("read back %v, %v", got, err)
						}
						return
					}
					var ce *ChecksumError
					if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &ce) || !errors.Is(err, ErrBadImage) {
						t.Fatalf("verify: %v, want a ChecksumError saying %q", err, c.want)
					}
				})
			}
		})
	}
}

// TestOpenWithoutOpenat2: files are created and opened through the
// os.Root when openat2 is not there, as through openat2.
func TestOpenWithoutOpenat2(t *testing.T) {
	d := newDir(t)
	d.fd = -1
	writeImage(t, d, "a.img", Pstree, pstree(10))
	if _, err := d.create("a.img"); !errors.Is(err, os.ErrExist) {
		t.Errorf("create over an existing file: %v", err)
	}
	r, err := d.NewReader("a.img", Pstree)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := ReadAll[pb.PstreeEntry](r); err != nil || len(got) != 1 {
		t.Errorf("read back %v, %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(d.Path(), "a.img"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a.img: %v, %v", fi, err)
	}
}
