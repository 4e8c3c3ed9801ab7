//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	pb "github.com/crhook/crhook/proto"
)

// What unix and inet sockets share: socket options (sk_opts_entry),
// queued data (SK_QUEUES), and the injected calls that rebuild them.
//
// Dumping looks at the socket through the dumper's pidfd_getfd copy of
// the fd, which shares the socket with the task: nothing may change
// state there. Options are read with getsockopt, queued data is read
// with MSG_PEEK, and the fd is used through SyscallConn, never Fd(),
// which would clear O_NONBLOCK on the task's open file.

// skQueuesImage holds the data queued on every socket (CRIU's name).
const skQueuesImage = "sk-queues.img"

// Bounds on what a dump copies out of one socket's receive queue.
const (
	maxQueueBytes   = 256 << 20
	maxQueuePackets = 1 << 20
)

// sockFd runs fn with the fd number of the dumper's copy of f.
func sockFd(f *openFd, fn func(fd int) error) error {
	lf, err := f.Local()
	if err != nil {
		return err
	}
	rc, err := lf.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// sockDomain returns the socket's address family, or -1.
func sockDomain(f *openFd) int {
	if f.Mode() != unix.S_IFSOCK {
		return -1
	}
	dom := -1
	_ = sockFd(f, func(fd int) error { // on error dom stays -1: not a socket we can ask
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err == nil {
			dom = v
		}
		return err
	})
	return dom
}

// dumpSkOpts reads the generic socket options.
func dumpSkOpts(fd int) (*pb.SkOptsEntry, error) {
	geti := func(level, opt int) (int, error) {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return 0, os.NewSyscallError(fmt.Sprintf("getsockopt(%d, %d)", level, opt), err)
		}
		return v, nil
	}
	o := &pb.SkOptsEntry{}
	var errs []error
	get := func(opt int) uint32 {
		v, err := geti(unix.SOL_SOCKET, opt)
		// Some options belong to some families only (SO_PASSCRED to
		// unix and netlink sockets since Linux 6.16): off.
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT) {
			return 0
		}
		errs = append(errs, err)
		return uint32(v)
	}
	o.SoSndbuf = proto.Uint32(get(unix.SO_SNDBUF))
	o.SoRcvbuf = proto.Uint32(get(unix.SO_RCVBUF))
	for _, t := range []struct {
		opt      int
		sec, usc **uint64
	}{{unix.SO_SNDTIMEO, &o.SoSndTmoSec, &o.SoSndTmoUsec}, {unix.SO_RCVTIMEO, &o.SoRcvTmoSec, &o.SoRcvTmoUsec}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt)
		if err != nil {
			return nil, os.NewSyscallError("getsockopt(SO_*TIMEO)", err)
		}
		*t.sec, *t.usc = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
	}
	o.Reuseaddr = proto.Bool(get(unix.SO_REUSEADDR) != 0)
	o.SoReuseport = proto.Bool(get(unix.SO_REUSEPORT) != 0)
	o.SoPasscred = proto.Bool(get(unix.SO_PASSCRED) != 0)
	o.SoKeepalive = proto.Bool(get(unix.SO_KEEPALIVE) != 0)
	o.SoBroadcast = proto.Bool(get(unix.SO_BROADCAST) != 0)
	o.SoPriority = proto.Uint32(get(unix.SO_PRIORITY))
	o.SoRcvlowat = proto.Uint32(get(unix.SO_RCVLOWAT))
	o.SoMark = proto.Uint32(get(unix.SO_MARK))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return o, nil
}

// restoreSkOpts sets the options of a fresh socket fd in the task to the
// dumped ones, leaving alone those that already match (so that buffer
// sizes the program never set stay unlocked and follow the sysctls).
func restoreSkOpts(r *remote, fd uint64, o *pb.SkOptsEntry) error {
	for _, b := range []struct {
		get, force int
		want       uint32
	}{{unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, o.GetSoSndbuf()}, {unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, o.GetSoRcvbuf()}} {
		cur, err := getsockoptInt(r, fd, unix.SOL_SOCKET, b.get)
		if err != nil {
			return err
		}
		// The kernel doubles what setsockopt is given and reports the
		// doubled size.
		if uint32(cur) != b.want && b.want != 0 {
			if err := setsockoptInt(r, fd, unix.SOL_SOCKET, b.force, int32(b.want/2)); err != nil {
				return err
			}
		}
	}
	for _, t := range []struct {
		opt      int
		sec, usc uint64
	}{{unix.SO_SNDTIMEO, o.GetSoSndTmoSec(), o.GetSoSndTmoUsec()}, {unix.SO_RCVTIMEO, o.GetSoRcvTmoSec(), o.GetSoRcvTmoUsec()}} {
		if t.sec == 0 && t.usc == 0 {
			continue
		}
		b := binary.NativeEndian.AppendUint64(nil, t.sec)
		b = binary.NativeEndian.AppendUint64(b, t.usc)
		if err := setsockopt(r, fd, unix.SOL_SOCKET, t.opt, b); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		opt int
		on  bool
	}{
		{unix.SO_REUSEADDR, o.GetReuseaddr()}, {unix.SO_REUSEPORT, o.GetSoReuseport()},
		{unix.SO_PASSCRED, o.GetSoPasscred()}, {unix.SO_KEEPALIVE, o.GetSoKeepalive()},
		{unix.SO_BROADCAST, o.GetSoBroadcast()},
	} {
		if f.on {
			if err := setsockoptInt(r, fd, unix.SOL_SOCKET, f.opt, 1); err != nil {
				return err
			}
		}
	}
	if v := o.GetSoPriority(); v != 0 {
		if err := setsockoptInt(r, fd, unix.SOL_SOCKET, unix.SO_PRIORITY, int32(v)); err != nil {
			return err
		}
	}
	if v := o.GetSoRcvlowat(); v > 1 {
		if err := setsockoptInt(r, fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, int32(v)); err != nil {
			return err
		}
	}
	if v := o.GetSoMark(); v != 0 {
		if err := setsockoptInt(r, fd, unix.SOL_SOCKET, unix.SO_MARK, int32(v)); err != nil {
			return err
		}
	}
	return nil
}

