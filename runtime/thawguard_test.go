//go:build linux

package runtime

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

const guardHelperEnv = "CRHOOK_TEST_THAW_GUARD"

// TestMain doubles as the guard process of the tests below: the test
// binary re-executed with guardHelperEnv set and the freezer kind and
// directory as arguments.
func TestMain(m *testing.M) {
	if os.Getenv(guardHelperEnv) != "" {
		flag.Parse()
		if err := RunThawGuard(os.Stdin, os.Stdout, flag.Arg(0), flag.Arg(1)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// guardCase checks, with real tasks in a new cgroup under mount, that the
// guard thaws a frozen cgroup when its pipe closes without "done" (as
// when crhook is killed), and leaves it alone after "done".
func guardCase(t *testing.T, mount string, newFreezer func(string) Freezer) {
	dir, _ := busyCgroup(t, mount, "crhook-guard", newFreezer)
	t.Setenv(guardHelperEnv, "1")
	f := newFreezer(dir)
	freeze := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Freeze(ctx); err != nil {
			t.Fatal(err)
		}
	}
	start := func() *ThawGuard {
		g, err := StartThawGuard(os.Args[0], []string{"-test.run=^$"}, f)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}

	// Aborted (crhook died): the guard thaws.
	g := start()
	freeze()
	g.Abort()
	if ok, err := f.Frozen(); ok || err != nil {
		t.Fatalf("frozen after the guard's pipe closed without done: %v %v", ok, err)
	}
	if g.cmd.ProcessState == nil {
		t.Errorf("guard %d did not exit", g.Pid())
	}

	// Released (crhook finished): the guard leaves the cgroup alone.
	g = start()
	freeze()
	g.Release()
	if ok, err := f.Frozen(); !ok || err != nil {
		t.Fatalf("the guard thawed after done: frozen %v %v", ok, err)
	}
	if g.cmd.ProcessState == nil || !g.cmd.ProcessState.Success() {
		t.Errorf("guard after done: %v", g.cmd.ProcessState)
	}
	if err := f.Thaw(); err != nil {
		t.Fatal(err)
	}
}

func TestThawGuardV1(t *testing.T) {
	m, err := ReadMounts()
	if err != nil {
		t.Fatal(err)
	}
	if m.V1["freezer"] == "" {
		t.Skip("no v1 freezer hierarchy mounted")
	}
	guardCase(t, m.V1["freezer"], NewV1Freezer)
}

func TestThawGuardV2(t *testing.T) {
	m, err := ReadMounts()
	if err != nil {
		t.Fatal(err)
	}
	if m.Unified == "" {
		t.Skip("no cgroup2 hierarchy mounted")
	}
	guardCase(t, m.Unified, NewV2Freezer)
}
