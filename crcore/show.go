//go:build linux && amd64

package crcore

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crhook/crhook/crcore/internal/image"
	pb "github.com/crhook/crhook/proto"
)

// DecodeImage reads one image file whatever its kind, for display: it
// returns the kind's name (CRIU's, e.g. "CORE") and every entry.
func DecodeImage(path string) (string, []proto.Message, error) {
	k, msgs, err := image.Decode(path)
	return k.Name, msgs, err
}

// FdLine is one fd of one process of a checkpoint and the file it holds,
// as crit x DIR fds shows it.
type FdLine struct {
	Pid  int    `json:"pid"`
	Fd   uint32 `json:"fd"`
	Type string `json:"type"` // CRIU's fd type name: REG, UNIXSK, PIPE...
	// Desc describes the file: a path with position and flags, a
	// socket's addresses and state...
	Desc string `json:"desc"`
}

// String formats the line as "PID: FD TYPE DESCRIPTION".
func (l FdLine) String() string {
	return fmt.Sprintf("%d: %d %s %s", l.Pid, l.Fd, l.Type, l.Desc)
}

// FdTable reads a checkpoint directory and returns every process's fds,
// in process-tree order and by fd number, each with the file it holds
// resolved.
func FdTable(dir string) ([]FdLine, error) {
	s, err := loadImages(dir)
	if err != nil {
		return nil, err
	}
	defer s.dir.Close()
	var out []FdLine
	for _, p := range s.tree {
		ti := s.tasks[int(p.GetPid())]
		if ti == nil {
			continue
		}
		fds := append([]*pb.FdinfoEntry{}, ti.fds...)
		sort.Slice(fds, func(i, j int) bool { return fds[i].GetFd() < fds[j].GetFd() })
		for _, e := range fds {
			l := FdLine{Pid: ti.pid, Fd: e.GetFd(), Type: e.GetType().String()}
			f, ok := s.files[e.GetId()]
			if !ok {
				l.Desc = fmt.Sprintf("file %d missing from files.img", e.GetId())
			} else {
				l.Desc = s.describeFile(f)
			}
			if e.GetFlags()&unix.FD_CLOEXEC != 0 {
				l.Desc += " cloexec"
			}
			out = append(out, l)
		}
	}
	return out, nil
}

func (s *imageSet) describeFile(f *pb.FileEntry) string {
	switch {
	case f.GetReg() != nil:
		r := f.GetReg()
		d := fmt.Sprintf("%s pos=%d flags=%s", r.GetName(), r.GetPos(), openFlagsString(r.GetFlags()))
		if s.isGhost(f.GetId()) {
			d = fmt.Sprintf("%s (deleted) pos=%d flags=%s", r.GetName(), r.GetPos(), openFlagsString(r.GetFlags()))
		}
		return d
	case f.GetUsk() != nil:
		return describeUnix(f.GetUsk())
	case f.GetIsk() != nil:
		return describeInet(f.GetIsk())
	case f.GetType() == pb.FdTypes_EXT:
		return "external (the restorer's standard stream)"
	}
	// Kinds without a description of their own: the entry itself, on
	// one line.
	m := f.ProtoReflect()
	var parts []string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() != nil {
			b, err := prototext.MarshalOptions{}.Marshal(v.Message().Interface())
			if err == nil {
				parts = append(parts, strings.Join(strings.Fields(string(b)), " "))
			}
		}
		return true
	})
	return strings.Join(parts, " ")
}

// openFlagsString names the file status flags of an open(2) call.
func openFlagsString(fl uint32) string {
	var parts []string
	switch fl & unix.O_ACCMODE {
	case unix.O_RDONLY:
		parts = append(parts, "O_RDONLY")
	case unix.O_WRONLY:
		parts = append(parts, "O_WRONLY")
	case unix.O_RDWR:
		parts = append(parts, "O_RDWR")
	}
	rest := fl &^ unix.O_ACCMODE
	for _, n := range []struct {
		bit  uint32
		name string
	}{
		{unix.O_APPEND, "O_APPEND"}, {unix.O_NONBLOCK, "O_NONBLOCK"}, {unix.O_DIRECT, "O_DIRECT"},
		{unix.O_PATH, "O_PATH"}, {unix.O_DIRECTORY, "O_DIRECTORY"}, {unix.O_NOATIME, "O_NOATIME"},
		{unix.O_DSYNC, "O_DSYNC"}, {unix.O_SYNC &^ unix.O_DSYNC, "O_SYNC"}, {0o100000, "O_LARGEFILE"},
		{unix.O_NOFOLLOW, "O_NOFOLLOW"}, {unix.O_ASYNC, "O_ASYNC"},
	} {
		if rest&n.bit != 0 {
			parts = append(parts, n.name)
			rest &^= n.bit
		}
	}
	if rest != 0 {
		parts = append(parts, fmt.Sprintf("%#o", rest))
	}
	return strings.Join(parts, "|")
}
