//go:build linux && amd64

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// Bad usage is exit 2 with a message on stderr, before anything runs.
func TestUsage(t *testing.T) {
	d := filepath.Join(t.TempDir(), "img")
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no command", nil, ""},
		{"bad flag", []string{"--bogus"}, "bogus"},
		{"bad subcommand flag", []string{"dump", "-t", "1", "-D", d, "--frob"}, "frob"},
		{"unknown command", []string{"frobnicate"}, "frobnicate"},
		{"dump without -t", []string{"dump", "-D", d}, "-t"},
		{"dump without -D", []string{"dump", "-t", "1"}, "-D"},
		{"dump with a bad pid", []string{"dump", "-t", "abc", "-D", d}, "abc"},
		{"restore without -D", []string{"restore"}, "-D"},
		{"show without a path", []string{"show"}, "arg"},
		{"bad log level", []string{"--log-level", "loud", "check"}, "loud"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := crhook(t, tc.args...)
			if r.code != 2 {
				t.Errorf("crhook %q: exit %d, want 2 (bad usage)\nstdout: %.200s\nstderr: %s", tc.args, r.code, r.stdout, r.stderr)
			}
			if strings.TrimSpace(r.stderr) == "" || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("crhook %q: stderr %q, want a message naming %q", tc.args, r.stderr, tc.want)
			}
			if _, err := os.Stat(d); err == nil {
				t.Errorf("crhook %q created the image dir", tc.args)
			}
		})
	}
}

// freePid returns a pid that no process has.
func freePid(t *testing.T) int {
	t.Helper()
	for p := 32767; p > 300; p-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err != nil {
			return p
		}
	}
	t.Fatal("no free pid")
	return 0
}

func TestDumpMissingPid(t *testing.T) {
	crtest.RequireRoot(t)
	pid := freePid(t)
	d := filepath.Join(t.TempDir(), "img")
	r := crhook(t, "dump", "-t", strconv.Itoa(pid), "-D", d)
	if r.code != 1 {
		t.Errorf("exit %d, want 1; stderr %q", r.code, r.stderr)
	}
	oneLine(t, "stderr", r.stderr)
	if !strings.Contains(r.stderr, strconv.Itoa(pid)) {
		t.Errorf("stderr %q does not name pid %d", r.stderr, pid)
	}
	if _, err := os.Stat(d); err == nil {
		t.Errorf("a failed dump left the image dir %s", d)
	}
	noStrays(t)
}

// startCounter starts the counter test program and waits for its fifth
// count.
func startCounter(t *testing.T) (*crtest.Proc, string) {
	t.Helper()
	bin := crtest.BuildC(t, "counter", false)
	p := crtest.Start(t, bin)
	p.WaitLine(t, `^count 5$`, 10*time.Second)
	return p, bin
}

func checkConsecutive(t *testing.T, counts []uint64) {
	t.Helper()
	for i := 1; i < len(counts); i++ {
		if counts[i] != counts[i-1]+1 {
			t.Fatalf("count %d follows %d", counts[i], counts[i-1])
		}
	}
}

type shownJSON struct {
	File    string            `json:"file"`
	Magic   string            `json:"magic"`
	Entries []json.RawMessage `json:"entries"`
}

// dump, show, restore -d --pidfile: the counter goes on counting from
// where it was dumped, in its own pid.
func TestDumpShowRestoreDetached(t *testing.T) {
	crtest.RequireRoot(t)
	p, _ := startCounter(t)
	d := filepath.Join(t.TempDir(), "img")
	r := crhook(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", d)
	if r.code != 0 {
		t.Fatalf("dump: exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("dump succeeded but wrote to stderr: %q", r.stderr)
	}
	ws, err := crtest.Reap(p.Pid)
	if err != nil || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Fatalf("dump without --leave-running should kill the process: %v %v", ws, err)
	}
	counts := p.Counts()
	last := counts[len(counts)-1]

	// show --json DIR: JSON, one object per image, CRIU's kind names.
	r = crhook(t, "show", "--json", d)
	if r.code != 0 {
		t.Fatalf("show: exit %d, stderr %q", r.code, r.stderr)
	}
	var shown []shownJSON
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatalf("show output is not JSON: %v\n%.500s", err, r.stdout)
	}
	magics := map[string]bool{}
	for _, s := range shown {
		magics[s.Magic] = true
		if len(s.Entries) == 0 {
			t.Errorf("show: %s has no entries", s.File)
		}
		if strings.HasPrefix(s.File, "pages-") {
			t.Errorf("show printed the raw pages file %s", s.File)
		}
	}
	for _, k := range []string{"INVENTORY", "PSTREE", "CORE", "MM", "PAGEMAP", "FDINFO", "FILES", "FS", "CRHOOK_INVENTORY", "CRHOOK_TASK"} {
		if !magics[k] {
			t.Errorf("show %s names no %s image (got %v)", d, k, magics)
		}
	}
	// show FILE: one object.
	r = crhook(t, "show", filepath.Join(d, "pstree.img"))
	var one shownJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &one) != nil || one.Magic != "PSTREE" || len(one.Entries) != 1 {
		t.Fatalf("show pstree.img: exit %d, %q", r.code, r.stdout)
	}
	var pe struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal(one.Entries[0], &pe); err != nil || pe.Pid != p.Pid {
		t.Errorf("show pstree.img: entry %s, want pid %d", one.Entries[0], p.Pid)
	}

	pidfile := filepath.Join(t.TempDir(), "pid")
	r = crhook(t, "restore", "-D", d, "-d", "--pidfile", pidfile)
	t.Cleanup(func() { crtest.KillAndReap(p.Pid) })
	if r.code != 0 {
		t.Fatalf("restore -d: exit %d, stderr %q", r.code, r.stderr)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || got != p.Pid {
		t.Fatalf("pidfile holds %q, want %d", b, p.Pid)
	}
	p.WaitLine(t, "^count "+strconv.FormatUint(last+20, 10)+"$", 10*time.Second)
	after := p.Counts()[len(counts):]
	if after[0] != last+1 {
		t.Errorf("first count after restore %d, want %d", after[0], last+1)
	}
	checkConsecutive(t, after)
	// crhook has exited; the restored process is ours now (subreaper).
	noStrays(t, p.Pid)
}