func setsockopt(r *remote, fd uint64, level, opt int, val []byte) error {
	r.reset()
	p, err := r.put(val)
	if err != nil {
		return err
	}
	_, err = r.call(fmt.Sprintf("setsockopt(%d, %d)", level, opt), unix.SYS_SETSOCKOPT, fd, uint64(level), uint64(opt), p, uint64(len(val)))
	return err
}

func setsockoptInt(r *remote, fd uint64, level, opt int, v int32) error {
	return setsockopt(r, fd, level, opt, binary.NativeEndian.AppendUint32(nil, uint32(v)))
}

func getsockoptInt(r *remote, fd uint64, level, opt int) (int32, error) {
	r.reset()
	val, err := r.alloc(4)
	if err != nil {
		return 0, err
	}
	lenp, err := r.put(binary.NativeEndian.AppendUint32(nil, 4))
	if err != nil {
		return 0, err
	}
	if _, err := r.call(fmt.Sprintf("getsockopt(%d, %d)", level, opt), unix.SYS_GETSOCKOPT, fd, uint64(level), uint64(opt), val, lenp); err != nil {
		return 0, err
	}
	var b [4]byte
	if err := r.read(val, b[:]); err != nil {
		return 0, err
	}
	return int32(binary.NativeEndian.Uint32(b[:])), nil
}

// setFileFlags gives a restored socket the dumped O_NONBLOCK.
func setFileFlags(r *remote, fd uint64, flags uint32) error {
	if flags&unix.O_NONBLOCK == 0 {
		return nil
	}
	_, err := r.call("fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(flags&(unix.O_NONBLOCK|unix.O_ACCMODE)))
	return err
}

// peekQueue copies the receive queue of a socket without consuming it:
// MSG_PEEK with SO_PEEK_OFF set walks the queue, each recvmsg starting
// where the previous one ended. A datagram comes whole (pieces are
// joined while MSG_TRUNC says more follows); a stream comes in chunks.
// Queued file descriptors (SCM_RIGHTS) make it fail with ErrNotSupported
// (the copies the peek put in our process are closed). shutRD says the
// socket is shut down for reading, where recvmsg returns 0 on an empty
// queue.
func peekQueue(fd int, stream, shutRD bool, each func([]byte) error) (retErr error) {
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return os.NewSyscallError("getsockopt(SO_PEEK_OFF)", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return os.NewSyscallError("setsockopt(SO_PEEK_OFF)", err)
	}
	// SO_PEEK_OFF belongs to the socket, not to our fd: put back the
	// program's (-1, off, unless it set one).
	defer func() {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old); err != nil && retErr == nil {
			retErr = os.NewSyscallError("setsockopt(SO_PEEK_OFF)", err)
		}
	}()
	buf := make([]byte, 256<<10)
	oob := make([]byte, unix.CmsgSpace(253*4)+unix.CmsgSpace(unix.SizeofUcred))
	var cur []byte
	total, packets := 0, 0
	for {
		n, oobn, rflags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			if len(cur) > 0 {
				return fmt.Errorf("receive queue ends inside a datagram: %w", ErrNotSupported)
			}
			return nil
		}
		if err != nil {
			return os.NewSyscallError("recvmsg(MSG_PEEK)", err)
		}
		if err := checkControl(oob[:oobn], rflags); err != nil {
			return err
		}
		if n == 0 && (stream || shutRD) {
			return nil
		}
		total += n
		if total > maxQueueBytes {
			return fmt.Errorf("receive queue longer than %d bytes: %w", maxQueueBytes, ErrNotSupported)
		}
		if stream {
			if err := each(buf[:n]); err != nil {
				return err
			}
			continue
		}
		cur = append(cur, buf[:n]...)
		if rflags&unix.MSG_TRUNC != 0 && n > 0 {
			continue
		}
		if packets++; packets > maxQueuePackets {
			return fmt.Errorf("receive queue longer than %d datagrams: %w", maxQueuePackets, ErrNotSupported)
		}
		if err := each(cur); err != nil {
			return err
		}
		cur = cur[:0]
	}
}

