//go:build linux && amd64

package crcore_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// Real programs (issue 4, item 6), installed by the Makefile's DEB_NEEDS.
// Each is dumped while a client loop on loopback keeps it busy (bounded in
// count and time); the loop is paused - no connection open - at the
// moment of the dump, since established TCP connections are refused by
// design. The tree is killed, restored, and must serve the same data.

// realProg is a program under test, a child of ours.
type realProg struct {
	pid  int
	dir  string // its temp dir: config, logs, data
	port int
	out  string // its stdout and stderr
}

func needProgram(t *testing.T, path string) {
	t.Helper()
	crtest.RequireRoot(t)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing (make deps installs it): %v", path, err)
	}
}

// freePort finds a loopback TCP port nobody listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProg runs argv in dir with stdin from /dev/null and stdout and
// stderr to a file.
func startProg(t *testing.T, dir string, port int, argv ...string) *realProg {
	t.Helper()
	out := filepath.Join(dir, "out")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "LANG=C"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &realProg{pid: cmd.Process.Pid, dir: dir, port: port, out: out}
	cmd.Process.Release()
	t.Cleanup(func() { p.kill(t) })
	return p
}

// kill kills the program's whole tree and reaps it.
func (p *realProg) kill(t *testing.T) {
	pids := append([]int{p.pid}, crtest.Descendants(p.pid)...)
	for _, pid := range pids {
		crtest.KillAndReap(pid)
	}
	crtest.ReapGone(t, pids, 10*time.Second)
}

func (p *realProg) output() string {
	b, _ := os.ReadFile(p.out)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitPort polls until the program accepts connections on its port.
func (p *realProg) waitPort(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", p.addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: nothing listens on %s after %v: %v\noutput:\n%s", p.pid, p.addr(), timeout, err, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *realProg) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// busy runs req in a loop, at most n times and for at most d, until the
// returned stop is called; stop returns once no request is in flight,
// with the number done and the first error.
func busy(n int, d time.Duration, req func() error) (stop func() (int, error)) {
	var (
		mu     sync.Mutex
		halt   bool
		done   int
		first  error
		finish = make(chan struct{})
	)
	go func() {
		defer close(finish)
		end := time.Now().Add(d)
		for i := 0; i < n && time.Now().Before(end); i++ {
			mu.Lock()
			if halt {
				mu.Unlock()
				return
			}
			err := req()
			done++
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		}
	}()
	return func() (int, error) {
		mu.Lock()
		halt = true
		mu.Unlock()
		<-finish
		return done, first
	}
}

// dumpRestore dumps the program's tree while it runs (retrying while a
// just-closed connection lingers in it), kills it, and restores it.
func (p *realProg) dumpRestore(t *testing.T) *crcore.DumpResult {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	var res *crcore.DumpResult
	var err error
	deadline := time.Now().Add(3 * time.Second)
	for {
		res, err = crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.pid, ImageDir: dir})
		if err == nil {
			break
		}
		if time.Now().After(deadline) || !errors.Is(err, crcore.ErrNotSupported) {
			t.Fatalf("dump pid %d: %v\noutput:\n%s", p.pid, err, p.output())
		}
		t.Logf("dump pid %d (retried): %v", p.pid, err)
		time.Sleep(50 * time.Millisecond)
	}
	crtest.Reap(p.pid)
	crtest.ReapGone(t, res.Pids, 5*time.Second)
	if c, err := net.DialTimeout("tcp", p.addr(), 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("something still listens on %s after the dump killed the tree", p.addr())
	}
	r, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore pid %d: %v", p.pid, err)
	}
	if r.Pid != p.pid {
		t.Fatalf("restored root is pid %d, want %d", r.Pid, p.pid)
	}
	return res
}

// httpGet fetches a path on a fresh connection, closed afterwards.
func httpGet(addr, path string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

func expectBody(addr, path, want string) error {
	got, err := httpGet(addr, path)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("GET %s: %d bytes %.40q, want %d bytes %.40q", path, len(got), got, len(want), want)
	}
	return nil
}

