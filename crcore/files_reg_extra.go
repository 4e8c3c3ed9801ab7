//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// Files unlinked while open ("ghost files", as CRIU calls them). The
// dump copies the contents into ghost-file-REMAPID.img (a
// ghost_file_entry, then the raw bytes) and records in remap-fpath.img
// that regular file ORIGID opens through ghost REMAPID, as CRIU does.
// The reg_file_entry keeps the path without " (deleted)".
//
// The restore writes the contents to a temporary file next to the path,
// renames it to the path unless something is there now (then it keeps
// the temporary name), opens it with the dumped flags and position, and
// unlinks it again: the fd's link reads "PATH (deleted)" as before.
//
// A file whose path was replaced by another file (rename over it) is
// unlinked from the kernel's point of view and shows " (deleted)": it
// is dumped as a ghost too, so the restored fd sees the dumped contents,
// not the new file. A file unlinked from this path but still linked
// under another name is dumped as a ghost as well: the restored fd no
// longer shares the inode with that other name.
//
// Ghosts larger than maxGhostSize are refused (ErrNotSupported). Two open
// files of one ghost inode come back as two inodes.

const (
	maxGhostSize     = 64 << 20
	remapFpathImage  = "remap-fpath.img"
	deletedSuffix    = " (deleted)"
	ghostChunk       = 32 << 10
	ghostTempPrefix  = ".crhook-ghost-"
	ghostWriteFlags  = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC
	ghostRenameFlags = 1 // RENAME_NOREPLACE, include/uapi/linux/fs.h
)

func ghostImage(id uint32) string { return "ghost-file-" + strconv.FormatUint(uint64(id), 10) + ".img" }

// dumpGhost saves the contents of the deleted file f (open file id) and
// returns the path it had.
func dumpGhost(c *fdDumpCtx, f *openFd, id uint32) (string, error) {
	name := strings.TrimSuffix(f.Link, deletedSuffix)
	if f.Mode() != unix.S_IFREG {
		return "", notSupportedf("%s: deleted file of mode %o: only regular files", f.Link, f.Stat.Mode)
	}
	if f.Stat.Size > maxGhostSize {
		return "", notSupportedf("%s: deleted file of %d bytes: ghost files are kept up to %d bytes", f.Link, f.Stat.Size, maxGhostSize)
	}
	// A fresh read-only open of the same inode: the fd may be
	// write-only or O_PATH, and its position must not move.
	src, err := os.OpenFile(procfs.Path(f.Pid, "fd/"+strconv.Itoa(f.Fd)), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open deleted file %s: %w", name, err)
	}
	defer src.Close()
	data, err := io.ReadAll(io.LimitReader(src, maxGhostSize+1))
	if err != nil {
		return "", fmt.Errorf("read deleted file %s: %w", name, err)
	}
	if len(data) > maxGhostSize {
		return "", notSupportedf("%s: deleted file grew past %d bytes", f.Link, maxGhostSize)
	}
	remap := c.ft.newID()
	st := &f.Stat
	g := &pb.GhostFileEntry{
		Uid:  proto.Uint32(st.Uid),
		Gid:  proto.Uint32(st.Gid),
		Mode: proto.Uint32(st.Mode),
		Dev:  proto.Uint32(uint32(st.Dev)),
		Ino:  proto.Uint64(st.Ino),
		Size: proto.Uint64(uint64(len(data))),
		Atim: &pb.Timeval{TvSec: proto.Uint64(uint64(st.Atim.Sec)), TvUsec: proto.Uint64(uint64(st.Atim.Nsec / 1000))},
		Mtim: &pb.Timeval{TvSec: proto.Uint64(uint64(st.Mtim.Sec)), TvUsec: proto.Uint64(uint64(st.Mtim.Nsec / 1000))},
	}
	w, err := c.dir.NewWriter(ghostImage(remap), image.GhostFile)
	if err != nil {
		return "", err
	}
	// Write errors stick: Close reports the first.
	_ = w.Write(g)
	_ = w.WriteRaw(data)
	if err := w.Close(); err != nil {
		return "", err
	}
	rw, err := c.Extra(remapFpathImage, image.RemapFpath)
	if err != nil {
		return "", err
	}
	if err := rw.Write(&pb.RemapFilePathEntry{OrigId: proto.Uint32(id), RemapId: proto.Uint32(remap), RemapType: pb.RemapType_GHOST.Enum()}); err != nil {
		return "", err
	}
	return name, nil
}

// ghostOf returns the ghost remap id of regular file id, if it has one.
func ghostOf(d *image.Dir, id uint32) (uint32, bool, error) {
	rd, err := d.NewReader(remapFpathImage, image.RemapFpath)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer rd.Close()
	for {
		var e pb.RemapFilePathEntry
		err := rd.Read(&e)
		if errors.Is(err, io.EOF) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		if e.GetOrigId() == id {
			if e.GetRemapType() != pb.RemapType_GHOST {
				return 0, false, badImagef("remap of file %d of type %v", id, e.GetRemapType())
			}
			return e.GetRemapId(), true, nil
		}
	}
}

// isGhost reports whether regular file id is restored from a ghost image
// (its path need not exist).
func (s *imageSet) isGhost(id uint32) bool {
	_, ok, err := ghostOf(s.dir, id)
	return ok && err == nil
}

