//go:build linux && amd64

package crcore

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// inotifyDriver handles inotify instances, as CRIU's inotify_file_entry
// with its watches inline. fdinfo gives each watch's number, mask, inode
// and file handle; the dump resolves the handle with open_by_handle_at
// on the watched filesystem's mount and records the path in fh_entry.
//
// Restore adds the watches in wd order. The kernel hands out wd numbers
// increasingly (idr_alloc_cyclic) and does not reuse a removed one soon,
// so a gap in the numbers is recreated by adding the watch and removing
// it until it gets its number; the IN_IGNORED events this queues are
// drained. A watch that still gets another number fails the restore.
// Events queued at dump time are not kept (as in CRIU).
//
// Paths are resolved in the dumper's mount namespace: a task in another
// one (a container) needs them made relative to its root.
type inotifyDriver struct{}

func init() { registerFdDriver(inotifyDriver{}) }

func (inotifyDriver) Type() pb.FdTypes { return pb.FdTypes_INOTIFY }

func (inotifyDriver) Match(f *openFd) bool { return f.Link == "anon_inode:inotify" }

const (
	// fhWords is the least number of handle words CRIU stores.
	fhWords = 16
	// maxHandleSz is MAX_HANDLE_SZ of include/linux/exportfs.h.
	maxHandleSz = 128
)

func (inotifyDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	e := &pb.InotifyFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(f.Flags), Fown: zeroFown()}
	for _, l := range f.Info.Lines {
		if !strings.HasPrefix(l, "inotify ") {
			continue
		}
		wd, err := inotifyWatch(f, id, fdinfoFields(l))
		if err != nil {
			return nil, fmt.Errorf("inotify watch of %s: %w", fileObjectName(f), err)
		}
		e.Wd = append(e.Wd, wd)
	}
	return &pb.FileEntry{Ify: e}, nil
}

func inotifyWatch(f *openFd, id uint32, m map[string]string) (*pb.InotifyWdEntry, error) {
	var v [7]uint64
	for i, k := range []string{"wd", "ino", "sdev", "mask", "ignored_mask", "fhandle-bytes", "fhandle-type"} {
		var err error
		if v[i], err = hexField(m, k); err != nil {
			return nil, err
		}
	}
	wd, ino, sdev, mask, ignored, hbytes, htype := v[0], v[1], v[2], v[3], v[4], v[5], v[6]
	raw, err := hex.DecodeString(m["f_handle"])
	if err != nil || uint64(len(raw)) != hbytes || hbytes > maxHandleSz {
		return nil, fmt.Errorf("wd %d: file handle %q of %d bytes", wd, m["f_handle"], hbytes)
	}
	path, mntID, err := resolveHandle(f.Pid, uint32(sdev), ino, int32(htype), raw)
	if err != nil {
		return nil, fmt.Errorf("wd %d: %w", wd, err)
	}
	words := make([]uint64, max(fhWords, (len(raw)+7)/8))
	padded := make([]byte, 8*len(words))
	copy(padded, raw)
	for i := range words {
		words[i] = binary.LittleEndian.Uint64(padded[8*i:])
	}
	return &pb.InotifyWdEntry{
		Id:          proto.Uint32(id),
		IIno:        proto.Uint64(ino),
		Mask:        proto.Uint32(uint32(mask)),
		IgnoredMask: proto.Uint32(uint32(ignored)),
		SDev:        proto.Uint32(uint32(sdev)),
		Wd:          proto.Uint32(uint32(wd)),
		FHandle: &pb.FhEntry{
			Bytes:  proto.Uint32(uint32(hbytes)),
			Type:   proto.Uint32(uint32(htype)),
			Handle: words,
			Path:   proto.String(path),
			MntId:  proto.Uint32(uint32(mntID)),
		},
	}, nil
}

