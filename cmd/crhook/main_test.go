//go:build linux && amd64

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/crhook/crhook/crcore/crtest"
)

// crhookBin is the crhook binary under test, built once by TestMain: the
// CLI's contract (arguments, exit status, stderr, stdout) is what a user
// sees of the binary, so the tests run the binary.
var crhookBin string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		// Restored processes outlive a `crhook restore -d` and are
		// reparented to us; we reap them at once.
		if err := crtest.BecomeSubreaper(); err != nil {
			fmt.Fprintln(os.Stderr, "subreaper:", err)
			os.Exit(1)
		}
	}
	if err := crtest.CloexecInherited(); err != nil {
		fmt.Fprintln(os.Stderr, "close_range:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "crhook-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	crhookBin = filepath.Join(dir, "crhook")
	if out, err := exec.Command("go", "build", "-o", crhookBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fds := crtest.OpenFds()
	code := m.Run()
	if n := crtest.OpenFds(); code == 0 && n > fds {
		fmt.Fprintf(os.Stderr, "tests leaked %d fds: %v\n", n-fds, crtest.FdList())
		code = 1
	}
	crtest.Cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// crhook runs the binary and returns its exit status and output. A run
// that outlasts 30 s is killed and fails the test.
func crhook(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, crhookBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// A restored process must not keep our output pipes open.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("crhook %q: %v\nstderr: %s", args, err, r.stderr)
	}
	return r
}

// oneLine fails unless s is exactly one line of text.
func oneLine(t *testing.T, what, s string) {
	t.Helper()
	if s == "" || bytes.Count([]byte(s), []byte("\n")) != 1 || s[len(s)-1] != '\n' {
		t.Errorf("%s: want one line, got %q", what, s)
	}
}

// noStrays fails if a process of ours other than keep exists: a failed
// crhook command must leave no husk or half-restored task behind (any we
// would inherit as subreaper).
func noStrays(t *testing.T, keep ...int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var stray []int
		for _, c := range crtest.ChildrenOf(os.Getpid()) {
			if !slices.Contains(keep, c) {
				stray = append(stray, c)
			}
		}
		if len(stray) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range stray {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
				t.Errorf("stray process %d (%s) left behind", p, bytes.TrimSpace(comm))
				crtest.KillAndReap(p)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
