//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/procfs"
	pb "github.com/crhook/crhook/proto"
)

// oom_score_adj and the audit login uid, in CRIU's task_core_entry
// fields (oom_score_adj, loginuid).
//
// oom_score_adj belongs to the process (its signal struct) and is
// written from outside, /proc/PID/oom_score_adj: the restorer may set
// any value. Restored into a container, a task never gets a lower value
// than the runtime gave it (lowering needs CAP_SYS_RESOURCE, a privilege
// the container's config may not grant); it keeps the runtime's, with a
// warning.
//
// The login uid belongs to each thread, and only the thread itself may
// write it (proc_loginuid_write): an injected open/write of
// /proc/thread-self/loginuid. The kernel lets a thread set it when it is
// unset (4294967295); changing a set one needs CAP_AUDIT_CONTROL and the
// audit feature loginuid_immutable off. So it is written before the
// credentials, and only where it differs; a container's task whose
// runtime left it otherwise keeps it, with a warning. Without
// CONFIG_AUDIT there is no loginuid file and nothing is recorded.

// readProcInt reads a decimal procfs file; ok is false when the file
// does not exist.
func readProcInt(path string) (v int64, ok bool, err error) {
	b, err := procfs.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	v, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", path, err)
	}
	return v, true, nil
}

// dumpOOMLoginuid records t's oom_score_adj and login uid in its core
// entry.
func dumpOOMLoginuid(tc *pb.TaskCoreEntry, pid int) error {
	adj, ok, err := readProcInt(procfs.Path(pid, "oom_score_adj"))
	if err != nil {
		return err
	}
	if ok {
		tc.OomScoreAdj = proto.Int32(int32(adj))
	}
	uid, ok, err := readProcInt(procfs.Path(pid, "loginuid"))
	if err != nil {
		return err
	}
	if ok {
		tc.Loginuid = proto.Uint32(uint32(uid))
	}
	return nil
}

// restoreOOM sets t's oom_score_adj from outside.
func (rs *restorer) restoreOOM(t *rtask) error {
	tc := t.ti.core.GetTc()
	if tc.OomScoreAdj == nil {
		return nil
	}
	want := int64(tc.GetOomScoreAdj())
	path := procfs.Path(t.hostPid, "oom_score_adj")
	cur, ok, err := readProcInt(path)
	if err != nil || !ok || cur == want {
		return err
	}
	if want < cur && rs.s.root != "" {
		rs.log.WithField("pid", t.ti.pid).Warnf("oom_score_adj %d of the image is below the container's %d: the container's is kept", want, cur)
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.FormatInt(want, 10)), 0); err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("set oom_score_adj %d (it is %d; lowering it needs CAP_SYS_RESOURCE): %w", want, cur, err)
		}
		return fmt.Errorf("set oom_score_adj %d: %w", want, err)
	}
	return nil
}

// restoreLoginuid gives each thread of t the image's login uid, from
// inside the thread. Precondition: the credentials are still the
// restorer's (or the container's).
func (rs *restorer) restoreLoginuid(t *rtask, remotes []*remote) error {
	tc := t.ti.core.GetTc()
	if tc.Loginuid == nil {
		return nil
	}
	want := int64(tc.GetLoginuid())
	for i, th := range t.threads {
		// One read answers for every thread (birthState).
		if !rs.born.loginuidKnown {
			cur, ok, err := readProcInt(procfs.TaskPath(t.hostPid, th.t.Tid, "loginuid"))
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("the image has a login uid (%d) and this kernel has no /proc/PID/loginuid (CONFIG_AUDIT): %w", want, ErrNotSupported)
			}
			rs.born.loginuidKnown, rs.born.loginuid = true, cur
		}
		cur := rs.born.loginuid
		if cur == want {
			continue
		}
		err := writeOwnLoginuid(remotes[i], want)
		if err != nil && rs.s.root != "" && errors.Is(err, unix.EPERM) {
			rs.log.WithField("tid", th.img.tid).Warnf("login uid %d of the image: %v: the container's %d is kept", want, err, cur)
			continue
		}
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (changing a set login uid needs CAP_AUDIT_CONTROL and loginuid_immutable off)", err)
		}
		if err != nil {
			return fmt.Errorf("thread %d: set login uid %d (it is %d): %w", th.img.tid, want, cur, err)
		}
	}
	return nil
}

// writeOwnLoginuid makes the thread of r write its own login uid.
func writeOwnLoginuid(r *remote, uid int64) error {
	r.reset()
	path, err := r.cstring("/proc/thread-self/loginuid")
	if err != nil {
		return err
	}
	val := []byte(strconv.FormatInt(uid, 10))
	buf, err := r.put(val)
	if err != nil {
		return err
	}
	fd, err := r.call("open /proc/thread-self/loginuid", unix.SYS_OPENAT, atFdcwd, path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	n, err := r.call("write loginuid", unix.SYS_WRITE, fd, buf, uint64(len(val)))
	r.callBestEffort("close", unix.SYS_CLOSE, fd)
	if err != nil {
		return err
	}
	if int(n) != len(val) {
		return fmt.Errorf("write loginuid: %d of %d bytes", n, len(val))
	}
	return nil
}
