//go:build linux

package procfs

import (
	"os"
	"strings"
	"testing"
)

// TestParseMaps: smaps text gives the VMAs of maps text, each with its
// VmFlags; paths keep their spaces, and a deleted file is marked.
func TestParseMaps(t *testing.T) {
	const smaps = `7f0000000000-7f0000001000 r-xp 00001000 fd:01 1234  /usr/lib/a b.so
Size:                  4 kB
Rss:                   4 kB
VmFlags: rd ex mr mw me
7f0000001000-7f0000003000 rw-p 00000000 00:00 0 
Size:                  8 kB
THPeligible:    0
VmFlags: rd wr mr mw me ac hg
7ffd00000000-7ffd00021000 rw-s 00000000 00:01 77                         /memfd:x (deleted)
Anonymous:             0 kB
VmFlags: rd wr sh mr mw me ms
`
	vmas, err := ParseMaps(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	if len(vmas) != 3 {
		t.Fatalf("%d VMAs, want 3", len(vmas))
	}
	a, b, c := vmas[0], vmas[1], vmas[2]
	if a.Start != 0x7f0000000000 || a.End != 0x7f0000001000 || !a.Exec || a.Write || a.Offset != 0x1000 || a.Major != 0xfd || a.Minor != 1 || a.Inode != 1234 || a.Path != "/usr/lib/a b.so" || a.FlagsText != "rd ex mr mw me" || !a.Flags["mw"] {
		t.Errorf("first VMA %+v", a)
	}
	if b.Path != "" || !b.Write || !b.Flags["hg"] || b.Flags["ex"] || b.FlagsText != "rd wr mr mw me ac hg" {
		t.Errorf("second VMA %+v", b)
	}
	if !c.Shared || c.Path != "/memfd:x" || !c.Deleted || !c.Flags["sh"] {
		t.Errorf("third VMA %+v", c)
	}

	// This process's own, each with its flags. (Not compared with its
	// maps: the Go runtime may map memory between two reads.)
	self, err := ReadMaps(os.Getpid())
	if err != nil || len(self) == 0 {
		t.Fatalf("smaps: %d VMAs, %v", len(self), err)
	}
	for i, v := range self {
		if v.End <= v.Start || v.Flags == nil || v.FlagsText == "" {
			t.Errorf("VMA %d: %+v", i, v)
		}
	}
}
