//go:build linux && amd64

package ptrace

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestScratchRegs: a Scratch task's registers are reused from the last
// read or set only while it has not run since; once it ran they are read
// anew, and an injection leaves them as its code ended.
func TestScratchRegs(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("/bin/sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	tk := Adopt(cmd.Process.Pid)
	if _, err := tk.WaitStop(); err != nil { // the exec's SIGTRAP
		t.Fatal(err)
	}
	tk.Scratch = true
	regs, err := tk.GetRegs()
	if err != nil {
		t.Fatal(err)
	}
	if tk.known {
		t.Fatal("registers known before any were set or read at a trap")
	}
	regs.R12 = 0x1234
	if err := tk.SetRegs(&regs); err != nil {
		t.Fatal(err)
	}
	if got, err := tk.startRegs(); err != nil || got.R12 != 0x1234 || !tk.known {
		t.Fatalf("after SetRegs: r12 %#x, %v, known %v", got.R12, err, tk.known)
	}
	// It runs (into the exec'd program's first instructions, then a
	// stop we ask for): what we set is no longer what it has.
	if err := unix.Kill(tk.Tid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := tk.Cont(0); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.WaitStop(); err != nil {
		t.Fatal(err)
	}
	if tk.known {
		t.Error("registers still taken as known after the task ran")
	}
}
