//go:build linux && amd64

package crcore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
	"github.com/crhook/crhook/crcore/crtest"
)

// TestUserfaultFill restores a process whose large mappings go in
// through a userfaultfd (UFFDIO_COPY) and checks that nothing of it
// shows: every region hashes as dumped, the mappings are the dumped ones
// (two touching mappings with separate anon_vmas stay apart, a mapping
// filled writable is protected again), the thread whose rseq area lies
// in a large mapping was registered, and the restored process holds no
// userfaultfd and no mapping still registered with one.
func TestUserfaultFill(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "bigshape", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^ready$`, 30*time.Second)
	p.WaitLine(t, `^count 3$`, 10*time.Second)
	before := crtest.Maps(t, p.Pid)

	dir := filepath.Join(t.TempDir(), "img")
	if _, err := crcore.Dump(context.Background(), crcore.DumpOptions{Pid: p.Pid, ImageDir: dir}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	crtest.ReapGone(t, []int{p.Pid}, 5*time.Second)
	n := len(p.Lines())
	last := p.Counts()[len(p.Counts())-1]
	rr, err := crcore.Restore(context.Background(), crcore.RestoreOptions{ImageDir: dir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { crtest.KillAndReap(rr.Pid) })

	// c (24 MiB) and d (16 MiB) go through the userfaultfd; a and b
	// touch each other and the stack holds an rseq area, so those are
	// written as before.
	want := uint64(40<<20) / uint64(os.Getpagesize())
	if st := rr.Stats; st.PagesUserfault < want || st.PagesUserfault >= st.PagesRestored {
		t.Errorf("pages installed through the userfaultfd: %d of %d restored, want at least %d and not all", st.PagesUserfault, st.PagesRestored, want)
	}
	if after := crtest.Maps(t, rr.Pid); fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("maps differ\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", rr.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(smaps), "\n") {
		if strings.HasPrefix(l, "VmFlags:") && strings.Contains(l+" ", " um ") {
			t.Errorf("a restored mapping is still registered with a userfaultfd: %q", l)
		}
	}
	for fd, f := range crtest.Files(t, rr.Pid) {
		if strings.Contains(f.Link, "userfaultfd") {
			t.Errorf("the restored process holds fd %d: %s", fd, f.Link)
		}
	}

	if err := unix.Kill(rr.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if got := lineAfter(t, p, n, `^check (ok|bad)$`); got[1] != "ok" {
		t.Fatal("restored memory differs from the dumped memory")
	}
	lineAfter(t, p, n, "^count "+strconv.FormatUint(last+5, 10)+"$")
}
