// Package sockdiag asks the kernel's socket diagnostics interface
// (NETLINK_SOCK_DIAG, include/uapi/linux/sock_diag.h) what it knows of a
// socket given its inode: for a unix socket its type, state, name, peer,
// queue lengths and pending connections; for a TCP or UDP socket its
// state, addresses and queue lengths.
//
// The kernel answers for the network namespace of the netlink socket,
// which is the caller's: a socket of another network namespace is not
// found (the caller must enter the target's namespace first).
//
// Each query opens its own netlink socket (SOCK_CLOEXEC) and closes it.
//
//go:build linux && amd64

package sockdiag

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/internal/kabi"
)

// ErrNotFound: the kernel knows no socket of that inode (in this network
// namespace). It matches unix.ENOENT too.
var ErrNotFound = fmt.Errorf("socket not found: %w", unix.ENOENT)

// UnixSock is what sock_diag says of a unix socket.
type UnixSock struct {
	Ino   uint32
	Type  uint8 // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	State uint8 // TCP_ESTABLISHED, TCP_LISTEN, TCP_CLOSE...
	// Name is the address the socket is bound to (an abstract name
	// starts with a NUL byte); nil when unbound. An accepted socket
	// shows its listener's name.
	Name []byte
	// VfsIno and VfsDev name the inode of the socket file a path-bound
	// socket created (HasVfs).
	VfsIno, VfsDev uint32
	HasVfs         bool
	// Peer is the inode of the connected peer, 0 for none: not
	// connected, the peer was closed, or the connection is not accepted
	// yet (the peer is then an embryonic socket without an inode).
	Peer uint32
	// RQueue and WQueue: for a listening socket, the connections not yet
	// accepted and the backlog; otherwise bytes queued to read and to
	// write.
	RQueue, WQueue uint32
	// Icons are, for a listening socket, the inodes of the clients whose
	// connections are not accepted yet.
	Icons []uint32
	// Shutdown is sk_shutdown: 1 receive, 2 send.
	Shutdown uint8
}

