//go:build linux && amd64

package crcore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/procfs"
	"github.com/crhook/crhook/crcore/internal/sockdiag"
	pb "github.com/crhook/crhook/proto"
)

// unixDriver handles unix sockets of one process (unix_sk_entry in
// files.img, queued data in sk-queues.img):
//
//   - a connected pair with both ends in the task: restored with one
//     socketpair, each end's queue refilled by sends from the other end
//     (datagram boundaries kept), then each end's shutdown;
//   - a connected stream or seqpacket socket whose peer was closed: a
//     socketpair whose other end is closed once the queue is refilled
//     (a datagram socket whose peer was closed comes back unconnected);
//   - a bound socket (path or abstract name), listening or not: socket,
//     bind, listen with the dumped backlog; a stale socket file at the
//     path is removed first (only a socket file), a socket file that was
//     unlinked is unlinked again; datagrams queued on an unconnected
//     bound socket are resent to it from a temporary socket;
//   - an unbound, unconnected socket.
//
// Options (SO_PASSCRED, buffer sizes, timeouts...) and O_NONBLOCK come
// back; SO_PEEK_OFF is not kept.
//
//   - a datagram socket connected one way to a bound, unconnected one
//     in the task (a syslog client): connected again by name, the
//     bound socket created first if it is not there yet.
//
// Not supported (ErrNotSupported, naming the socket): a peer outside the
// task (at fds 0-2 this makes the generic layer keep the restorer's
// stdio instead), other one-way connections, a
// listening socket with connections not yet accepted, file descriptors
// in flight (SCM_RIGHTS in a queue), names relative to the cwd. An
// accepted socket is restored as one end of a socketpair: it loses the
// listener's name that getsockname showed.
type unixDriver struct{}

func init() { registerFdDriver(unixDriver{}) }

// TCP states sock_diag reports for unix sockets (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

func (unixDriver) Type() pb.FdTypes { return pb.FdTypes_UNIXSK }

func (unixDriver) Match(f *openFd) bool { return sockDomain(f) == unix.AF_UNIX }

func sockTypeName(t uint32) string {
	switch t {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "datagram"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	}
	return "type " + strconv.Itoa(int(t))
}

// holdsSocket reports whether a task of the dumped tree (pid first) holds
// socket inode ino.
func (c *fdDumpCtx) holdsSocket(pid int, ino uint32) bool {
	if fdOfSocket(pid, ino) >= 0 {
		return true
	}
	for _, p := range c.pids {
		if p != pid && fdOfSocket(p, ino) >= 0 {
			return true
		}
	}
	return false
}

// fdOfSocket returns an fd of pid that holds socket inode ino, or -1.
func fdOfSocket(pid int, ino uint32) int {
	dir := procfs.Path(pid, "fd")
	ents, _ := os.ReadDir(dir)
	want := "socket:[" + strconv.FormatUint(uint64(ino), 10) + "]"
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l == want {
			n, _ := strconv.Atoi(e.Name())
			return n
		}
	}
	return -1
}

