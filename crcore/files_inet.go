//go:build linux && amd64

package crcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
	"github.com/crhook/crhook/crcore/internal/sockdiag"
	pb "github.com/crhook/crhook/proto"
)

// inetDriver handles TCP and UDP sockets over IPv4 and IPv6 that are not
// connected to anything a restore cannot rebuild (inet_sk_entry in
// files.img): unbound sockets, bound ones (loopback, wildcard or any
// local address), TCP listeners with their backlog, and UDP sockets
// connected to an address. Options come back (SO_REUSEADDR,
// SO_REUSEPORT, buffer sizes, timeouts..., IPV6_V6ONLY, IP_FREEBIND) and
// so does O_NONBLOCK.
//
// TCP_NODELAY, which CRIU's schema keeps only for connections, goes to
// crhook-sk-opts.img.
//
// Lost on restore, by design for now: connections a listener has not
// accepted yet (rebuilding them needs TCP repair, as CRIU does; the
// clients see a reset), datagrams queued on a UDP socket (UDP may drop
// them anyway), TCP options other than TCP_NODELAY.
//
// Established TCP connections (and any TCP state but listening and
// closed) are ErrNotSupported, naming the four-tuple.
type inetDriver struct{}

func init() { registerFdDriver(inetDriver{}) }

func (inetDriver) Type() pb.FdTypes { return pb.FdTypes_INETSK }

func (inetDriver) Match(f *openFd) bool {
	d := sockDomain(f)
	return d == unix.AF_INET || d == unix.AF_INET6
}

// TCP states (include/net/tcp_states.h) beyond those in files_unix.go.
var tcpStateNames = map[uint32]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
	6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}

func inetProtoName(family, proto uint32) string {
	n := "tcp"
	if proto == unix.IPPROTO_UDP {
		n = "udp"
	}
	if family == unix.AF_INET6 {
		return n + "6"
	}
	return n + "4"
}