// Unix returns what the kernel knows of the unix socket with inode ino.
func Unix(ino uint32) (*UnixSock, error) {
	req := kabi.UnixDiagReq{
		Family: unix.AF_UNIX,
		States: ^uint32(0),
		Ino:    ino,
		Show: kabi.UDIAG_SHOW_NAME | kabi.UDIAG_SHOW_VFS | kabi.UDIAG_SHOW_PEER |
			kabi.UDIAG_SHOW_ICONS | kabi.UDIAG_SHOW_RQLEN,
		Cookie: [2]uint32{kabi.INET_DIAG_NOCOOKIE, kabi.INET_DIAG_NOCOOKIE},
	}
	var found *UnixSock
	err := query(&req, 0, func(b []byte) error {
		s, err := parseUnix(b)
		if err != nil {
			return err
		}
		if s.Ino == ino {
			found = s
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag unix socket %d: %w", ino, err)
	}
	if found == nil {
		return nil, fmt.Errorf("sock_diag unix socket %d: %w", ino, ErrNotFound)
	}
	return found, nil
}

func parseUnix(b []byte) (*UnixSock, error) {
	var m kabi.UnixDiagMsg
	if len(b) < kabi.SizeofUnixDiagMsg {
		return nil, errShort("unix_diag_msg", len(b))
	}
	if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &m); err != nil {
		return nil, err
	}
	s := &UnixSock{Ino: m.Ino, Type: m.Type, State: m.State}
	err := attrs(b[kabi.SizeofUnixDiagMsg:], func(typ uint16, v []byte) error {
		switch typ {
		case kabi.UNIX_DIAG_NAME:
			// A path name comes with the NUL bind was given; an
			// abstract one is all bytes.
			if len(v) > 0 && v[0] != 0 {
				if i := bytes.IndexByte(v, 0); i >= 0 {
					v = v[:i]
				}
			}
			s.Name = append([]byte{}, v...)
		case kabi.UNIX_DIAG_VFS:
			if len(v) < 8 {
				return errShort("unix_diag_vfs", len(v))
			}
			s.VfsIno, s.VfsDev, s.HasVfs = binary.NativeEndian.Uint32(v), binary.NativeEndian.Uint32(v[4:]), true
		case kabi.UNIX_DIAG_PEER:
			if len(v) < 4 {
				return errShort("peer", len(v))
			}
			s.Peer = binary.NativeEndian.Uint32(v)
		case kabi.UNIX_DIAG_ICONS:
			for i := 0; i+4 <= len(v); i += 4 {
				s.Icons = append(s.Icons, binary.NativeEndian.Uint32(v[i:]))
			}
		case kabi.UNIX_DIAG_RQLEN:
			if len(v) < 8 {
				return errShort("unix_diag_rqlen", len(v))
			}
			s.RQueue, s.WQueue = binary.NativeEndian.Uint32(v), binary.NativeEndian.Uint32(v[4:])
		case kabi.UNIX_DIAG_SHUTDOWN:
			if len(v) < 1 {
				return errShort("shutdown", len(v))
			}
			s.Shutdown = v[0]
		}
		return nil
	})
	return s, err
}

// InetSock is what sock_diag says of a TCP or UDP socket.
type InetSock struct {
	Family uint8 // AF_INET, AF_INET6
	State  uint8 // TCP_LISTEN, TCP_ESTABLISHED, TCP_CLOSE...
	// Src and Dst are 4 bytes for AF_INET, 16 for AF_INET6.
	Src, Dst         []byte
	SrcPort, DstPort uint16
	// RQueue and WQueue: for a listening TCP socket, the connections not
	// yet accepted and the backlog; otherwise bytes queued.
	RQueue, WQueue uint32
	Ino            uint32
}

// Inet returns what the kernel knows of the socket of family (AF_INET,
// AF_INET6) and protocol (IPPROTO_TCP, IPPROTO_UDP) with inode ino. The
// kernel cannot look a socket up by inode, so this dumps every socket of
// that family and protocol and picks it out. A TCP socket that is neither
// bound nor connected is in no table and is not found.
func Inet(family, protocol uint8, ino uint32) (*InetSock, error) {
	req := kabi.InetDiagReqV2{
		Family:   family,
		Protocol: protocol,
		States:   ^uint32(0),
		ID:       kabi.InetDiagSockID{Cookie: [2]uint32{kabi.INET_DIAG_NOCOOKIE, kabi.INET_DIAG_NOCOOKIE}},
	}
	var found *InetSock
	err := query(&req, unix.NLM_F_DUMP, func(b []byte) error {
		if found != nil {
			return nil
		}
		var m kabi.InetDiagMsg
		if len(b) < kabi.SizeofInetDiagMsg {
			return errShort("inet_diag_msg", len(b))
		}
		if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &m); err != nil {
			return err
		}
		if m.Inode != ino {
			return nil
		}
		n := 4
		if m.Family == unix.AF_INET6 {
			n = 16
		}
		found = &InetSock{
			Family:  m.Family,
			State:   m.State,
			Src:     append([]byte{}, m.ID.Src[:n]...),
			Dst:     append([]byte{}, m.ID.Dst[:n]...),
			SrcPort: binary.BigEndian.Uint16(m.ID.Sport[:]),
			DstPort: binary.BigEndian.Uint16(m.ID.Dport[:]),
			RQueue:  m.RQueue,
			WQueue:  m.WQueue,
			Ino:     m.Inode,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag inet socket %d: %w", ino, err)
	}
	if found == nil {
		return nil, fmt.Errorf("sock_diag inet socket %d: %w", ino, ErrNotFound)
	}
	return found, nil
}

func errShort(what string, n int) error {
	return fmt.Errorf("short %s (%d bytes)", what, n)
}

// query sends one SOCK_DIAG_BY_FAMILY request and calls each with the
// payload of every reply message.
func query(req any, flags uint16, each func([]byte) error) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return os.NewSyscallError("socket(AF_NETLINK)", err)
	}
	defer unix.Close(fd)

	var body bytes.Buffer
	if err := binary.Write(&body, binary.NativeEndian, req); err != nil {
		return err
	}
	const seq = 1
	hdr := unix.NlMsghdr{
		Len:   uint32(unix.SizeofNlMsghdr + body.Len()),
		Type:  unix.SOCK_DIAG_BY_FAMILY,
		Flags: unix.NLM_F_REQUEST | flags,
		Seq:   seq,
	}
	var msg bytes.Buffer
	if err := binary.Write(&msg, binary.NativeEndian, hdr); err != nil {
		return err
	}
	msg.Write(body.Bytes())
	if err := unix.Sendto(fd, msg.Bytes(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto(NETLINK_SOCK_DIAG)", err)
	}

	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom(NETLINK_SOCK_DIAG)", err)
		}
		b := buf[:n]
		for len(b) >= unix.SizeofNlMsghdr {
			l := binary.NativeEndian.Uint32(b)
			typ := binary.NativeEndian.Uint16(b[4:])
			if l < unix.SizeofNlMsghdr || int(l) > len(b) {
				return fmt.Errorf("netlink message of %d bytes in %d", l, len(b))
			}
			payload := b[unix.SizeofNlMsghdr:l]
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(payload) < 4 {
					return errShort("nlmsgerr", len(payload))
				}
				if e := int32(binary.NativeEndian.Uint32(payload)); e != 0 {
					errno := unix.Errno(-e)
					if errno == unix.ENOENT {
						return ErrNotFound
					}
					return os.NewSyscallError("sock_diag", errno)
				}
				return nil
			case unix.SOCK_DIAG_BY_FAMILY:
				if err := each(payload); err != nil {
					return err
				}
				if flags&unix.NLM_F_DUMP == 0 {
					// An exact request gets one answer and no DONE.
					return nil
				}
			}
			b = b[min(align4(int(l)), len(b)):]
		}
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// attrs walks netlink attributes (struct nlattr, 4-byte aligned).
func attrs(b []byte, each func(typ uint16, v []byte) error) error {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & 0x3fff
		if l < 4 || l > len(b) {
			return fmt.Errorf("netlink attribute of %d bytes in %d", l, len(b))
		}
		if err := each(typ, b[4:l]); err != nil {
			return err
		}
		b = b[min(align4(l), len(b)):]
	}
	return nil
}
