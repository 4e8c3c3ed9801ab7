//go:build linux && amd64

package crcore_test

import (
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// TCP and UDP sockets bound and listening on loopback and wildcard, IPv4
// and IPv6, come back on their ports with their options: after the
// restore the test connects to each listener (to the dual-stack one
// over IPv4) and sends to the UDP socket, and the program serves them;
// the UDP socket connected to another still sends to it.
func TestInetSocketsRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "inet", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^ready$`, 5*time.Second)
	port := fdNumbers(p.WaitLine(t, `^ports (.*)$`, time.Second)[1])
	opts := p.WaitLine(t, `^opts (.*)$`, time.Second)[1]
	before := crtest.Files(t, p.Pid)
	if opts != "tcp4.reuseaddr=1 tcp4.nodelay=1 tcp6.nodelay=0 tcp6.v6only=1 tcp6.reuseport=1 any6.v6only=0 any6.nonblock=1 udp4.rcvbuf=300000" {
		t.Fatalf("test setup: options %q", opts)
	}

	pid := dumpKillRestore(t, p, filepath.Join(t.TempDir(), "img"))
	after := crtest.Files(t, pid)
	for n, b := range before {
		if !strings.HasPrefix(b.Link, "socket:") {
			continue
		}
		if a := after[n]; !strings.HasPrefix(a.Link, "socket:") || a.Flags != b.Flags {
			t.Errorf("fd %d was %s flags %#o, restored %s flags %#o", n, b.Link, b.Flags, a.Link, a.Flags)
		}
	}

	type client struct {
		name, network, addr string
	}
	var conns []net.Conn
	for _, c := range []client{
		{"tcp4", "tcp4", net.JoinHostPort("127.0.0.1", itoa(port["tcp4"]))},
		{"tcp6", "tcp6", net.JoinHostPort("::1", itoa(port["tcp6"]))},
		{"any6", "tcp4", net.JoinHostPort("127.0.0.1", itoa(port["any6"]))},
		{"udp4", "udp4", net.JoinHostPort("127.0.0.1", itoa(port["udp4"]))},
	} {
		conn, err := net.DialTimeout(c.network, c.addr, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: connect to restored socket at %s: %v", c.name, c.addr, err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("from-test-" + c.name)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.WaitLine(t, `^done$`, 10*time.Second)
	for i, name := range []string{"tcp4", "tcp6", "any6", "udp4"} {
		conns[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 128)
		n, err := conns[i].Read(buf)
		if want := "hi " + name + " from-test-" + name; err != nil || string(buf[:n]) != want {
			t.Errorf("%s answered %q, %v; want %q", name, buf[:n], err, want)
		}
	}
	lines := p.Lines()
	all := strings.Join(lines, "\n")
	var optLines []string
	for _, l := range lines {
		if strings.HasPrefix(l, "opts ") {
			optLines = append(optLines, l[5:])
		}
	}
	if len(optLines) != 2 || optLines[1] != opts {
		t.Errorf("options before the dump %q, after the restore %v", opts, optLines[1:])
	}
	if !regexp.MustCompile(`(?m)^served udp4 c$`).MatchString(all) {
		t.Errorf("the connected UDP socket's datagram did not arrive")
	}
	if m := regexp.MustCompile(`(?m)^err .*$`).FindAllString(all, -1); m != nil {
		t.Errorf("program logged errors: %v", m)
	}
	if t.Failed() {
		t.Logf("log:\n%s", all)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
