//go:build linux && amd64

package crcore

import "runtime"

// onLockedThread runs f on a fresh goroutine locked to its OS thread. The
// thread is never returned to the scheduler's pool: it may hold ptrace
// relationships or other per-thread kernel state, and it exits with the
// goroutine.
func onLockedThread(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		done <- f()
	}()
	return <-done
}
