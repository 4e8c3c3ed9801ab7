// Package procfs reads what the engine needs from /proc/PID: stat and
// status fields, the VMA list with its VmFlags, fdinfo, auxv and the
// pagemap. Parsers take the text and are tested on samples; readers add
// the path. Files are opened O_CLOEXEC (os.Open does).
//
//go:build linux

package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Path returns /proc/PID/name.
func Path(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

// TaskPath returns /proc/PID/task/TID/name.
func TaskPath(pid, tid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name
}

// Stat is the subset of /proc/PID/stat the engine uses (proc(5) numbering
// in the comments).
type Stat struct {
	Pid        int
	Comm       string
	State      byte   // (3)
	Ppid       int    // (4)
	Pgrp       int    // (5)
	Session    int    // (6)
	Flags      uint64 // (9)
	NumThreads int    // (20)
	StartTime  uint64 // (22)
	StartCode  uint64 // (26)
	EndCode    uint64 // (27)
	StartStack uint64 // (28)
	ExitSignal int    // (38)
	StartData  uint64 // (45)
	EndData    uint64 // (46)
	StartBrk   uint64 // (47)
	ArgStart   uint64 // (48)
	ArgEnd     uint64 // (49)
	EnvStart   uint64 // (50)
	EnvEnd     uint64 // (51)
	ExitCode   int    // (52)
}

// ParseStat parses the text of /proc/PID/stat.
func ParseStat(b []byte) (*Stat, error) {
	l := bytes.IndexByte(b, '(')
	r := bytes.LastIndexByte(b, ')')
	if l < 0 || r < l {
		return nil, errors.New("stat: no comm field")
	}
	s := &Stat{Comm: string(b[l+1 : r])}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:l])))
	if err != nil {
		return nil, fmt.Errorf("stat: pid: %w", err)
	}
	s.Pid = pid
	f := strings.Fields(string(b[r+1:]))
	// f[0] is field (3).
	if len(f) < 50 {
		return nil, fmt.Errorf("stat: %d fields after comm, want 50", len(f))
	}
	if len(f[0]) != 1 {
		return nil, fmt.Errorf("stat: state %q", f[0])
	}
	s.State = f[0][0]
	num := func(n int) uint64 {
		v, e := strconv.ParseInt(f[n-3], 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("stat: field %d: %w", n, e)
		}
		return uint64(v)
	}
	s.Ppid = int(num(4))
	s.Pgrp = int(num(5))
	s.Session = int(num(6))
	s.Flags = num(9)
	s.NumThreads = int(num(20))
	s.StartTime = num(22)
	s.StartCode = num(26)
	s.EndCode = num(27)
	s.StartStack = num(28)
	s.ExitSignal = int(num(38))
	s.StartData = num(45)
	s.EndData = num(46)
	s.StartBrk = num(47)
	s.ArgStart = num(48)
	s.ArgEnd = num(49)
	s.EnvStart = num(50)
	s.EnvEnd = num(51)
	s.ExitCode = int(num(52))
	return s, err
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (*Stat, error) {
	b, err := ReadFile(Path(pid, "stat"))
	if err != nil {
		return nil, err
	}
	s, err := ParseStat(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Path(pid, "stat"), err)
	}
	return s, nil
}

// ReadTaskStat reads /proc/PID/task/TID/stat.
func ReadTaskStat(pid, tid int) (*Stat, error) {
	b, err := ReadFile(TaskPath(pid, tid, "stat"))
	if err != nil {
		return nil, err
	}
	return ParseStat(b)
}

// Status is /proc/PID/status as key -> value text.
type Status map[string]string

// ParseStatus parses the text of /proc/PID/status. Keys and values are
// substrings of one copy of the text: a dump reads the status of every
// thread, and a scanner's string per line was most of parsing 1000.
func ParseStatus(b []byte) Status {
	text := string(b)
	st := make(Status, 64)
	for text != "" {
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		if k, v, ok := strings.Cut(line, ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

// ReadStatus reads /proc/PID/status.
func ReadStatus(pid int) (Status, error) {
	b, err := ReadFile(Path(pid, "status"))
	if err != nil {
		return nil, err
	}
	return ParseStatus(b), nil
}

// Uint parses a numeric status field in base (8 for Umask, 16 for masks,
// 10 otherwise).
func (s Status) Uint(key string, base int) (uint64, error) {
	v, ok := s[key]
	if !ok {
		return 0, fmt.Errorf("status: no %s field", key)
	}
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0, fmt.Errorf("status: empty %s field", key)
	}
	n, err := strconv.ParseUint(f[0], base, 64)
	if err != nil {
		return 0, fmt.Errorf("status: %s: %w", key, err)
	}
	return n, nil
}

// Ints parses a whitespace-separated list of decimal numbers (Uid, Gid,
// Groups, NSpid).
func (s Status) Ints(key string) ([]int, error) {
	var out []int
	for _, f := range strings.Fields(s[key]) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("status: %s: %w", key, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// Tids lists the threads of pid, the leader first.
func Tids(pid int) ([]int, error) {
	names, err := ReadDirNames(Path(pid, "task"))
	if err != nil {
		return nil, err
	}
	tids := []int{pid}
	for _, name := range names {
		t, err := strconv.Atoi(name)
		if err != nil || t == pid {
			continue
		}
		tids = append(tids, t)
	}
	return tids, nil
}

// Children lists the children of thread tid of pid
// (/proc/PID/task/TID/children).
func Children(pid, tid int) ([]int, error) {
	b, err := ReadFile(TaskPath(pid, tid, "children"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("children of %d: %w", tid, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// ReadAuxv reads /proc/PID/auxv as words.
func ReadAuxv(pid int) ([]uint64, error) {
	b, err := ReadFile(Path(pid, "auxv"))
	if err != nil {
		return nil, err
	}
	out := make([]uint64, len(b)/8)
	for i := range out {
		out[i] = leUint64(b[i*8:])
	}
	return out, nil
}

func leUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
