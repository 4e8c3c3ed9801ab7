//go:build linux && amd64

package crcore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// A file unlinked while open comes back with its contents, its position,
// its link still reading "PATH (deleted)", shared by its two fds (one at
// 4000, in a sparse table), and nothing left in its directory; O_APPEND,
// O_NONBLOCK, O_DIRECT and O_PATH are kept, and an fd above 1024 too.
func TestRegExtraRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "regextra", false)
	dir := t.TempDir()
	const ghostData = "0123456789ghost-contents"
	for name, c := range map[string]string{"ghost": ghostData, "app": "start\n", "direct": strings.Repeat("d", 4096)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(c), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	p := crtest.Start(t, bin, dir)
	p.WaitLine(t, `^ready$`, 5*time.Second)
	fd := fdNumbers(p.WaitLine(t, `^fds (.*)$`, time.Second)[1])
	before := crtest.Files(t, p.Pid)
	ghostPath := filepath.Join(dir, "ghost")
	if before[fd["ghost"]].Link != ghostPath+" (deleted)" || fd["ghosthi"] != 4000 || fd["app"] != 1025 {
		t.Fatalf("test setup: fds %v, ghost fd is %+v", fd, before[fd["ghost"]])
	}
	want := map[string]uint32{"app": unix.O_APPEND | unix.O_NONBLOCK | unix.O_WRONLY, "direct": unix.O_DIRECT, "path": unix.O_PATH}
	for name, fl := range want {
		if before[fd[name]].Flags&fl != fl {
			t.Fatalf("test setup: %s flags %#o lack %#o", name, before[fd[name]].Flags, fl)
		}
	}

	pid := dumpKillRestore(t, p, filepath.Join(t.TempDir(), "img"))
	after := crtest.Files(t, pid)
	if len(after) != len(before) {
		t.Errorf("restored %d fds, dumped %d", len(after), len(before))
	}
	for n, b := range before {
		a := after[n]
		if a.Link != b.Link || a.Flags != b.Flags || a.Pos != b.Pos {
			t.Errorf("fd %d: dumped %s, restored %s", n, describe(b), describe(a))
		}
	}
	if !kcmpFile(t, pid, fd["ghost"], pid, fd["ghosthi"]) {
		t.Errorf("the deleted file's two fds are two open files after the restore")
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "app direct" {
		t.Errorf("directory holds %v after the restore, want [app direct]", names)
	}

	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.WaitLine(t, `^done$`, 5*time.Second)
	lines := strings.Join(p.Lines(), "\n")
	if !strings.Contains(lines, "\nghost "+(ghostData + "+tail")[4:]+" nlink=0\n") {
		t.Errorf("deleted file read back wrong:\n%s", lines)
	}
	if !strings.Contains(lines, "\napp 4\n") {
		t.Errorf("append through the restored fd failed:\n%s", lines)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app")); string(b) != "start\nmore" {
		t.Errorf("app holds %q", b)
	}
}

// A file replaced at its path between dump and restore (written anew and
// renamed over it) is not silently swapped for the new one: the restore
// fails, naming the path, and leaves no process behind.
func TestRegReplacedFailsRestore(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "regextra", false)
	dir := t.TempDir()
	for _, name := range []string{"ghost", "app", "direct"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat("x", 4096)), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	p := crtest.Start(t, bin, dir)
	p.WaitLine(t, `^ready$`, 5*time.Second)
	imgs := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: imgs}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.Reap(p.Pid)

	app := filepath.Join(dir, "app")
	if err := os.WriteFile(app+".new", []byte("replacement"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(app+".new", app); err != nil {
		t.Fatal(err)
	}
	res, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: imgs})
	if err == nil {
		crtest.KillAndReap(res.Pid)
		t.Fatal("restore succeeded with a replaced file")
	}
	if !errors.Is(err, crcore.ErrNotSupported) || !strings.Contains(err.Error(), app+" names another file") {
		t.Errorf("restore error %q, want one naming %s as replaced", err, app)
	}
	crtest.WaitGone(t, p.Pid, 5*time.Second)
}
