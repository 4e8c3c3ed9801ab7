//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// Helpers shared by the drivers of kernel objects without a path (pipes,
// eventfd, signalfd, timerfd, memfd, inotify, epoll).

// setflMask is what fcntl(F_SETFL) changes on the kinds restored here.
// O_ASYNC is left out: it needs the owner (fown) that crhook does not
// restore yet. O_DIRECT on a pipe is only settable through pipe2.
const setflMask = unix.O_APPEND | unix.O_NONBLOCK | unix.O_NOATIME

// fdinfoValue returns the value of the fdinfo line "key: value".
func fdinfoValue(fi *procfs.FdInfo, key string) (string, bool) {
	for _, l := range fi.Lines {
		k, v, ok := strings.Cut(l, ":")
		if ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// fdinfoUint parses the fdinfo value of key in base (16 for the hex
// numbers eventfd and signalfd print).
func fdinfoUint(f *openFd, key string, base int) (uint64, error) {
	v, ok := fdinfoValue(f.Info, key)
	if !ok {
		return 0, fmt.Errorf("fdinfo of pid %d fd %d: no %q line: %w", f.Pid, f.Fd, key, ErrNotSupported)
	}
	n, err := strconv.ParseUint(v, base, 64)
	if err != nil {
		return 0, fmt.Errorf("fdinfo of pid %d fd %d: %s: %w", f.Pid, f.Fd, key, err)
	}
	return n, nil
}

// fdinfoFields splits a multi-field fdinfo line ("tfd: 3 events: 19
// data: 1234 pos:0", "inotify wd:1 ino:3c4a3 ...") into key -> value.
// Words without a colon (the leading "inotify") are skipped.
func fdinfoFields(line string) map[string]string {
	out := map[string]string{}
	w := strings.Fields(line)
	for i := 0; i < len(w); i++ {
		k, v, ok := strings.Cut(w[i], ":")
		if !ok {
			continue
		}
		if v == "" && i+1 < len(w) {
			i++
			v = w[i]
		}
		out[k] = v
	}
	return out
}

// hexField parses field k of an fdinfoFields map as hex.
func hexField(m map[string]string, k string) (uint64, error) {
	v, ok := m[k]
	if !ok {
		return 0, fmt.Errorf("no %s field", k)
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("field %s: %w", k, err)
	}
	return n, nil
}

// taskFd copies fd of the restored task pid into our process with
// pidfd_getfd (close-on-exec). It shares the task's open file: status
// flags, the pipe size and seals set through it, and data written to it,
// are the task's.
func taskFd(pid int, fd uint64) (*os.File, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("open pidfd of pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pfd)
	n, err := unix.PidfdGetfd(pfd, int(fd), 0)
	if err != nil {
		return nil, fmt.Errorf("copy fd %d of pid %d: %w", fd, pid, os.NewSyscallError("pidfd_getfd", err))
	}
	return os.NewFile(uintptr(n), fmt.Sprintf("pid %d fd %d", pid, fd)), nil
}

// reopenInTask opens the file at fd again in the task, through
// /proc/self/fd, as a new open file of the same inode with its own
// status flags.
func reopenInTask(r *remote, fd uint64, flags uint32) (uint64, error) {
	r.reset()
	p, err := r.cstring("/proc/self/fd/" + strconv.FormatUint(fd, 10))
	if err != nil {
		return 0, err
	}
	return r.call(fmt.Sprintf("reopen fd %d", fd), unix.SYS_OPENAT, atFdcwd, p, uint64(flags|unix.O_CLOEXEC), 0)
}

// setStatusFlags sets the file status flags of fd in the task to those of
// the image that fcntl(F_SETFL) can set.
func setStatusFlags(r *remote, fd uint64, flags uint32) error {
	_, err := r.call("fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(flags&setflMask))
	return err
}

// setLocalFlags is setStatusFlags through a local copy of the file.
func setLocalFlags(f *os.File, flags uint32) error {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, int(flags&setflMask)); err != nil {
		return os.NewSyscallError("fcntl(F_SETFL)", err)
	}
	return nil
}

func closeInTask(r *remote, fd uint64) error {
	_, err := r.call("close", unix.SYS_CLOSE, fd)
	return err
}

// filesWhere returns the file entries of type t for which keep is true,
// by id: the open files of one object (the ends of a pipe, the opens of a
// memfd).
func filesWhere(c *fdRestoreCtx, t pb.FdTypes, keep func(*pb.FileEntry) bool) []*pb.FileEntry {
	var out []*pb.FileEntry
	for _, f := range c.Files() {
		if f.GetType() == t && keep(f) {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetId() < out[j].GetId() })
	return out
}

// dumpedWhere reports whether an entry already dumped satisfies match
// (the data of a pipe is written once, with its first end).
func dumpedWhere(c *fdDumpCtx, match func(*pb.FileEntry) bool) bool {
	for _, e := range c.ft.entries {
		if match(e) {
			return true
		}
	}
	return false
}

// writeAllNonblock writes b to a non-blocking file (a pipe we just sized
// to hold it); EAGAIN means the data does not fit.
func writeAllNonblock(f *os.File, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(int(f.Fd()), b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("write %d bytes to %s: the data does not fit", len(b), f.Name())
		}
		if err != nil {
			return fmt.Errorf("write to %s: %w", f.Name(), os.NewSyscallError("write", err))
		}
		b = b[n:]
	}
	return nil
}

// fileObjectName is how errors name an open file of a task.
func fileObjectName(f *openFd) string {
	return fmt.Sprintf("pid %d fd %d (%s)", f.Pid, f.Fd, f.Link)
}
