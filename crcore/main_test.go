//go:build linux && amd64

package crcore_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/crhook/crhook/crcore/crtest"
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		if err := crtest.BecomeSubreaper(); err != nil {
			fmt.Fprintln(os.Stderr, "subreaper:", err)
			os.Exit(1)
		}
	}
	if err := crtest.CloexecInherited(); err != nil {
		fmt.Fprintln(os.Stderr, "close_range:", err)
		os.Exit(1)
	}
	if mode := os.Getenv(helperEnv); mode != "" {
		helperProcess(mode) // exits
	}
	if msg := checkOutsideNS(); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
	fds := crtest.OpenFds()
	code := m.Run()
	if n := crtest.OpenFds(); code == 0 && n > fds {
		fmt.Fprintf(os.Stderr, "tests leaked %d fds: %v\n", n-fds, crtest.FdList())
		code = 1
	}
	crtest.Cleanup()
	os.Exit(code)
}
