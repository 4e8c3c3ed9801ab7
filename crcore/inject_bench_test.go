//go:build linux && amd64

package crcore

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkInjectedSyscall measures one crash-safe injected syscall on
// the dump side (getppid in a stopped sleep(1)): the unit cost that a
// dump of many small tasks multiplies.
func BenchmarkInjectedSyscall(b *testing.B) {
	withInjectable(b, func(r *remote, _ int) error {
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := r.call("getppid", unix.SYS_GETPPID); err != nil {
				return err
			}
		}
		b.StopTimer()
		return nil
	})
}

// BenchmarkBatchedSyscall is the same syscall run in batches of 32
// (batch.go), per syscall.
func BenchmarkBatchedSyscall(b *testing.B) {
	withInjectable(b, func(safe *remote, _ int) error {
		r := &remote{t: safe.t, gadget: safe.gadget, scratch: safe.scratch, size: safe.size}
		b.ResetTimer()
		for i := 0; i < b.N; i += 32 {
			bt := r.batch()
			for range 32 {
				bt.add("getppid", unix.SYS_GETPPID)
			}
			if _, err := bt.run(); err != nil {
				return err
			}
		}
		b.StopTimer()
		return nil
	})
}

// BenchmarkSafeBatch is one crash-safe batch of 12 syscalls on the dump
// side (about what a dump asks of a process, safeinject.go), per batch:
// compare with 12 BenchmarkInjectedSyscall. The stop signal is chosen
// once, as the dump does from the status it read.
func BenchmarkSafeBatch(b *testing.B) {
	withInjectable(b, func(r *remote, _ int) error {
		if r.stop = r.safe.stopFor(r.t); r.stop == nil {
			b.Fatal("no stop signal for sleep(1)")
		}
		b.ResetTimer()
		for range b.N {
			bt := r.batch()
			for range 12 {
				bt.add("getppid", unix.SYS_GETPPID)
			}
			if _, err := bt.run(); err != nil {
				return err
			}
		}
		b.StopTimer()
		return nil
	})
}