// restoreGhost recreates a deleted file inside the task and opens it
// with flags; it returns the fd.
func restoreGhost(r *remote, d *image.Dir, remap uint32, f *pb.RegFileEntry, flags uint32) (uint64, error) {
	name := f.GetName()
	rd, err := d.NewReader(ghostImage(remap), image.GhostFile)
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	var g pb.GhostFileEntry
	if err := rd.Read(&g); err != nil {
		return 0, fmt.Errorf("%s: %w", ghostImage(remap), err)
	}
	if g.GetChunks() || g.GetMode()&unix.S_IFMT != unix.S_IFREG || g.GetSize() > maxGhostSize {
		return 0, badImagef("%s: ghost of mode %o, %d bytes, chunks %v", ghostImage(remap), g.GetMode(), g.GetSize(), g.GetChunks())
	}
	data, err := rd.ReadRaw(int(g.GetSize()))
	if err != nil {
		return 0, err
	}

	tmp := path.Join(path.Dir(name), fmt.Sprintf("%s%d-%d", ghostTempPrefix, r.pid(), remap))
	r.reset()
	p, err := r.cstring(tmp)
	if err != nil {
		return 0, err
	}
	wfd, err := r.call("create "+tmp, unix.SYS_OPENAT, atFdcwd, p, ghostWriteFlags, uint64(g.GetMode()&0o7777))
	if err != nil {
		return 0, err
	}
	defer r.callBestEffort("close", unix.SYS_CLOSE, wfd)
	created := tmp
	defer func() {
		if created != "" {
			_ = pathCall(r, "unlinkat", unix.SYS_UNLINKAT, created, 0) // best effort on the error path
		}
	}()
	for off := 0; off < len(data); off += ghostChunk {
		chunk := data[off:min(len(data), off+ghostChunk)]
		r.reset()
		bp, err := r.put(chunk)
		if err != nil {
			return 0, err
		}
		n, err := r.call("pwrite64 "+tmp, unix.SYS_PWRITE64, wfd, bp, uint64(len(chunk)), uint64(off))
		if err != nil {
			return 0, err
		}
		if n != uint64(len(chunk)) {
			return 0, fmt.Errorf("write %s: short write", tmp)
		}
	}
	if _, err := r.call("fchown "+tmp, unix.SYS_FCHOWN, wfd, uint64(g.GetUid()), uint64(g.GetGid())); err != nil {
		return 0, err
	}
	if _, err := r.call("fchmod "+tmp, unix.SYS_FCHMOD, wfd, uint64(g.GetMode()&0o7777)); err != nil {
		return 0, err
	}
	// Under its own name when that is free, so that the link reads as
	// it did.
	r.reset()
	op, err := r.cstring(tmp)
	if err != nil {
		return 0, err
	}
	np, err := r.cstring(name)
	if err != nil {
		return 0, err
	}
	if _, err := r.call("renameat2 "+tmp, unix.SYS_RENAMEAT2, atFdcwd, op, atFdcwd, np, ghostRenameFlags); err == nil {
		created = name
	} else if !errors.Is(err, unix.EEXIST) {
		return 0, err
	}
	r.reset()
	p, err = r.cstring(created)
	if err != nil {
		return 0, err
	}
	fd, err := r.call("open "+created, unix.SYS_OPENAT, atFdcwd, p, uint64(flags|unix.O_CLOEXEC), 0)
	if err != nil {
		return 0, err
	}
	if err := pathCall(r, "unlinkat", unix.SYS_UNLINKAT, created, 0); err != nil {
		return 0, err
	}
	created = ""
	return fd, nil
}

// A file replaced at its path between dump and restore: the dump records
// each regular file's device and inode (crhook-reg-files.img, crhook's
// own kind, since CRIU's reg_file_entry has no inode); a restore in the
// same boot of the same machine fstat()s what it opened and fails,
// naming both inodes, when they differ, instead of handing the program
// another file. Elsewhere inode numbers mean nothing and are not
// compared.
const regIdentImage = "crhook-reg-files.img"

var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

func dumpRegIdent(c *fdDumpCtx, id uint32, st *unix.Stat_t) error {
	w, err := c.Extra(regIdentImage, image.CrhookRegFiles)
	if err != nil {
		return err
	}
	return w.Write(&pb.CrhookRegFileEntry{Id: proto.Uint32(id), Dev: proto.Uint64(st.Dev), Ino: proto.Uint64(st.Ino), BootId: proto.String(bootID())})
}

func regIdent(d *image.Dir, id uint32) (*pb.CrhookRegFileEntry, error) {
	rd, err := d.NewReader(regIdentImage, image.CrhookRegFiles)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	for {
		var e pb.CrhookRegFileEntry
		err := rd.Read(&e)
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if e.GetId() == id {
			return &e, nil
		}
	}
}

// checkRegIdent fails when fd, just opened at f's path, is not the file
// the dump saw there.
func checkRegIdent(r *remote, d *image.Dir, f *pb.RegFileEntry, fd uint64) error {
	want, err := regIdent(d, f.GetId())
	if err != nil || want == nil || want.GetBootId() == "" || want.GetBootId() != bootID() {
		return err
	}
	r.reset()
	st, err := r.alloc(sizeofStat)
	if err != nil {
		return err
	}
	if _, err := r.call("fstat "+f.GetName(), unix.SYS_FSTAT, fd, st); err != nil {
		return err
	}
	var b [16]byte
	if err := r.read(st, b[:]); err != nil {
		return err
	}
	dev, ino := binary.NativeEndian.Uint64(b[:]), binary.NativeEndian.Uint64(b[8:])
	if dev != want.GetDev() || ino != want.GetIno() {
		return notSupportedf("%s names another file than at dump (inode %d on device %d:%d then, %d on %d:%d now): a replaced file",
			f.GetName(), want.GetIno(), unix.Major(want.GetDev()), unix.Minor(want.GetDev()), ino, unix.Major(dev), unix.Minor(dev))
	}
	return nil
}
