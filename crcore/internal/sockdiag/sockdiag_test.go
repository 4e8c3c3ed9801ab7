//go:build linux && amd64

package sockdiag

import (
	"errors"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func inode(t *testing.T, fd int) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

func sock(t *testing.T, domain, typ, proto int) int {
	t.Helper()
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestUnixPair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := unix.Write(fds[1], []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(fds[0], unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	a, b := inode(t, fds[0]), inode(t, fds[1])
	s, err := Unix(a)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ino != a || s.Peer != b || s.Type != unix.SOCK_SEQPACKET || s.State != 1 /* TCP_ESTABLISHED */ || s.Name != nil {
		t.Errorf("got %+v, want a connected seqpacket socket %d with peer %d", s, a, b)
	}
	if s.RQueue != 5 {
		t.Errorf("rqueue %d, want 5 bytes", s.RQueue)
	}
	if s.Shutdown != 2 {
		t.Errorf("shutdown %d, want 2 (send)", s.Shutdown)
	}
}

func TestUnixListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	l := sock(t, unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 7); err != nil {
		t.Fatal(err)
	}
	c := sock(t, unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	s, err := Unix(inode(t, l))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if string(s.Name) != path || s.State != 10 /* TCP_LISTEN */ || s.WQueue != 7 || s.RQueue != 1 || len(s.Icons) != 1 {
		t.Errorf("got %+v, want listener %s with backlog 7 and one pending connection", s, path)
	}
	if !s.HasVfs || uint64(s.VfsIno) != st.Ino {
		t.Errorf("vfs inode %d (%v), socket file has %d", s.VfsIno, s.HasVfs, st.Ino)
	}
	cs, err := Unix(inode(t, c))
	if err != nil {
		t.Fatal(err)
	}
	// The client waits in the listener's queue; its peer is an
	// embryonic socket without an inode.
	if s.Icons[0] != inode(t, c) || cs.Peer != 0 || cs.State != 1 {
		t.Errorf("client %d: %+v; listener's pending connections %v", inode(t, c), cs, s.Icons)
	}
}

func TestInet(t *testing.T) {
	for _, c := range []struct {
		name         string
		family, typ  int
		proto        uint8
		sa           unix.Sockaddr
		listen       bool
		wantState    uint8
		wantAddrSize int
	}{
		{"tcp4", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, true, 10, 4},
		{"tcp6", unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}, true, 10, 16},
		{"udp4", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, false, 7, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd := sock(t, c.family, c.typ, 0)
			if err := unix.Bind(fd, c.sa); err != nil {
				t.Fatal(err)
			}
			if c.listen {
				if err := unix.Listen(fd, 5); err != nil {
					t.Fatal(err)
				}
			}
			sa, _ := unix.Getsockname(fd)
			var port int
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				port = a.Port
			case *unix.SockaddrInet6:
				port = a.Port
			}
			s, err := Inet(uint8(c.family), c.proto, inode(t, fd))
			if err != nil {
				t.Fatal(err)
			}
			if s.State != c.wantState || int(s.SrcPort) != port || len(s.Src) != c.wantAddrSize || s.Src[len(s.Src)-1] != 1 {
				t.Errorf("got %+v, want state %d on port %d", s, c.wantState, port)
			}
			if c.listen && s.WQueue != 5 {
				t.Errorf("backlog %d, want 5", s.WQueue)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	if _, err := Unix(1); !errors.Is(err, ErrNotFound) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("unix inode 1: %v, want ErrNotFound", err)
	}
	if _, err := Inet(unix.AF_INET, unix.IPPROTO_TCP, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("tcp inode 1: %v, want ErrNotFound", err)
	}
}