// addrWords stores an address as CRIU does: the bytes in network order,
// read as native u32 words.
func addrWords(ip netip.Addr) []uint32 {
	b := ip.AsSlice()
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

func wordsAddr(family uint32, w []uint32) (netip.Addr, error) {
	n := 1
	if family == unix.AF_INET6 {
		n = 4
	}
	if len(w) == 0 {
		w = make([]uint32, n)
	}
	if len(w) != n {
		return netip.Addr{}, badImagef("address of %d words for family %d", len(w), family)
	}
	b := make([]byte, 0, 16)
	for _, x := range w {
		b = binary.NativeEndian.AppendUint32(b, x)
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip, nil
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func (inetDriver) Dump(c *fdDumpCtx, f *openFd, id uint32) (*pb.FileEntry, error) {
	ino := uint32(f.Stat.Ino)
	var family, typ, protocol int
	var local, remote netip.AddrPort
	var nodelay bool
	e := &pb.InetSkEntry{Id: proto.Uint32(id), Ino: proto.Uint32(ino), Flags: proto.Uint32(f.Flags), Fown: zeroFown(), Backlog: proto.Uint32(0)}
	err := sockFd(f, func(fd int) error {
		var err error
		if family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
			return err
		}
		if typ, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
			return err
		}
		if protocol, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		local = sockaddrAddrPort(sa)
		if sa, err := unix.Getpeername(fd); err == nil {
			remote = sockaddrAddrPort(sa)
		}
		if e.Opts, err = dumpSkOpts(fd); err != nil {
			return err
		}
		if family == unix.AF_INET6 {
			v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
			if err != nil {
				return err
			}
			e.V6Only = proto.Bool(v != 0)
		}
		fb, err := unix.GetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND)
		if err == nil && fb != 0 {
			e.IpOpts = &pb.IpOptsEntry{Freebind: proto.Bool(true)}
		}
		if protocol == unix.IPPROTO_TCP {
			v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
			if err != nil {
				return os.NewSyscallError("getsockopt(TCP_NODELAY)", err)
			}
			nodelay = v != 0
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inet socket %d: %w", ino, err)
	}
	what := fmt.Sprintf("%s socket %d", inetProtoName(uint32(family), uint32(protocol)), ino)
	switch {
	case typ == unix.SOCK_STREAM && protocol == unix.IPPROTO_TCP:
	case typ == unix.SOCK_STREAM && protocol == unix.IPPROTO_MPTCP:
		// Go's net.Listen makes MPTCP listeners since Go 1.24.
	case typ == unix.SOCK_DGRAM && protocol == unix.IPPROTO_UDP:
	default:
		return nil, notSupportedf("inet socket %d of type %d, protocol %d", ino, typ, protocol)
	}
	state := uint32(tcpClose)
	d, err := sockdiag.Inet(uint8(family), uint8(protocol), ino)
	switch {
	case err == nil:
		state = uint32(d.State)
		if state == tcpListen {
			e.Backlog = proto.Uint32(d.WQueue)
		}
	case errors.Is(err, sockdiag.ErrNotFound):
		// In no table: neither bound nor connected (or in another
		// network namespace, which a bound socket would be found in).
		if local.Port() != 0 || remote.IsValid() {
			return nil, notSupportedf("%s bound to %v: not in crhook's network namespace", what, local)
		}
	default:
		return nil, err
	}
	switch {
	case state == tcpListen && (protocol == unix.IPPROTO_TCP || protocol == unix.IPPROTO_MPTCP):
	case state == tcpClose:
	case state == tcpEstablished && protocol == unix.IPPROTO_UDP:
	case protocol == unix.IPPROTO_TCP && remote.IsValid():
		return nil, notSupportedf("TCP connection %v -> %v (%s, %s): established TCP connections need TCP repair", local, remote, what, tcpStateNames[state])
	default:
		return nil, notSupportedf("%s in state %s", what, tcpStateNames[state])
	}
	e.Family = proto.Uint32(uint32(family))
	e.Type = proto.Uint32(uint32(typ))
	e.Proto = proto.Uint32(uint32(protocol))
	e.State = proto.Uint32(state)
	e.SrcPort = proto.Uint32(uint32(local.Port()))
	e.SrcAddr = addrWords(local.Addr())
	e.DstPort = proto.Uint32(0)
	if remote.IsValid() {
		e.DstPort = proto.Uint32(uint32(remote.Port()))
		e.DstAddr = addrWords(remote.Addr())
	}
	if nodelay {
		w, err := c.Extra(skOptsImage, image.CrhookSkOpts)
		if err != nil {
			return nil, err
		}
		if err := w.Write(&pb.CrhookSkOptsEntry{Id: proto.Uint32(id), TcpNodelay: proto.Bool(true)}); err != nil {
			return nil, err
		}
	}
	return &pb.FileEntry{Isk: e}, nil
}

// sockaddrInet encodes a struct sockaddr_in or sockaddr_in6.
func sockaddrInet(family uint32, ip netip.Addr, port uint32) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(family))
	b = binary.BigEndian.AppendUint16(b, uint16(port))
	if family == unix.AF_INET6 {
		b = append(b, 0, 0, 0, 0) // flowinfo
		a := ip.As16()
		b = append(b, a[:]...)
		return append(b, 0, 0, 0, 0) // scope id
	}
	a := ip.As4()
	b = append(b, a[:]...)
	return append(b, make([]byte, 8)...)
}

func (inetDriver) Restore(c *fdRestoreCtx, r *remote, fe *pb.FileEntry) (uint64, error) {
	e := fe.GetIsk()
	if e == nil {
		return 0, badImagef("file %d: inet socket without inet_sk_entry", fe.GetId())
	}
	family := e.GetFamily()
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return 0, badImagef("inet socket %d of family %d", e.GetIno(), family)
	}
	what := fmt.Sprintf("%s socket %d", inetProtoName(family, e.GetProto()), e.GetIno())
	extra, err := readSkOpts(c.Dir(), fe.GetId())
	if err != nil {
		return 0, err
	}
	fd, err := restoreInet(r, e, extra)
	if err != nil {
		return 0, fmt.Errorf("restore %s: %w", what, err)
	}
	return fd, nil
}

