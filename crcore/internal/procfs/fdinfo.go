//go:build linux

package procfs

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// FdInfo is /proc/PID/fdinfo/FD: pos, flags (octal, O_CLOEXEC included
// for the fd), mnt_id, ino, and every other line kept raw for the file
// kinds that print more (eventfd-count, tfd, inotify...).
type FdInfo struct {
	Pos   int64
	Flags uint32
	MntID int
	Ino   uint64
	Lines []string
}

// ParseFdInfo parses fdinfo text.
func ParseFdInfo(b []byte) (*FdInfo, error) {
	fi := &FdInfo{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "pos":
			fi.Pos, err = strconv.ParseInt(v, 10, 64)
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(v, 8, 32)
			fi.Flags = uint32(f)
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(v)
		case "ino":
			fi.Ino, err = strconv.ParseUint(v, 10, 64)
		default:
			fi.Lines = append(fi.Lines, line)
		}
		if err != nil {
			return nil, fmt.Errorf("fdinfo %s: %w", k, err)
		}
	}
	return fi, nil
}

// ReadFdInfo reads /proc/PID/fdinfo/FD.
func ReadFdInfo(pid, fd int) (*FdInfo, error) {
	p := Path(pid, "fdinfo/"+strconv.Itoa(fd))
	b, err := ReadFile(p)
	if err != nil {
		return nil, err
	}
	fi, err := ParseFdInfo(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return fi, nil
}

// Fds lists the open fds of pid, sorted.
func Fds(pid int) ([]int, error) {
	names, err := ReadDirNames(Path(pid, "fd"))
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(names))
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}