func TestRealRedis(t *testing.T) {
	needProgram(t, "/usr/bin/redis-server")
	dir := t.TempDir()
	port := freePort(t)
	p := startProg(t, dir, port, "/usr/bin/redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir, "--protected-mode", "no")
	p.waitPort(t, 5*time.Second)
	for i := 0; i < 100; i++ {
		if got, err := redisCmd(p.addr(), "SET", fmt.Sprintf("key-%d", i), fmt.Sprintf("value-%d", i)); err != nil || got != "OK" {
			t.Fatalf("SET key-%d: %q %v", i, got, err)
		}
	}
	n := 0
	stop := busy(2000, 2*time.Second, func() error {
		n++
		_, err := redisCmd(p.addr(), "INCR", "counter")
		return err
	})
	time.Sleep(300 * time.Millisecond)
	done, err := stop()
	if err != nil || done == 0 {
		t.Fatalf("client loop: %d requests, %v", done, err)
	}
	p.dumpRestore(t)
	for i := 0; i < 100; i++ {
		got, err := redisCmd(p.addr(), "GET", fmt.Sprintf("key-%d", i))
		if err != nil || got != fmt.Sprintf("value-%d", i) {
			t.Fatalf("after restore: GET key-%d: %q %v\noutput:\n%s", i, got, err, p.output())
		}
	}
	got, err := redisCmd(p.addr(), "INCR", "counter")
	if err != nil || got != strconv.Itoa(done+1) {
		t.Fatalf("after restore: INCR counter: %q %v, want %d", got, err, done+1)
	}
}

// redisCmd sends one command on a fresh connection and returns the reply
// (a simple string, an integer or a bulk string).
func redisCmd(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"), strings.HasPrefix(line, ":"):
		return line[1:], nil
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("reply %q", line)
}

func TestRealPythonHTTP(t *testing.T) {
	needProgram(t, "/usr/bin/python3")
	dir := t.TempDir()
	www := filepath.Join(dir, "www")
	os.Mkdir(www, 0o755)
	body := strings.Repeat("python serves this file\n", 2000)
	if err := os.WriteFile(filepath.Join(www, "file.txt"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := startProg(t, dir, port, "/usr/bin/python3", "-m", "http.server", strconv.Itoa(port), "--bind", "127.0.0.1", "--directory", www)
	p.waitPort(t, 5*time.Second)
	stop := busy(500, 2*time.Second, func() error { return expectBody(p.addr(), "/file.txt", body) })
	time.Sleep(300 * time.Millisecond)
	if done, err := stop(); err != nil || done == 0 {
		t.Fatalf("client loop: %d requests, %v", done, err)
	}
	p.dumpRestore(t)
	for i := 0; i < 5; i++ {
		if err := expectBody(p.addr(), "/file.txt", body); err != nil {
			t.Fatalf("after restore: %v\noutput:\n%s", err, p.output())
		}
	}
}

func TestRealGoHTTP(t *testing.T) {
	crtest.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "gohttp")
	build := exec.Command("go", "build", "-o", bin, "./testdata/gohttp")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build gohttp: %v\n%s", err, out)
	}
	dir := t.TempDir()
	port := freePort(t)
	p := startProg(t, dir, port, bin, "127.0.0.1:"+strconv.Itoa(port))
	p.waitPort(t, 5*time.Second)
	blob := strings.Repeat("0123456789abcdef", 4096)
	stop := busy(1000, 2*time.Second, func() error {
		if _, err := httpGet(p.addr(), "/hello"); err != nil {
			return err
		}
		return expectBody(p.addr(), "/blob", blob)
	})
	time.Sleep(300 * time.Millisecond)
	done, err := stop()
	if err != nil || done == 0 {
		t.Fatalf("client loop: %d requests, %v", done, err)
	}
	if n := countTasks(p.pid); n < 2 {
		t.Fatalf("the Go server runs %d threads, want several", n)
	}
	p.dumpRestore(t)
	if err := expectBody(p.addr(), "/hello", fmt.Sprintf("hello %d", done+1)); err != nil {
		t.Fatalf("after restore: %v\noutput:\n%s", err, p.output())
	}
	for i := 0; i < 5; i++ {
		if err := expectBody(p.addr(), "/blob", blob); err != nil {
			t.Fatalf("after restore: %v", err)
		}
	}
}

// TestRealBusyboxSh: busybox sh runs a counting pipeline as a background
// job and waits for it; after restore the pipeline goes on counting where
// it was, into the same file.
func TestRealBusyboxSh(t *testing.T) {
	needProgram(t, "/bin/busybox")
	dir := t.TempDir()
	out := filepath.Join(dir, "count")
	script := `i=0; while :; do i=$((i+1)); echo $i; busybox usleep 20000; done | while read n; do echo "n $n" >> ` + out + `; done &
job=$!
echo started
wait $job`
	p := startProg(t, dir, 0, "/bin/busybox", "sh", "-c", script)
	last := func() int {
		b, _ := os.ReadFile(out)
		ls := strings.Split(strings.TrimSpace(string(b)), "\n")
		n, _ := strconv.Atoi(strings.TrimPrefix(ls[len(ls)-1], "n "))
		return n
	}
	waitCount := func(min int, what string) {
		deadline := time.Now().Add(5 * time.Second)
		for last() < min {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(out)
				t.Fatalf("%s: count stuck at %d, want %d\n%s\noutput:\n%s", what, last(), min, b, p.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount(10, "before the dump")
	if n := len(crtest.Descendants(p.pid)); n < 2 {
		t.Fatalf("busybox sh has %d descendants, want the pipeline's", n)
	}
	p.dumpRestore(t)
	at := last()
	waitCount(at+10, "after restore")
	b, _ := os.ReadFile(out)
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != fmt.Sprintf("n %d", i+1) {
			t.Fatalf("line %d is %q: the count skipped or repeated", i+1, l)
		}
	}
}

// TestRealNginx: nginx with a master and two workers sharing memory
// (its shared zones are MAP_SHARED|MAP_ANONYMOUS, a limit_req zone among
// them) serves a file before and after restore.
func TestRealNginx(t *testing.T) {
	needProgram(t, "/usr/sbin/nginx")
	dir := t.TempDir()
	www := filepath.Join(dir, "www")
	os.Mkdir(www, 0o755)
	body := strings.Repeat("nginx serves this file\n", 3000)
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf(`daemon off;
user root;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	limit_req_zone $binary_remote_addr zone=one:1m rate=10000r/s;
	server {
		listen 127.0.0.1:%[2]d;
		root %[1]s/www;
		location / { limit_req zone=one burst=10000; }
	}
}
`, dir, port)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProg(t, dir, port, "/usr/sbin/nginx", "-p", dir, "-c", cf, "-e", filepath.Join(dir, "error.log"))
	p.waitPort(t, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(crtest.ChildrenOf(p.pid)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("nginx master %d has workers %v, want 2", p.pid, crtest.ChildrenOf(p.pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop := busy(1000, 2*time.Second, func() error { return expectBody(p.addr(), "/index.html", body) })
	time.Sleep(300 * time.Millisecond)
	if done, err := stop(); err != nil || done == 0 {
		t.Fatalf("client loop: %d requests, %v\nerror.log:\n%s", done, err, tail(filepath.Join(dir, "error.log")))
	}
	shared := false
	for _, l := range crtest.Maps(t, crtest.ChildrenOf(p.pid)[0]) {
		if strings.Contains(l, "/dev/zero (deleted)") {
			shared = true
		}
	}
	if !shared {
		t.Fatal("the nginx worker maps no shared anonymous memory")
	}
	res := p.dumpRestore(t)
	if len(res.Pids) != 3 {
		t.Fatalf("dumped %v, want the master and two workers", res.Pids)
	}
	// The zones are one object in the master and both workers again.
	want := sharedInodes(t, p.pid)
	if len(want) == 0 {
		t.Fatal("the restored master maps no shared anonymous memory")
	}
	for _, w := range crtest.ChildrenOf(p.pid) {
		if got := sharedInodes(t, w); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("restored worker %d maps shared objects %v, the master %v", w, got, want)
		}
	}
	for i := 0; i < 20; i++ {
		if err := expectBody(p.addr(), "/index.html", body); err != nil {
			t.Fatalf("after restore: %v\nerror.log:\n%s", err, tail(filepath.Join(dir, "error.log")))
		}
	}
}

// tail returns the end of a file, for failure messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// sharedInodes lists the inodes behind pid's shared anonymous mappings,
// by address.
func sharedInodes(t *testing.T, pid int) []uint64 {
	t.Helper()
	var out []uint64
	for _, l := range crtest.Maps(t, pid) {
		if !strings.Contains(l, "/dev/zero (deleted)") {
			continue
		}
		rng, _, _ := strings.Cut(l, " ")
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/map_files/%s", pid, rng), &st); err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Ino)
	}
	return out
}