func TestCheck(t *testing.T) {
	crtest.RequireRoot(t)
	r := crhook(t, "check")
	if r.code != 0 || !strings.Contains(r.stdout, "Looks good.") {
		t.Errorf("check: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// A restore whose pid is still in use fails after the wait, naming the
// pid, and leaves the process that holds it alone.
func TestRestorePidTaken(t *testing.T) {
	crtest.RequireRoot(t)
	p, _ := startCounter(t)
	d := filepath.Join(t.TempDir(), "img")
	r := crhook(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", d, "--leave-running")
	if r.code != 0 {
		t.Fatalf("dump --leave-running: exit %d, stderr %q", r.code, r.stderr)
	}
	start := time.Now()
	r = crhook(t, "restore", "-D", d)
	if r.code != 1 {
		t.Errorf("restore onto a live pid: exit %d, want 1; stderr %q", r.code, r.stderr)
	}
	oneLine(t, "stderr", r.stderr)
	if !strings.Contains(r.stderr, strconv.Itoa(p.Pid)) || !strings.Contains(r.stderr, "taken") {
		t.Errorf("stderr %q: want it to name pid %d and say it is taken", r.stderr, p.Pid)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("restore gave up after %v; it should wait for the pid (3 s by default)", d)
	}
	noStrays(t, p.Pid)
	// The original counts on, untouched.
	c := p.Counts()
	p.WaitLine(t, "^count "+strconv.FormatUint(c[len(c)-1]+10, 10)+"$", 10*time.Second)
	checkConsecutive(t, p.Counts())
}

// Without -d, crhook waits for the restored root and exits with its
// status.
func TestRestoreExitStatus(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "sleeper", false)
	dumpSleeper := func(t *testing.T, ms string) (*crtest.Proc, string) {
		t.Helper()
		p := crtest.Start(t, bin, ms)
		p.WaitLine(t, `^sleeping$`, 5*time.Second)
		crtest.WaitSyscall(t, p.Pid, time.Second, unix.SYS_CLOCK_NANOSLEEP, unix.SYS_NANOSLEEP)
		d := filepath.Join(t.TempDir(), "img")
		if r := crhook(t, "dump", "-t", strconv.Itoa(p.Pid), "-D", d); r.code != 0 {
			t.Fatalf("dump: exit %d, stderr %q", r.code, r.stderr)
		}
		crtest.Reap(p.Pid)
		return p, d
	}

	t.Run("exits 0", func(t *testing.T) {
		p, d := dumpSleeper(t, "1500")
		r := crhook(t, "restore", "-D", d)
		if r.code != 0 {
			t.Errorf("restore: exit %d, want the sleeper's 0; stderr %q", r.code, r.stderr)
		}
		p.WaitLine(t, `^slept rc=0 errno=0$`, time.Second)
		noStrays(t)
	})

	t.Run("killed", func(t *testing.T) {
		p, d := dumpSleeper(t, "60000")
		cmd := exec.Command(crhookBin, "restore", "-D", d)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { crtest.KillAndReap(p.Pid); cmd.Process.Kill(); cmd.Wait() })
		// Restored: the sleeper's pid exists again, asleep, running the
		// sleeper binary.
		deadline := time.Now().Add(10 * time.Second)
		for {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid))
			st, _ := crtest.State(p.Pid)
			if exe == bin && st == 'S' {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d not restored within 10 s (exe %q, state %c)", p.Pid, exe, st)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := unix.Kill(p.Pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 128+int(unix.SIGKILL) {
			t.Errorf("crhook restore after its root was killed: %v, want exit status %d", err, 128+int(unix.SIGKILL))
		}
		noStrays(t)
	})
}
