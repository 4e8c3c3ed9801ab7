//go:build linux && amd64

package crcore_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore/crtest"
)

// sigqueueInfo queues sig with value v for pid as sigqueue(3) does.
func sigqueueInfo(t *testing.T, pid int, sig unix.Signal, v int32) {
	t.Helper()
	var si [128]byte
	binary.LittleEndian.PutUint32(si[0:], uint32(sig))
	binary.LittleEndian.PutUint32(si[8:], uint32(0xffffffff)) // SI_QUEUE
	binary.LittleEndian.PutUint32(si[16:], uint32(os.Getpid()))
	binary.LittleEndian.PutUint32(si[20:], uint32(os.Getuid()))
	binary.LittleEndian.PutUint32(si[24:], uint32(v))
	if _, _, e := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(pid), uintptr(sig), uintptr(unsafe.Pointer(&si[0]))); e != 0 {
		t.Fatalf("rt_sigqueueinfo: %v", e)
	}
}

// Pending signals come back with their siginfo: process-wide real-time
// signals in order with their values and sender, a tgkill'd signal in its
// thread, a kernel-made SIGCHLD with its child and status.
func TestPendingSignalsRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	bin := crtest.BuildC(t, "sigqueue", false)
	p := crtest.Start(t, bin)
	m := p.WaitLine(t, `^ready worker=([0-9]+)$`, 5*time.Second)
	var worker int
	fmt.Sscan(m[1], &worker)
	child := p.WaitLine(t, `^child ([0-9]+)$`, time.Second)[1]
	rtmin := unix.Signal(34)
	sigqueueInfo(t, p.Pid, rtmin+1, 3)
	sigqueueInfo(t, p.Pid, rtmin, 1)
	sigqueueInfo(t, p.Pid, rtmin, 2)
	sigqueueInfo(t, p.Pid, rtmin+2, 4)
	if err := unix.Tgkill(p.Pid, worker, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	dir := dumpKind(t, p.Pid, false)
	var cpid int
	fmt.Sscan(child, &cpid)
	crtest.ReapGone(t, []int{cpid}, 5*time.Second)
	pid := restoreKind(t, dir)
	if err := unix.Kill(pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	p.WaitLine(t, `^done$`, 5*time.Second)
	me := os.Getpid()
	var got []string
	for _, l := range p.Lines() {
		if strings.HasPrefix(l, "sig ") {
			got = append(got, l)
		}
	}
	wantMain := []string{
		fmt.Sprintf("sig 17 code 1 pid %s uid 0 status 7 in main", child),
		fmt.Sprintf("sig 34 code -1 pid %d uid 0 value 1 in main", me),
		fmt.Sprintf("sig 34 code -1 pid %d uid 0 value 2 in main", me),
		fmt.Sprintf("sig 35 code -1 pid %d uid 0 value 3 in main", me),
		fmt.Sprintf("sig 36 code -1 pid %d uid 0 value 4 in main", me),
	}
	wantWorker := fmt.Sprintf("sig 10 code -6 pid %d uid 0 value 0 in worker", me)
	var gotMain []string
	for _, l := range got {
		if strings.HasSuffix(l, " in main") {
			gotMain = append(gotMain, l)
		}
	}
	if !slices.Equal(gotMain, wantMain) || !slices.Contains(got, wantWorker) || len(got) != len(wantMain)+1 {
		t.Errorf("signals after restore:\n%s\nwant (main, in order):\n%s\nand %s", strings.Join(got, "\n"), strings.Join(wantMain, "\n"), wantWorker)
	}
}

// A SA_SIGINFO|SA_ONSTACK|SA_NODEFER handler keeps its flags and runs on
// the alternate stack, nested, after the restore.
func TestSigaltstackHandlerRoundTrip(t *testing.T) {
	crtest.RequireRoot(t)
	p := startKind(t, "altstack")
	dir := dumpKind(t, p.Pid, false)
	pid := restoreKind(t, dir)
	goAndWait(t, p, pid, 1)
	sameState(t, p.Lines(), run(p.Lines(), 1))
	for _, want := range []string{"handler depth 1 onstack 1 ss_flags 1 code -6", "handler depth 2 onstack 1 ss_flags 1 code -6"} {
		if !slices.Contains(p.Lines(), want) {
			t.Errorf("no %q in the log:\n%s", want, strings.Join(p.Lines(), "\n"))
		}
	}
}
