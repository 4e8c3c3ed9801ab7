//go:build linux && amd64

package crcore_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
	"github.com/crhook/crhook/crcore/internal/image"
	pb "github.com/crhook/crhook/proto"
)

// TestXStateOfAnotherCPU: an image whose XSAVE state needs features this
// CPU lacks, or an area of another size, is refused by verify and by a
// restore, saying so, before any process is created. A good dump of this
// machine passes the same check (else every restore would fail).
func TestXStateOfAnotherCPU(t *testing.T) {
	crtest.RequireRoot(t)
	dir, pid := dumpCounter(t, false)
	if err := crcore.Verify(dir); err != nil {
		t.Fatalf("verify of a good dump: %v", err)
	}
	name := fmt.Sprintf("crhook-task-%d.img", pid)
	edit := func(dir string, f func(x []byte) []byte) {
		ext := readImage[*pb.CrhookTaskEntry](t, dir, name)[0]
		th := ext.GetThreads()[0]
		if len(th.GetXsave()) < 576 {
			t.Fatalf("the dump's XSAVE area has %d bytes", len(th.GetXsave()))
		}
		th.Xsave = f(th.Xsave)
		rewrite(t, dir, name, image.CrhookTask, ext)
	}
	for _, c := range []struct {
		name, want string
		f          func(x []byte) []byte
	}{
		// Bit 62 is no state component any CPU has.
		{"features", "uses features 0x4000000000000000", func(x []byte) []byte {
			bv := binary.LittleEndian.Uint64(x[512:])
			binary.LittleEndian.PutUint64(x[512:], bv|1<<62)
			return x
		}},
		{"size", "", nil}, // want: set by the edit
	} {
		t.Run(c.name, func(t *testing.T) {
			cp := copyDir(t, dir)
			f, want := c.f, c.want
			if f == nil {
				// An area 64 bytes larger, as a CPU with one more
				// component would write.
				f = func(x []byte) []byte {
					want = fmt.Sprintf("XSAVE area of %d bytes", len(x)+64)
					return append(x, make([]byte, 64)...)
				}
			}
			edit(cp, f)
			for what, err := range map[string]error{
				"verify": crcore.Verify(cp),
				"restore": func() error {
					_, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: cp})
					return err
				}(),
			} {
				if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), name) {
					t.Errorf("%s: %v, want an error naming %s and saying %q", what, err, name, want)
				} else if !errors.Is(err, crcore.ErrNotSupported) {
					t.Errorf("%s: %v is no ErrNotSupported", what, err)
				} else {
					t.Logf("%s: %v", what, err)
				}
			}
			checkNoStray(t, []int{pid})
		})
	}
}