// checkControl refuses queued file descriptors, closing the copies a
// peek installed in our process.
func checkControl(oob []byte, rflags int) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return os.NewSyscallError("parse control message", err)
	}
	inFlight := 0
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			return os.NewSyscallError("parse SCM_RIGHTS", err)
		}
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		inFlight += len(fds)
	}
	if inFlight > 0 || rflags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("file descriptors in flight (SCM_RIGHTS in the receive queue): %w", ErrNotSupported)
	}
	return nil
}

// dumpQueue writes a socket's receive queue to SK_QUEUES, one entry per
// datagram (or stream chunk) followed by its bytes.
func dumpQueue(c *fdDumpCtx, fd int, id uint32, stream, shutRD bool) error {
	return peekQueue(fd, stream, shutRD, func(b []byte) error {
		w, err := c.Extra(skQueuesImage, image.SkQueues)
		if err != nil {
			return err
		}
		if err := w.Write(&pb.SkPacketEntry{IdFor: proto.Uint32(id), Length: proto.Uint32(uint32(len(b)))}); err != nil {
			return err
		}
		return w.WriteRaw(b)
	})
}

// readQueue returns the packets queued on socket id, in order.
func readQueue(d *image.Dir, id uint32) ([][]byte, error) {
	rd, err := d.NewReader(skQueuesImage, image.SkQueues)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var out [][]byte
	for {
		var e pb.SkPacketEntry
		err := rd.Read(&e)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := rd.ReadRaw(int(e.GetLength()))
		if err != nil {
			return nil, err
		}
		if e.GetIdFor() == id {
			out = append(out, b)
		}
	}
}

// requeue sends the packets from fd in the task: each datagram in one
// send (it keeps its boundary), a stream in chunks. dst, when set, is a
// sockaddr the packets are sent to. The data goes through the scratch
// area when it fits and through a temporary mapping when it does not.
func requeue(r *remote, fd uint64, pkts [][]byte, stream bool, dst []byte) error {
	const chunk = 32 << 10
	big := 0
	for _, p := range pkts {
		if len(p) > chunk && !stream {
			big = max(big, len(p))
		}
	}
	var tmp uint64
	if big > 0 {
		sz := uint64(big+4095) &^ 4095
		var err error
		tmp, err = r.call("mmap(requeue buffer)", unix.SYS_MMAP, 0, sz, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return err
		}
		defer r.callBestEffort("munmap(requeue buffer)", unix.SYS_MUNMAP, tmp, sz)
	}
	send := func(b []byte) (uint64, error) {
		r.reset()
		var addr, dlen uint64
		var err error
		if dst != nil {
			if addr, err = r.put(dst); err != nil {
				return 0, err
			}
			dlen = uint64(len(dst))
		}
		var p uint64
		if len(b) > chunk {
			p = tmp
			err = writeMem(r.pid(), p, b)
		} else if len(b) > 0 {
			p, err = r.put(b)
		}
		if err != nil {
			return 0, err
		}
		return r.call("sendto(queued data)", unix.SYS_SENDTO, fd, p, uint64(len(b)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, addr, dlen)
	}
	for _, p := range pkts {
		if !stream {
			n, err := send(p)
			if err != nil {
				return err
			}
			if n != uint64(len(p)) {
				return fmt.Errorf("requeue datagram of %d bytes: sent %d", len(p), n)
			}
			continue
		}
		for len(p) > 0 {
			n, err := send(p[:min(len(p), chunk)])
			if err != nil {
				return err
			}
			p = p[n:]
		}
	}
	return nil
}

// otherSockDriver refuses sockets of families crhook cannot dump
// (netlink, packet, vsock...), naming the family, so that the dump fails
// before anything changes (at fds 0-2 the restorer's stdio is kept
// instead).
type otherSockDriver struct{}

func init() { registerFdDriver(otherSockDriver{}) }

func (otherSockDriver) Type() pb.FdTypes { return pb.FdTypes_NETLINKSK }

func (otherSockDriver) Match(f *openFd) bool {
	switch sockDomain(f) {
	case -1, unix.AF_UNIX, unix.AF_INET, unix.AF_INET6:
		return false
	}
	return true
}

func (otherSockDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	name := map[int]string{unix.AF_NETLINK: "netlink", unix.AF_PACKET: "packet", unix.AF_VSOCK: "vsock", unix.AF_ALG: "AF_ALG"}[sockDomain(f)]
	if name == "" {
		name = "family " + fmt.Sprint(sockDomain(f))
	}
	return nil, notSupportedf("%s socket", name)
}

func (otherSockDriver) Restore(c *fdRestoreCtx, r *remote, e *pb.FileEntry) (uint64, error) {
	return 0, notSupportedf("socket file %d of type %v", e.GetId(), e.GetType())
}
