//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
	"github.com/crhook/crhook/crcore/internal/image"
	pb "github.com/crhook/crhook/proto"
)

// TestRestoreOnExecPathEscape: a container restore of an image whose file
// path would leave the container's root is refused, saying why, and
// leaves no process behind. A counter (pid 1 of its own pid namespace,
// its log file open) is dumped, and the image's path of that log file is
// rewritten (checksums re-signed, as a hostile image maker would) to climb
// out with "..", or to pass through a symbolic link the image maker
// planted inside the root pointing at the host's /etc. The new "container"
// is pid 1 of a new pid namespace chrooted into that root, waiting for its
// start as runc init does.
func TestRestoreOnExecPathEscape(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "counter", true)
	log := filepath.Join(t.TempDir(), "log")
	cmd := exec.Command(bin, log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &crtest.Proc{Pid: cmd.Process.Pid, Log: log, Cmd: cmd}
	t.Cleanup(func() { crtest.KillAndReap(p.Pid) })
	p.WaitLine(t, `^count 3$`, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	cmd.Wait()

	// The root of the new container: a static busybox, and the planted
	// link.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "/bin/busybox", filepath.Join(root, "bin/busybox")).CombinedOutput(); err != nil {
		t.Fatalf("cp busybox: %v %s", err, out)
	}
	if err := os.Symlink("../../../../../../etc", filepath.Join(root, "data")); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, path, want string
		early            bool // refused before the container is touched
	}{
		{"relative dotdot", "../../etc/shadow", "not absolute and clean", true},
		{"absolute dotdot", "/../../etc/shadow", "not absolute and clean", true},
		{"symlink in root", "/data/shadow", "symbolic link", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cp := copyDir(t, dir)
			files := readImage[*pb.FileEntry](t, cp, "files.img")
			changed := 0
			msgs := make([]proto.Message, len(files))
			for i, f := range files {
				if r := f.GetReg(); r != nil && r.GetName() == log {
					r.Name = proto.String(c.path)
					changed++
				}
				msgs[i] = f
			}
			if changed != 1 {
				t.Fatalf("files.img names the log %s %d times, want 1", log, changed)
			}
			rewrite(t, cp, "files.img", image.Files, msgs...)
			verr := crcore.Verify(cp)
			if c.early && (verr == nil || !strings.Contains(verr.Error(), c.want)) {
				t.Errorf("verify: %v, want an error saying %q", verr, c.want)
			}

			init := exec.Command("/bin/busybox", "sh", "-c", "read x; exec /bin/busybox true")
			init.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Chroot: root}
			start, err := init.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := init.Start(); err != nil {
				t.Fatal(err)
			}
			initPid := init.Process.Pid
			// Waited for with wait4: a refused transplant reaps it
			// itself (the test's threads are its parent).
			init.Process.Release()
			t.Cleanup(func() { crtest.KillAndReap(initPid) })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := crcore.RestoreOnExec(ctx, crcore.RestoreOptions{ImageDir: cp}, initPid)
				done <- err
			}()
			if !c.early {
				deadline := time.Now().Add(10 * time.Second)
				for !traced(initPid) {
					if time.Now().After(deadline) {
						t.Fatal("the new init was not seized")
					}
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(200 * time.Millisecond)
				fmt.Fprintln(start, "go")
			}
			err = <-done
			start.Close()
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, crcore.ErrBadImage) {
				t.Fatalf("restore on exec: %v, want an ErrBadImage saying %q", err, c.want)
			}
			t.Logf("refused: %v", err)
			if c.early {
				// Refused before it was seized: the container's init
				// runs on, untraced, and goes its way when started.
				if traced(initPid) {
					t.Errorf("init %d is traced after the refusal", initPid)
				}
				if ws, err := crtest.Reap(initPid); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
					t.Errorf("the untouched init: %v %v", ws, err)
				}
			} else {
				// A refused transplant kills the container's init,
				// which had already exec'd: the runtime sees it die.
				crtest.WaitGone(t, initPid, 5*time.Second)
			}
			checkNoStray(t, []int{initPid})
		})
	}
}
