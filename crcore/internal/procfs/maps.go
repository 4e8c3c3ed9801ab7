//go:build linux

package procfs

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// VMA is one line of /proc/PID/maps plus, from smaps, its VmFlags.
type VMA struct {
	Start, End uint64
	Read       bool
	Write      bool
	Exec       bool
	Shared     bool
	Offset     uint64
	Major      uint32
	Minor      uint32
	Inode      uint64
	Path       string // as printed, with " (deleted)" cut off
	Deleted    bool
	Flags      map[string]bool // VmFlags mnemonics ("gd", "sh", ...); nil from maps
	FlagsText  string          // the VmFlags line as printed
}

// Len is the VMA's size in bytes.
func (v *VMA) Len() uint64 { return v.End - v.Start }

// Special reports kernel-provided mappings: [vdso], [vvar], [vsyscall]...
func (v *VMA) Special() bool {
	return strings.HasPrefix(v.Path, "[") && v.Inode == 0 &&
		v.Path != "[heap]" && v.Path != "[stack]" && !strings.HasPrefix(v.Path, "[anon:")
}

// Anon reports a mapping with no file behind it.
func (v *VMA) Anon() bool { return v.Inode == 0 && !strings.HasPrefix(v.Path, "/") }

// Line renders the VMA as /proc/PID/maps would print it (for errors and
// tests).
func (v *VMA) Line() string {
	p := []byte("----")
	if v.Read {
		p[0] = 'r'
	}
	if v.Write {
		p[1] = 'w'
	}
	if v.Exec {
		p[2] = 'x'
	}
	p[3] = 'p'
	if v.Shared {
		p[3] = 's'
	}
	return fmt.Sprintf("%x-%x %s %08x %02x:%02x %d %s", v.Start, v.End, p, v.Offset, v.Major, v.Minor, v.Inode, v.Path)
}

// parseMapsLine parses one maps/smaps header line.
func parseMapsLine(line string) (*VMA, error) {
	// start-end perms offset dev inode [path]
	f := strings.SplitN(line, " ", 6)
	if len(f) < 5 {
		return nil, fmt.Errorf("maps line %q: too few fields", line)
	}
	v := &VMA{}
	se := strings.SplitN(f[0], "-", 2)
	if len(se) != 2 {
		return nil, fmt.Errorf("maps line %q: bad range", line)
	}
	var err error
	if v.Start, err = strconv.ParseUint(se[0], 16, 64); err != nil {
		return nil, fmt.Errorf("maps line %q: %w", line, err)
	}
	if v.End, err = strconv.ParseUint(se[1], 16, 64); err != nil {
		return nil, fmt.Errorf("maps line %q: %w", line, err)
	}
	if len(f[1]) != 4 {
		return nil, fmt.Errorf("maps line %q: bad perms", line)
	}
	v.Read, v.Write, v.Exec, v.Shared = f[1][0] == 'r', f[1][1] == 'w', f[1][2] == 'x', f[1][3] == 's'
	if v.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return nil, fmt.Errorf("maps line %q: %w", line, err)
	}
	mj, mn, ok := strings.Cut(f[3], ":")
	if !ok {
		return nil, fmt.Errorf("maps line %q: bad dev", line)
	}
	maj, err1 := strconv.ParseUint(mj, 16, 32)
	min, err2 := strconv.ParseUint(mn, 16, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("maps line %q: bad dev", line)
	}
	v.Major, v.Minor = uint32(maj), uint32(min)
	if v.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return nil, fmt.Errorf("maps line %q: %w", line, err)
	}
	if len(f) == 6 {
		v.Path = strings.TrimLeft(f[5], " ")
		// A SysV segment's inode is its id, which may be 0.
		if p, ok := strings.CutSuffix(v.Path, " (deleted)"); ok && (v.Inode != 0 || strings.HasPrefix(p, "/SYSV")) {
			v.Path, v.Deleted = p, true
		}
	}
	return v, nil
}

// ParseMaps parses /proc/PID/maps or /proc/PID/smaps text.
func ParseMaps(r io.Reader) ([]*VMA, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return parseMaps(b)
}

// parseMaps is ParseMaps on the text in memory. A header line starts
// with its start address in lowercase hex; the smaps lines between
// headers start with an uppercase key ("Rss:", "VmFlags:"), and only
// VmFlags is kept: the others are passed over without a string made of
// them (a dump reads a task's smaps, some 25 lines a mapping).
func parseMaps(b []byte) ([]*VMA, error) {
	var out []*VMA
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		if c := line[0]; c >= 'A' && c <= 'Z' {
			val, ok := bytes.CutPrefix(line, []byte("VmFlags:"))
			if ok && len(out) > 0 {
				text := string(bytes.TrimSpace(val))
				fl := map[string]bool{}
				for _, m := range strings.Fields(text) {
					fl[m] = true
				}
				out[len(out)-1].Flags = fl
				out[len(out)-1].FlagsText = text
			}
			continue
		}
		v, err := parseMapsLine(string(line))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// ReadMaps reads /proc/PID/smaps (for VmFlags).
func ReadMaps(pid int) ([]*VMA, error) {
	b, err := ReadFile(Path(pid, "smaps"))
	if err != nil {
		return nil, err
	}
	vmas, err := parseMaps(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Path(pid, "smaps"), err)
	}
	return vmas, nil
}

// ReadMapsFast reads /proc/PID/maps (no VmFlags).
func ReadMapsFast(pid int) ([]*VMA, error) {
	b, err := ReadFile(Path(pid, "maps"))
	if err != nil {
		return nil, err
	}
	return parseMaps(b)
}
