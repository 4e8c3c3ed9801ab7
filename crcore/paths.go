//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"path"

	"golang.org/x/sys/unix"
)

// Paths of an image are untrusted. A dump records the paths the kernel
// shows for a task's files (/proc/PID/fd, exe, cwd, maps): absolute,
// clean, and free of symbolic links, since the kernel prints the path it
// reached. So a restore refuses any other: a relative path or one with
// "." or ".." components (it would depend on, or climb out of, the
// directory it is resolved from), and, inside a container's root, a path
// that passes through a symbolic link (which the image maker may have
// planted there to point out of the root).

// checkPathShapes refuses regular-file paths that a dump never writes.
func (s *imageSet) checkPathShapes() error {
	for id, f := range s.files {
		r := f.GetReg()
		if r == nil {
			continue
		}
		if err := checkPathShape(r.GetName()); err != nil {
			return fmt.Errorf("files.img: file %d: %w", id, err)
		}
	}
	return nil
}

func checkPathShape(name string) error {
	if name == "" || name[0] != '/' || path.Clean(name) != name {
		return fmt.Errorf("path %q is not absolute and clean (a dump writes none such; \"..\" could climb out of the root): %w", name, ErrBadImage)
	}
	return nil
}

// checkInRoot refuses a path of the image that reaches, inside the
// target's root, a symbolic link on its way. A path that does not exist
// is left to the step that opens it (a deleted file is recreated; its
// directory must be there).
func (s *imageSet) checkInRoot(id uint32, name string) error {
	if err := checkPathShape(name); err != nil {
		return fmt.Errorf("file %d: %w", id, err)
	}
	if s.root == "" {
		return nil
	}
	if s.isGhost(id) {
		name = path.Dir(name)
	}
	dir, err := unix.Open(s.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the target's root %s: %w", s.root, err)
	}
	defer unix.Close(dir)
	for {
		fd, err := unix.Openat2(dir, name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS,
		})
		switch {
		case err == nil:
			return unix.Close(fd)
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
			return fmt.Errorf("file %d: path %q passes through a symbolic link inside the container's root: refusing to follow it (a dumped path has none; this one may point out of the root): %w", id, name, ErrBadImage)
		}
		return nil
	}
}

// fdIDs lists the file ids of ti's fds.
func fdIDs(ti *taskImage) []uint32 {
	ids := make([]uint32, 0, len(ti.fds))
	for _, fd := range ti.fds {
		ids = append(ids, fd.GetId())
	}
	return ids
}
