//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// dumpKillRestore dumps p, checks that it was killed, restores it and
// returns the restored pid.
func dumpKillRestore(t *testing.T, p *crtest.Proc, imgs string) int {
	t.Helper()
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: imgs}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if ws, err := crtest.Reap(p.Pid); err != nil || !ws.Signaled() {
		t.Fatalf("dumped process should be killed: %v %v", ws, err)
	}
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: imgs})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(res.Pid) })
	return res.Pid
}

// fdNumbers parses a "fds a=N b=N" log line.
func fdNumbers(line string) map[string]int {
	fd := map[string]int{}
	for _, kv := range regexp.MustCompile(`(\w+)=(\d+)`).FindAllStringSubmatch(line, -1) {
		fd[kv[1]], _ = strconv.Atoi(kv[2])
	}
	return fd
}

// sockInodes returns the socket inode behind every socket fd of pid.
func sockInodes(t *testing.T, pid int) map[int]string {
	out := map[int]string{}
	for fd, f := range crtest.Files(t, pid) {
		if strings.HasPrefix(f.Link, "socket:") {
			out[fd] = f.Link
		}
	}
	return out
}

// Unix sockets of every supported shape come back with their data: each
// end of a pair reads what was queued on it, in order, datagrams whole;
// the pair talks both ways; a seqpacket end shut down by its peer reads
// EOF after its data; options, O_NONBLOCK and the fd numbers (one above
// 1024) are kept; the listener accepts a client the test connects after
// the restore; the abstract name and the bound datagram socket's queue
// are back; a datagram socket connected to the bound one (and at a lower
// fd, so restored first) still sends to it.
func TestUnixSocketsRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "unix", false)
	dir := t.TempDir()
	p := crtest.Start(t, bin, dir)
	p.WaitLine(t, `^ready$`, 5*time.Second)
	fd := fdNumbers(p.WaitLine(t, `^fds (.*)$`, time.Second)[1])
	sndbuf := p.WaitLine(t, `^sndbuf (\d+)$`, time.Second)[1]
	before := crtest.Files(t, p.Pid)
	if len(sockInodes(t, p.Pid)) != 10 || fd["sp1"] != 1500 || fd["cl"] > fd["dg"] {
		t.Fatalf("test setup: sockets %v, fds %v", sockInodes(t, p.Pid), fd)
	}

	pid := dumpKillRestore(t, p, filepath.Join(t.TempDir(), "img"))
	after := crtest.Files(t, pid)
	for name, n := range fd {
		b, a := before[n], after[n]
		if !strings.HasPrefix(a.Link, "socket:[") || a.Flags != b.Flags {
			t.Errorf("%s: fd %d was %s flags %#o, restored %s flags %#o", name, n, b.Link, b.Flags, a.Link, a.Flags)
		}
	}
	if len(after) != len(before) {
		t.Errorf("restored %d fds, dumped %d", len(after), len(before))
	}

	// A client connects to the restored listener before the program
	// looks: the listener must be back at its path.
	conn, err := net.DialTimeout("unix", filepath.Join(dir, "listen.sock"), 2*time.Second)
	if err != nil {
		t.Fatalf("connect to restored listener: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("test-client")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.WaitLine(t, `^done$`, 10*time.Second)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "hi test-client" {
		t.Errorf("restored listener's answer %q, %v; want %q", buf[:n], err, "hi test-client")
	}

	lines := strings.Join(p.Lines(), "\n")
	for _, want := range []string{
		"got sp0 s1-hello",
		"got sp1 s0-world!",
		"got dp0 d1|d22|d333",
		"got dp1 back",
		"got qp0 q1|q22|EOF",
		"got dg u1|u22|c1",
		"oneway c2",
		"pair ok",
		"passcred 1",
		"sndbuf " + sndbuf,
		"accepted test-client",
		fmt.Sprintf("abs crhook-test-%d", pid),
	} {
		if !regexp.MustCompile("(?m)^" + regexp.QuoteMeta(want) + "$").MatchString(lines) {
			t.Errorf("restored program did not log %q", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^err .*$`).FindAllString(lines, -1); m != nil {
		t.Errorf("program logged errors: %v", m)
	}
	if t.Failed() {
		t.Logf("log:\n%s", lines)
	}
}