// resolveHandle finds the path of the inode a file handle names, through
// a mount of its filesystem (kernel dev_t sdev) that the task sees.
func resolveHandle(pid int, sdev uint32, ino uint64, htype int32, raw []byte) (string, int, error) {
	mnt, mntID, err := mountOfDev(pid, sdev>>20, sdev&(1<<20-1))
	if err != nil {
		return "", 0, err
	}
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, &os.PathError{Op: "open", Path: mnt, Err: err}
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(htype, raw), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.ESTALE) {
			return "", 0, fmt.Errorf("watched inode %d is gone: %w", ino, ErrNotSupported)
		}
		return "", 0, os.NewSyscallError("open_by_handle_at", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", 0, os.NewSyscallError("fstat", err)
	}
	if st.Ino != ino {
		return "", 0, fmt.Errorf("file handle opened inode %d, watch is on %d", st.Ino, ino)
	}
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", 0, err
	}
	if strings.HasSuffix(path, deletedSfx) || !strings.HasPrefix(path, "/") {
		return "", 0, fmt.Errorf("watched inode %d has no path (%s): %w", ino, path, ErrNotSupported)
	}
	return path, mntID, nil
}

// mountOfDev returns, as a path we can open, a mount point of the task
// whose device is major:minor, preferring a mount of the filesystem's
// root (a bind mount of a subtree cannot name inodes outside it).
func mountOfDev(pid int, major, minor uint32) (string, int, error) {
	fh, err := os.Open(procfs.Path(pid, "mountinfo"))
	if err != nil {
		return "", 0, err
	}
	defer fh.Close()
	want := fmt.Sprintf("%d:%d", major, minor)
	best, bestID := "", 0
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) < 5 || w[2] != want {
			continue
		}
		id, _ := strconv.Atoi(w[0])
		mp := filepath.Join(procfs.Path(pid, "root"), unescapeMount(w[4]))
		if w[3] == "/" {
			return mp, id, nil
		}
		if best == "" {
			best, bestID = mp, id
		}
	}
	if err := sc.Err(); err != nil {
		return "", 0, err
	}
	if best == "" {
		return "", 0, fmt.Errorf("no mount of device %s in pid %d: %w", want, pid, ErrNotSupported)
	}
	return best, bestID, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// maxWdSkips bounds the add/remove rounds that recreate a gap in the
// watch numbers.
const maxWdSkips = 1 << 16

func (inotifyDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	ie := e.GetIfy()
	fd, err := r.call("inotify_init1", unix.SYS_INOTIFY_INIT1, unix.IN_CLOEXEC|unix.IN_NONBLOCK)
	if err != nil {
		return 0, err
	}
	wds := append([]*pb.InotifyWdEntry{}, ie.GetWd()...)
	sort.Slice(wds, func(i, j int) bool { return wds[i].GetWd() < wds[j].GetWd() })
	skipped := 0
	for _, w := range wds {
		path := w.GetFHandle().GetPath()
		if path == "" {
			return 0, fmt.Errorf("inotify watch %d without a path: %w", w.GetWd(), ErrNotSupported)
		}
		r.reset()
		p, err := r.cstring(path)
		if err != nil {
			return 0, err
		}
		for {
			got, err := r.call("inotify_add_watch "+path, unix.SYS_INOTIFY_ADD_WATCH, fd, p, uint64(w.GetMask()))
			if err != nil {
				return 0, err
			}
			if got == uint64(w.GetWd()) {
				break
			}
			if got > uint64(w.GetWd()) || skipped >= maxWdSkips {
				return 0, fmt.Errorf("inotify watch on %s: got wd %d, the image has %d", path, got, w.GetWd())
			}
			if _, err := r.call("inotify_rm_watch", unix.SYS_INOTIFY_RM_WATCH, fd, got); err != nil {
				return 0, err
			}
			skipped++
		}
	}
	if skipped > 0 || ie.GetFlags()&setflMask != unix.O_NONBLOCK {
		local, err := taskFd(r.pid(), fd)
		if err != nil {
			return 0, err
		}
		defer local.Close()
		if skipped > 0 {
			if err := drainInotify(local); err != nil {
				return 0, err
			}
		}
		if err := setLocalFlags(local, ie.GetFlags()); err != nil {
			return 0, err
		}
	}
	return fd, nil
}

// drainInotify drops the IN_IGNORED events that removing the placeholder
// watches queued (the instance is still non-blocking).
func drainInotify(f *os.File) error {
	buf := make([]byte, 64<<10)
	for {
		_, err := unix.Read(int(f.Fd()), buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return os.NewSyscallError("read inotify", err)
		}
	}
}
