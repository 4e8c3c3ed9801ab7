//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// prepareImageDir checks that path can receive a new checkpoint: missing,
// or a directory without images. It returns the undo of a failed dump:
// remove the files the dump added, and the directory if the dump made it.
func prepareImageDir(path string) (func(), error) {
	before := map[string]bool{}
	ents, err := os.ReadDir(path)
	made := errors.Is(err, fs.ErrNotExist)
	if err != nil && !made {
		return nil, fmt.Errorf("image dir: %w", err)
	}
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".img" {
			return nil, fmt.Errorf("image dir %s already holds images (%s): use an empty directory", path, e.Name())
		}
		before[e.Name()] = true
	}
	return func() {
		if made {
			_ = os.RemoveAll(path)
			return
		}
		ents, _ := os.ReadDir(path)
		for _, e := range ents {
			if !before[e.Name()] {
				_ = os.Remove(filepath.Join(path, e.Name()))
			}
		}
	}, nil
}

// syncDir makes the images durable before the dumped tree is killed.
func syncDir(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: path, Err: err}
	}
	return nil
}
