package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
)

// soakCycles is CRHOOK_SOAK_CONTAINER_CYCLES (make soak sets it), else 3.
func soakCycles(t *testing.T) int {
	if v := os.Getenv("CRHOOK_SOAK_CONTAINER_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("CRHOOK_SOAK_CONTAINER_CYCLES=%q", v)
		}
		return n
	}
	return 3
}

// TestSoakContainer checkpoints a runc container, deletes it, and
// restores it into a new container of the same bundle (the restore
// annotation and crhook's hook), again and again: the restored container
// is the next cycle's target. Every cycle the counter must count on from
// its checkpoint, its fds must be the first container's (nothing of
// crhook's leaks into it), and no crhook process (hook shim, thaw guard)
// may outlive the cycle; at the end the container's memory has not grown
// and the test holds no more fds than before.
func TestSoakContainer(t *testing.T) {
	setup(t)
	cycles := soakCycles(t)
	r := newRunner(t, "runc")
	bundle, data := newBundle(t, "/bin/counter", "/data/log")
	logPath := filepath.Join(data, "log")
	id := fmt.Sprintf("crhook-it-soak-%d", os.Getpid())
	c := r.mustStart(t, id, bundle, data)
	waitCount(t, logPath, 0, 5, 10*time.Second, func() string { return "" })
	fds0 := crtest.OpenFds()
	guards := guardPids()
	var fdsWant string
	var rss1 int64
	prev := ""
	for i := 0; i < cycles; i++ {
		pid := c.state(t).Pid
		fds := containerFds(t, pid)
		if i == 0 {
			t.Logf("the container's fds:\n%s", fds)
			fdsWant = fds
		} else if fds != fdsWant {
			t.Fatalf("cycle %d: the restored container's fds are\n%s\nthe first container's were\n%s", i, fds, fdsWant)
		}
		if i == 1 {
			rss1 = vmRSS(t, pid)
		}

		images := filepath.Join(t.TempDir(), fmt.Sprintf("images-%d", i))
		mustCrhook(t, "checkpoint", id, "-D", images, "--root", r.root)
		c.waitStatus(t, "stopped", 5*time.Second)
		n0 := lastCount(t, logPath)
		c.delete(t)
		if prev != "" {
			os.RemoveAll(prev)
		}
		prev = images
		from := len(logLines(t, logPath))
		mustCrhook(t, "install-hooks", bundle, "--images", images)
		var err error
		if c, err = r.start(t, id, bundle, data); err != nil {
			t.Fatalf("cycle %d: %v%s", i, err, restoreLog(images))
		}
		lines := waitCount(t, logPath, from, n0+5, 10*time.Second, func() string { return restoreLog(images) })
		for _, l := range lines[from:] {
			if strings.HasPrefix(l, "ready") {
				t.Fatalf("cycle %d: the new container started the counter afresh%s", i, restoreLog(images))
			}
		}
		if cs := counts(lines[from:]); cs[0] != n0+1 {
			t.Fatalf("cycle %d: restored counter began at %d, want %d", i, cs[0], n0+1)
		}
		waitNoGuard(t, guards)
		waitNoCrhook(t)
	}
	pid := c.state(t).Pid
	if n := crtest.OpenFds(); n != fds0 {
		t.Errorf("%d fds before the cycles, %d after: %v", fds0, n, crtest.FdList())
	}
	if cycles > 2 {
		rss := vmRSS(t, pid)
		t.Logf("%d cycles; container RSS %d KiB after cycle 1, %d KiB at the end", cycles, rss1>>10, rss>>10)
		if rss > rss1+8<<20 {
			t.Errorf("the container's RSS grew from %d KiB to %d KiB over %d cycles", rss1>>10, rss>>10, cycles)
		}
	}
	r.mustRun(t, "kill", id, "KILL")
	c.delete(t)
}

var pipeInode = regexp.MustCompile(`\[\d+\]`)

// containerFds lists pid's fds, one "N -> target" a line, kernel object
// numbers blanked.
func containerFds(t *testing.T, pid int) string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+" -> "+pipeInode.ReplaceAllString(l, "[]"))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	t.Fatalf("pid %d: no VmRSS", pid)
	return 0
}

// waitNoCrhook fails unless, within a bound, no process runs the crhook
// binary under test (a restore shim outliving its restore).
func waitNoCrhook(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == crhookBin {
				cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				left = append(left, e.Name()+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("crhook processes outlive the cycle: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