func (unixDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	ino := uint32(f.Stat.Ino)
	d, err := sockdiag.Unix(ino)
	if errors.Is(err, sockdiag.ErrNotFound) {
		return nil, fmt.Errorf("unix socket %d: not in crhook's network namespace: %w", ino, ErrNotSupported)
	}
	if err != nil {
		return nil, err
	}
	typ := uint32(d.Type)
	what := fmt.Sprintf("unix %s socket %d", sockTypeName(typ), ino)
	if typ == unix.SOCK_DGRAM && d.Peer == 0 {
		// Connecting a datagram socket marks both ends established
		// (for sockmap); without a peer of its own it is unconnected.
		// A peer that was closed counts as none too: send() then says
		// ENOTCONN where it said ECONNREFUSED.
		d.State = tcpClose
	}
	switch typ {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return nil, notSupportedf("%s", what)
	}
	stream := typ == unix.SOCK_STREAM
	e := &pb.UnixSkEntry{
		Id:       proto.Uint32(id),
		Ino:      proto.Uint32(ino),
		Type:     proto.Uint32(typ),
		State:    proto.Uint32(uint32(d.State)),
		Flags:    proto.Uint32(f.Flags),
		Uflags:   proto.Uint32(0),
		Backlog:  proto.Uint32(0),
		Peer:     proto.Uint32(d.Peer),
		Fown:     zeroFown(),
		Name:     d.Name,
		Shutdown: pb.SkShutdown(d.Shutdown & 3).Enum(),
	}
	if e.Name == nil {
		e.Name = []byte{}
	}
	if len(d.Name) > 0 && d.Name[0] != 0 {
		if d.Name[0] != '/' {
			return nil, notSupportedf("%s bound to %q: names relative to the working directory", what, d.Name)
		}
		// The socket file: its permissions, or that it is gone.
		var st unix.Stat_t
		err := unix.Lstat(procfs.Path(f.Pid, "root")+string(d.Name), &st)
		if err == nil && d.HasVfs && st.Ino == uint64(d.VfsIno) && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			e.FilePerms = &pb.FilePermsEntry{Mode: proto.Uint32(st.Mode), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid)}
		} else {
			e.Deleted = proto.Bool(true)
		}
	}

	switch d.State {
	case tcpListen:
		if len(d.Icons) > 0 {
			return nil, notSupportedf("listening %s has %d connections not yet accepted", what, len(d.Icons))
		}
		e.Backlog = proto.Uint32(d.WQueue)
	case tcpEstablished:
		if d.Peer == 0 {
			// The peer is gone (its close shut this end down both
			// ways), or this end waits in a listener's queue.
			if d.Shutdown&3 != 3 {
				return nil, notSupportedf("%s is connected to a listener that has not accepted it", what)
			}
			break
		}
		if !c.holdsSocket(f.Pid, d.Peer) {
			return nil, notSupportedf("%s is connected to socket %d, which no task of the dumped tree holds", what, d.Peer)
		}
		pd, err := sockdiag.Unix(d.Peer)
		if err != nil {
			return nil, fmt.Errorf("peer of %s: %w", what, err)
		}
		if pd.Peer != ino {
			// A datagram socket connected to a bound one (a syslog
			// client): connect again by name on restore.
			if typ != unix.SOCK_DGRAM || pd.Peer != 0 || len(pd.Name) == 0 || d.RQueue > 0 {
				return nil, notSupportedf("%s is connected one way to %d (state %d, name %q, %d bytes queued here)", what, d.Peer, pd.State, pd.Name, d.RQueue)
			}
		}
	case tcpClose:
		if len(d.Name) == 0 && d.RQueue > 0 {
			return nil, notSupportedf("%s is unbound and unconnected with data queued", what)
		}
	default:
		return nil, notSupportedf("%s in state %d", what, d.State)
	}

	err = sockFd(f, func(fd int) error {
		if e.Opts, err = dumpSkOpts(fd); err != nil {
			return err
		}
		if d.State == tcpListen {
			return nil
		}
		return dumpQueue(c, fd, id, stream, d.Shutdown&1 != 0)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &pb.FileEntry{Usk: e}, nil
}

// sockaddrUn encodes a struct sockaddr_un for name (a path gets its NUL).
func sockaddrUn(name []byte) ([]byte, error) {
	if len(name) == 0 || len(name) >= 108 || (name[0] != 0 && bytes.IndexByte(name, 0) >= 0) {
		return nil, fmt.Errorf("unix socket name %q: %w", name, ErrBadImage)
	}
	b := binary.NativeEndian.AppendUint16(nil, unix.AF_UNIX)
	b = append(b, name...)
	if name[0] != 0 {
		b = append(b, 0)
	}
	return b, nil
}

func (unixDriver) Restore(c *fdRestoreCtx, r *remote, fe *pb.FileEntry) (uint64, error) {
	e := fe.GetUsk()
	if e == nil {
		return 0, badImagef("file %d: unix socket without unix_sk_entry", fe.GetId())
	}
	typ := e.GetType()
	switch typ {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return 0, badImagef("unix socket %d of type %d", e.GetIno(), typ)
	}
	stream := typ == unix.SOCK_STREAM
	what := fmt.Sprintf("unix %s socket %d", sockTypeName(typ), e.GetIno())
	q, err := readQueue(c.Dir(), e.GetId())
	if err != nil {
		return 0, err
	}
	fd, err := restoreUnix(c, r, e, q, stream)
	if err != nil {
		return 0, fmt.Errorf("restore %s: %w", what, err)
	}
	return fd, nil
}

func restoreUnix(c *fdRestoreCtx, r *remote, e *pb.UnixSkEntry, q [][]byte, stream bool) (uint64, error) {
	typ := e.GetType()
	if e.GetState() == tcpEstablished {
		var pe *pb.UnixSkEntry
		var peerID uint32
		if e.GetPeer() != 0 {
			for id, f := range c.Files() {
				if u := f.GetUsk(); u != nil && u.GetIno() == e.GetPeer() {
					pe, peerID = u, id
				}
			}
			if pe == nil {
				return 0, badImagef("peer socket %d is not in the image", e.GetPeer())
			}
			if pe.GetPeer() != e.GetIno() {
				return restoreOneWay(c, r, e, pe, peerID)
			}
		}
		r.reset()
		sv, err := r.alloc(8)
		if err != nil {
			return 0, err
		}
		if _, err := r.call("socketpair", unix.SYS_SOCKETPAIR, unix.AF_UNIX, uint64(typ|unix.SOCK_CLOEXEC), 0, sv); err != nil {
			return 0, err
		}
		var b [8]byte
		if err := r.read(sv, b[:]); err != nil {
			return 0, err
		}
		a, o := uint64(binary.NativeEndian.Uint32(b[:])), uint64(binary.NativeEndian.Uint32(b[4:]))
		if err := restoreSkOpts(r, a, e.GetOpts()); err != nil {
			return 0, err
		}
		if err := requeue(r, o, q, stream, nil); err != nil {
			return 0, err
		}
		if pe == nil {
			// The peer was closed.
			if _, err := r.call("close", unix.SYS_CLOSE, o); err != nil {
				return 0, err
			}
		} else {
			if err := restoreSkOpts(r, o, pe.GetOpts()); err != nil {
				return 0, err
			}
			pq, err := readQueue(c.Dir(), peerID)
			if err != nil {
				return 0, err
			}
			if err := requeue(r, a, pq, stream, nil); err != nil {
				return 0, err
			}
			if err := shutdownSock(r, o, pe.GetShutdown()); err != nil {
				return 0, err
			}
			if err := setFileFlags(r, o, pe.GetFlags()); err != nil {
				return 0, err
			}
			c.Provide(peerID, o)
		}
		if err := shutdownSock(r, a, e.GetShutdown()); err != nil {
			return 0, err
		}
		return a, setFileFlags(r, a, e.GetFlags())
	}

	fd, err := r.call("socket", unix.SYS_SOCKET, unix.AF_UNIX, uint64(typ|unix.SOCK_CLOEXEC), 0)
	if err != nil {
		return 0, err
	}
	if err := restoreSkOpts(r, fd, e.GetOpts()); err != nil {
		return 0, err
	}
	if name := e.GetName(); len(name) > 0 {
		if err := bindUnix(r, fd, e); err != nil {
			return 0, err
		}
	}
	switch e.GetState() {
	case tcpListen:
		if _, err := r.call("listen", unix.SYS_LISTEN, fd, uint64(e.GetBacklog())); err != nil {
			return 0, err
		}
	case tcpClose:
		if len(q) > 0 {
			if err := requeueToName(r, e, q); err != nil {
				return 0, err
			}
		}
	default:
		return 0, badImagef("state %d", e.GetState())
	}
	if err := shutdownSock(r, fd, e.GetShutdown()); err != nil {
		return 0, err
	}
	return fd, setFileFlags(r, fd, e.GetFlags())
}

func shutdownSock(r *remote, fd uint64, how pb.SkShutdown) error {
	var h uint64
	switch how {
	case pb.SkShutdown_NONE:
		return nil
	case pb.SkShutdown_READ:
		h = unix.SHUT_RD
	case pb.SkShutdown_WRITE:
		h = unix.SHUT_WR
	case pb.SkShutdown_BOTH:
		h = unix.SHUT_RDWR
	}
	_, err := r.call("shutdown", unix.SYS_SHUTDOWN, fd, h)
	return err
}

// statMode returns the file type and permission bits of path in the
// task (0 when nothing is there).
func statMode(r *remote, path string) (uint32, error) {
	r.reset()
	p, err := r.cstring(path)
	if err != nil {
		return 0, err
	}
	st, err := r.alloc(sizeofStat)
	if err != nil {
		return 0, err
	}
	if _, err := r.call("newfstatat "+path, unix.SYS_NEWFSTATAT, atFdcwd, p, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, nil
		}
		return 0, err
	}
	var b [4]byte
	// st_mode follows st_dev, st_ino and st_nlink (8 bytes each) on
	// x86_64.
	if err := r.read(st+24, b[:]); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint32(b[:]), nil
}

