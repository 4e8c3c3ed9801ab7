//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// A process holding a file crhook cannot dump makes the dump fail before
// anything is changed: the error matches ErrNotSupported and names the
// pid, the fd and the kind; no image directory is left; the process is
// no longer traced, has the same mappings and fds, and counts on.
func TestUnsupportedKindsFailCleanly(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "kinds", false)
	outside := filepath.Join(t.TempDir(), "outside.sock")
	l, err := net.Listen("unix", outside)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		// Accept the connection the unix-outside case makes, and keep
		// it: that process then holds a connected socket whose peer is
		// ours.
		var held []net.Conn
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()

	for _, c := range []struct {
		kind, arg, want string
	}{
		{"io_uring", "", "io_uring"},
		{"perf", "", "perf_event"},
		{"bpf", "", "bpf-map"},
		{"pidfd", "", "pidfd"},
		{"netlink", "", "netlink socket"},
		{"packet", "", "packet socket"},
		{"tcp", "", "TCP connection 127.0.0.1:"},
		{"unix-outside", outside, "which no task of the dumped tree holds"},
		{"scm-rights", "", "SCM_RIGHTS"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			argv := []string{bin, c.kind}
			if c.arg != "" {
				argv = append(argv, c.arg)
			}
			p := crtest.Start(t, argv...)
			fd, _ := strconv.Atoi(p.WaitLine(t, `^fd (\d+)$`, 5*time.Second)[1])
			p.WaitLine(t, `^count 3$`, 5*time.Second)
			maps := crtest.Maps(t, p.Pid)
			files := crtest.Files(t, p.Pid)

			imgs := filepath.Join(t.TempDir(), "img")
			_, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: imgs})
			if err == nil {
				t.Fatal("dump succeeded")
			}
			if !errors.Is(err, crcore.ErrNotSupported) {
				t.Errorf("dump error %q does not match ErrNotSupported", err)
			}
			msg := err.Error()
			for _, w := range []string{fmt.Sprintf("pid %d", p.Pid), fmt.Sprintf("fd %d", fd), c.want} {
				if !strings.Contains(msg, w) {
					t.Errorf("dump error %q does not say %q", msg, w)
				}
			}
			if _, err := os.Stat(imgs); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed dump left %s behind (%v)", imgs, err)
			}

			counts := p.Counts()
			last := counts[len(counts)-1]
			p.WaitLine(t, "^count "+strconv.FormatUint(last+5, 10)+"$", 5*time.Second)
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
			if !strings.Contains(string(status), "\nTracerPid:\t0\n") {
				t.Errorf("process still traced after the failed dump")
			}
			if a := crtest.Maps(t, p.Pid); fmt.Sprint(a) != fmt.Sprint(maps) {
				t.Errorf("mappings changed:\nbefore %v\nafter  %v", maps, a)
			}
			after := crtest.Files(t, p.Pid)
			for n, b := range files {
				a := after[n]
				if a.Link != b.Link || a.Flags != b.Flags || a.Dev != b.Dev || a.Ino != b.Ino {
					t.Errorf("fd %d changed: was %+v, now %+v", n, b, a)
				}
			}
			if len(after) != len(files) {
				t.Errorf("%d fds before the dump, %d after", len(files), len(after))
			}
		})
	}
}