func restoreInet(r *remote, e *pb.InetSkEntry, extra *pb.CrhookSkOptsEntry) (uint64, error) {
	family := e.GetFamily()
	src, err := wordsAddr(family, e.GetSrcAddr())
	if err != nil {
		return 0, err
	}
	fd, err := r.call("socket", unix.SYS_SOCKET, uint64(family), uint64(e.GetType()|unix.SOCK_CLOEXEC), uint64(e.GetProto()))
	if err != nil {
		return 0, err
	}
	if err := restoreSkOpts(r, fd, e.GetOpts()); err != nil {
		return 0, err
	}
	if family == unix.AF_INET6 && e.V6Only != nil {
		v := int32(0)
		if e.GetV6Only() {
			v = 1
		}
		if err := setsockoptInt(r, fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
			return 0, err
		}
	}
	if extra.GetTcpNodelay() {
		if err := setsockoptInt(r, fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return 0, err
		}
	}
	if e.GetIpOpts().GetFreebind() {
		if err := setsockoptInt(r, fd, unix.SOL_IP, unix.IP_FREEBIND, 1); err != nil {
			return 0, err
		}
	}
	if e.GetSrcPort() != 0 || !src.IsUnspecified() {
		sa := sockaddrInet(family, src, e.GetSrcPort())
		r.reset()
		p, err := r.put(sa)
		if err != nil {
			return 0, err
		}
		if _, err := r.call("bind "+netip.AddrPortFrom(src, uint16(e.GetSrcPort())).String(), unix.SYS_BIND, fd, p, uint64(len(sa))); err != nil {
			return 0, err
		}
	}
	switch e.GetState() {
	case tcpListen:
		if _, err := r.call("listen", unix.SYS_LISTEN, fd, uint64(e.GetBacklog())); err != nil {
			return 0, err
		}
	case tcpEstablished:
		dst, err := wordsAddr(family, e.GetDstAddr())
		if err != nil {
			return 0, err
		}
		sa := sockaddrInet(family, dst, e.GetDstPort())
		r.reset()
		p, err := r.put(sa)
		if err != nil {
			return 0, err
		}
		if _, err := r.call("connect "+netip.AddrPortFrom(dst, uint16(e.GetDstPort())).String(), unix.SYS_CONNECT, fd, p, uint64(len(sa))); err != nil {
			return 0, err
		}
	case tcpClose:
	default:
		return 0, badImagef("state %d", e.GetState())
	}
	return fd, setFileFlags(r, fd, e.GetFlags())
}

// describeInet is the show line of an inet socket.
func describeInet(e *pb.InetSkEntry) string {
	s := inetProtoName(e.GetFamily(), e.GetProto())
	src, err := wordsAddr(e.GetFamily(), e.GetSrcAddr())
	if err != nil {
		return s + " (bad address)"
	}
	s += " " + netip.AddrPortFrom(src, uint16(e.GetSrcPort())).String()
	switch e.GetState() {
	case tcpListen:
		s += " listen backlog=" + strconv.Itoa(int(e.GetBacklog()))
	case tcpEstablished:
		if dst, err := wordsAddr(e.GetFamily(), e.GetDstAddr()); err == nil {
			s += " -> " + netip.AddrPortFrom(dst, uint16(e.GetDstPort())).String()
		}
	}
	if e.GetV6Only() {
		s += " v6only"
	}
	return s
}

// skOptsImage holds the socket options only crhook keeps.
const skOptsImage = "crhook-sk-opts.img"

func readSkOpts(d *image.Dir, id uint32) (*pb.CrhookSkOptsEntry, error) {
	rd, err := d.NewReader(skOptsImage, image.CrhookSkOpts)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	for {
		var e pb.CrhookSkOptsEntry
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
