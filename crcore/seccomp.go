//go:build linux && amd64

package crcore

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/kabi"
	pb "github.com/crhook/crhook/proto"
)

// Seccomp and syscall injection: a filter applies to injected syscalls
// as to the task's own, and may forbid, kill or trap any of them (the
// dump's brk, the restore's final munmap of the scratch area). Both sides
// set PTRACE_O_SUSPEND_SECCOMP (CAP_SYS_ADMIN, CONFIG_CHECKPOINT_RESTORE)
// on a thread under seccomp before injecting into it; the kernel skips
// the thread's filters - strict mode too - until PTRACE_DETACH. On
// restore the filters are still installed by each thread's last injected
// syscall, after its credentials.

// dumpTraceOpts are the dump's ptrace options (seizeThreads).
const dumpTraceOpts = unix.PTRACE_O_TRACESYSGOOD

// restoreTraceOpts are a restored task's ptrace options (startHuskWith,
// and onexec's after the exec).
const restoreTraceOpts = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACECLONE |
	unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK

// dumpSeccomp reads the seccomp mode and filters of a thread (its status
// read already) and suspends them for the dump's injections.
func dumpSeccomp(th *dthread) error {
	mode, err := th.attrs.status.Uint("Seccomp", 10)
	if err != nil {
		return err
	}
	th.attrs.seccompMode = uint32(mode)
	if mode == kabi.SECCOMP_MODE_DISABLED {
		return nil
	}
	if err := th.t.SetOptions(dumpTraceOpts | unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
		return fmt.Errorf("suspend seccomp (needs CAP_SYS_ADMIN): %w", err)
	}
	if mode != kabi.SECCOMP_MODE_FILTER {
		return nil
	}
	progs, flags, err := th.t.SeccompFilters()
	if err != nil {
		return fmt.Errorf("seccomp filters (PTRACE_SECCOMP_GET_FILTER needs CAP_SYS_ADMIN): %w", err)
	}
	for i, p := range progs {
		th.attrs.filters = append(th.attrs.filters, &pb.CrhookSeccompFilter{Prog: p, Flags: proto.Uint64(flags[i])})
	}
	return nil
}

// restoreSeccomp installs each thread's filters, or strict mode, as the
// last injected syscalls of the thread. Threads whose filter chains are
// the same are synced: the leader installs the chain with
// SECCOMP_FILTER_FLAG_TSYNC, so that the threads share the filters as
// they did (a later TSYNC of the task's own succeeds). Otherwise each
// thread installs its own chain.
//
// A thread already running under filters (a container's init restored in
// place holds the container's) gets only what its image adds to them;
// when the chains differ it keeps the container's.
func restoreSeccomp(t *rtask, remotes []*remote) error {
	any := false
	for _, th := range t.threads {
		if th.img.core.GetThreadCore().GetSeccompMode() != pb.SeccompMode_disabled {
			any = true
		}
	}
	if !any {
		return nil
	}
	for _, th := range t.threads {
		if err := th.t.SetOptions(restoreTraceOpts | unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
			return fmt.Errorf("thread %d: suspend seccomp (needs CAP_SYS_ADMIN): %w", th.img.tid, err)
		}
	}
	chains := make([][]*pb.CrhookSeccompFilter, len(t.threads))
	synced := true
	for i, th := range t.threads {
		if th.img.core.GetThreadCore().GetSeccompMode() == pb.SeccompMode_filter {
			have, _, err := th.t.SeccompFilters()
			if err != nil {
				return fmt.Errorf("thread %d: %w", th.img.tid, err)
			}
			want := th.img.ext.GetSeccompFilters()
			// A thread already under filters is a container's init
			// restored in place: the runtime installed the filters its
			// config grants. Add what the image has beyond them; where
			// the chains do not line up, keep the container's as they
			// are (a restore never loosens them, and never adds to what
			// the config asked for).
			prefix := len(have) <= len(want)
			for k := 0; prefix && k < len(have); k++ {
				prefix = bytes.Equal(have[k], want[k].GetProg())
			}
			if prefix {
				chains[i] = want[len(have):]
			}
		}
		if i > 0 && !sameChain(chains[i], chains[0]) {
			synced = false
		}
	}
	for i, th := range t.threads {
		r := remotes[i]
		switch th.img.core.GetThreadCore().GetSeccompMode() {
		case pb.SeccompMode_disabled:
			// Nothing to install.
		case pb.SeccompMode_strict:
			if _, err := r.call("seccomp(SECCOMP_SET_MODE_STRICT)", unix.SYS_SECCOMP, kabi.SECCOMP_SET_MODE_STRICT, 0, 0); err != nil {
				return fmt.Errorf("thread %d: %w", th.img.tid, err)
			}
		case pb.SeccompMode_filter:
			if synced && len(t.threads) > 1 {
				if i > 0 {
					continue
				}
				if err := installFilters(r, chains[0], kabi.SECCOMP_FILTER_FLAG_TSYNC); err != nil {
					return fmt.Errorf("thread %d: %w", th.img.tid, err)
				}
				continue
			}
			if err := installFilters(r, chains[i], 0); err != nil {
				return fmt.Errorf("thread %d: %w", th.img.tid, err)
			}
		}
	}
	return nil
}

func sameChain(a, b []*pb.CrhookSeccompFilter) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].GetProg(), b[i].GetProg()) || a[i].GetFlags() != b[i].GetFlags() {
			return false
		}
	}
	return true
}

// installFilters installs filters in order (the first installed first).
// seccomp() wants no_new_privs or CAP_SYS_ADMIN: the image's creds are in
// place already, and a task that installed filters had one or the other.
func installFilters(r *remote, filters []*pb.CrhookSeccompFilter, flags uint64) error {
	for i, f := range filters {
		prog := f.GetProg()
		n := len(prog) / kabi.SizeofSockFilter
		if n == 0 || n > 4096 || len(prog)%kabi.SizeofSockFilter != 0 {
			return fmt.Errorf("seccomp filter %d: %d bytes: %w", i, len(prog), ErrBadImage)
		}
		r.reset()
		pp, err := r.put(prog)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		putLE(&b, kabi.SockFprog{Len: uint16(n), Filter: pp})
		fp, err := r.put(b.Bytes())
		if err != nil {
			return err
		}
		fl := flags | f.GetFlags()&kabi.SECCOMP_FILTER_FLAG_LOG
		name := fmt.Sprintf("seccomp(SECCOMP_SET_MODE_FILTER, filter %d)", i)
		ret, err := r.call(name, unix.SYS_SECCOMP, kabi.SECCOMP_SET_MODE_FILTER, fl, fp)
		if errors.Is(err, unix.EACCES) {
			return fmt.Errorf("%w: the thread has neither no_new_privs nor CAP_SYS_ADMIN", err)
		}
		if err != nil {
			return err
		}
		if ret != 0 {
			// TSYNC failed: ret is a thread that cannot be synced.
			return fmt.Errorf("%s: thread %d cannot be synced", name, ret)
		}
	}
	return nil
}