func pathCall(r *remote, name string, nr uintptr, path string, args ...uint64) error {
	r.reset()
	p, err := r.cstring(path)
	if err != nil {
		return err
	}
	_, err = r.call(name+" "+path, nr, append([]uint64{atFdcwd, p}, args...)...)
	return err
}

// bindUnix binds fd to the dumped name. A path still holding a socket
// file (left by the dumped process) is unlinked first; anything else
// there is an error.
func bindUnix(r *remote, fd uint64, e *pb.UnixSkEntry) error {
	name := e.GetName()
	path := ""
	if name[0] != 0 {
		path = string(name)
		mode, err := statMode(r, path)
		if err != nil {
			return err
		}
		switch mode & unix.S_IFMT {
		case 0:
		case unix.S_IFSOCK:
			if err := pathCall(r, "unlinkat", unix.SYS_UNLINKAT, path, 0); err != nil {
				return err
			}
		default:
			return fmt.Errorf("bind to %s: a file of mode %o is in the way", path, mode)
		}
	}
	sa, err := sockaddrUn(name)
	if err != nil {
		return err
	}
	r.reset()
	p, err := r.put(sa)
	if err != nil {
		return err
	}
	if _, err := r.call("bind", unix.SYS_BIND, fd, p, uint64(len(sa))); err != nil {
		return err
	}
	if path == "" {
		return nil
	}
	if e.GetDeleted() {
		return pathCall(r, "unlinkat", unix.SYS_UNLINKAT, path, 0)
	}
	if fp := e.GetFilePerms(); fp != nil {
		if err := pathCall(r, "fchownat", unix.SYS_FCHOWNAT, path, uint64(fp.GetUid()), uint64(fp.GetGid()), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if err := pathCall(r, "fchmodat", unix.SYS_FCHMODAT, path, uint64(fp.GetMode()&0o7777)); err != nil {
			return err
		}
	}
	return nil
}

// requeueToName resends the datagrams queued on a bound, unconnected
// socket from a temporary socket; their senders are not known.
func requeueToName(r *remote, e *pb.UnixSkEntry, q [][]byte) error {
	if e.GetType() == unix.SOCK_STREAM || e.GetDeleted() {
		return fmt.Errorf("data queued on a socket that cannot be reached by name: %w", ErrNotSupported)
	}
	sa, err := sockaddrUn(e.GetName())
	if err != nil {
		return err
	}
	tmp, err := r.call("socket", unix.SYS_SOCKET, unix.AF_UNIX, uint64(e.GetType()|unix.SOCK_CLOEXEC), 0)
	if err != nil {
		return err
	}
	defer r.callBestEffort("close", unix.SYS_CLOSE, tmp)
	total := 0
	for _, p := range q {
		total += len(p) + 1024
	}
	if err := setsockoptInt(r, tmp, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, int32(min(total, 1<<30))); err != nil {
		return err
	}
	return requeue(r, tmp, q, false, sa)
}

// describeUnix is the show line of a unix socket.
func describeUnix(e *pb.UnixSkEntry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s ino=%d", sockTypeName(e.GetType()), e.GetIno())
	switch e.GetState() {
	case tcpListen:
		fmt.Fprintf(&b, " listen backlog=%d", e.GetBacklog())
	case tcpEstablished:
		if e.GetPeer() != 0 {
			fmt.Fprintf(&b, " peer=%d", e.GetPeer())
		} else {
			b.WriteString(" peer=closed")
		}
	}
	if n := e.GetName(); len(n) > 0 {
		if n[0] == 0 {
			fmt.Fprintf(&b, " name=@%s", n[1:])
		} else {
			fmt.Fprintf(&b, " name=%s", n)
		}
		if e.GetDeleted() {
			b.WriteString(" (deleted)")
		}
	}
	if s := e.GetShutdown(); s != pb.SkShutdown_NONE {
		fmt.Fprintf(&b, " shutdown=%s", strings.ToLower(s.String()))
	}
	return b.String()
}

// sizeofStat is sizeof(struct stat) on x86_64.
const sizeofStat = 144

// restoreOneWay restores datagram socket e, connected to the bound,
// unconnected socket pe (file peerID), by connecting to its name. pe
// must exist first: it does if the restore met it already, at its own
// lowest fd or at that of another socket connected to it; otherwise it
// is created here and handed over.
func restoreOneWay(c *fdRestoreCtx, r *remote, e, pe *pb.UnixSkEntry, peerID uint32) (uint64, error) {
	first := map[uint32]uint32{} // file id -> lowest fd
	for _, fd := range c.ti.fds {
		if v, ok := first[fd.GetId()]; !ok || fd.GetFd() < v {
			first[fd.GetId()] = fd.GetFd()
		}
	}
	me, ok := first[e.GetId()]
	if !ok {
		return 0, badImagef("unix socket %d has no fd", e.GetIno())
	}
	made := false
	if v, ok := first[peerID]; ok && v < me {
		made = true
	}
	for id, f := range c.Files() {
		u := f.GetUsk()
		if u == nil || id == e.GetId() || u.GetPeer() != pe.GetIno() || u.GetState() != tcpEstablished {
			continue
		}
		if v, ok := first[id]; ok && v < me {
			made = true
		}
	}
	if !made {
		pq, err := readQueue(c.Dir(), peerID)
		if err != nil {
			return 0, err
		}
		pfd, err := restoreUnix(c, r, pe, pq, false)
		if err != nil {
			return 0, fmt.Errorf("restore the socket it is connected to: %w", err)
		}
		c.Provide(peerID, pfd)
	}
	fd, err := r.call("socket", unix.SYS_SOCKET, unix.AF_UNIX, uint64(e.GetType()|unix.SOCK_CLOEXEC), 0)
	if err != nil {
		return 0, err
	}
	if err := restoreSkOpts(r, fd, e.GetOpts()); err != nil {
		return 0, err
	}
	if len(e.GetName()) > 0 {
		if err := bindUnix(r, fd, e); err != nil {
			return 0, err
		}
	}
	sa, err := sockaddrUn(pe.GetName())
	if err != nil {
		return 0, err
	}
	r.reset()
	p, err := r.put(sa)
	if err != nil {
		return 0, err
	}
	if _, err := r.call("connect", unix.SYS_CONNECT, fd, p, uint64(len(sa))); err != nil {
		return 0, err
	}
	if err := shutdownSock(r, fd, e.GetShutdown()); err != nil {
		return 0, err
	}
	return fd, setFileFlags(r, fd, e.GetFlags())
}
