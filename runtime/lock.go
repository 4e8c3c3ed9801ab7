//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockDir holds one lock file per container.
var LockDir = "/run/crhook/locks"

// Lock takes the exclusive lock of container id (flock on
// LockDir/ID.lock), waiting while another crhook holds it, until ctx
// ends. The returned func releases it. The lock dies with the process, so
// a crashed checkpoint never leaves a container locked.
func Lock(ctx context.Context, id string) (func(), error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(LockDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock container %s: %w", id, err)
	}
	p := filepath.Join(LockDir, id+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock container %s: %w", id, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock container %s: %w", id, os.NewSyscallError("flock", err))
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("lock container %s: held by another crhook: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return func() {
		// Closing the only fd of the lock releases it too.
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		_ = f.Close()
	}, nil
}
