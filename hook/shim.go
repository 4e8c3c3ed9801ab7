//go:build linux

package hook

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
)

// LogFile is the shim's log, in the image directory.
const LogFile = "restore.log"

// ShimTimeout bounds how long a shim waits for the container to start.
const ShimTimeout = 10 * time.Minute

// StartShim double-forks the restore shim for the init pid and waits
// until it has seized every thread of pid. The first child
// (`crhook hook-shim --detach`) is a new session leader; it starts the
// shim proper, prints its pid and exits, so the shim is nobody's child
// here, holds no terminal and, with stdio on /dev/null, keeps no pipe of
// the runtime's open.
func StartShim(self string, pid int, imageDir string, timeout time.Duration) error {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	defer null.Close()
	cmd := exec.Command(self, "hook-shim", "--detach", "--pid", strconv.Itoa(pid), "--images", imageDir)
	cmd.Args[0] = "crhook"
	cmd.Stdin, cmd.Stderr = null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	shim, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || shim <= 0 {
		return fmt.Errorf("start shim: it printed %q, not its pid", out)
	}
	if err := waitSeized(pid, shim, timeout); err != nil {
		return fmt.Errorf("shim %d: %w%s", shim, err, logTail(imageDir))
	}
	return nil
}

// Detach is `crhook hook-shim --detach`: start the shim proper with
// stdio on /dev/null, print its pid and return.
func Detach(self string, pid int, imageDir string) (int, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("detach shim: %w", err)
	}
	defer null.Close()
	cmd := exec.Command(self, "hook-shim", "--pid", strconv.Itoa(pid), "--images", imageDir)
	cmd.Args[0] = "crhook"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("detach shim: %w", err)
	}
	p := cmd.Process.Pid
	_ = cmd.Process.Release() // the shim outlives us; this only drops our handle
	return p, nil
}

// waitSeized polls until every thread of pid is traced by shim. It fails
// when the shim ends first or after timeout.
func waitSeized(pid, shim int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := tracedBy(pid, shim)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if !alive(shim) {
			return errors.New("ended before it seized the container's init")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("has not seized pid %d after %v", pid, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// tracedBy reports whether every thread of pid is traced by a thread of
// process tracer. /proc's TracerPid names the tracing thread, which for a
// Go tracer (a locked OS thread) is seldom the process's main thread.
func tracedBy(pid, tracer int) (bool, error) {
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false, fmt.Errorf("container init %d: %w", pid, err)
	}
	want := strconv.Itoa(tracer)
	for _, t := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			return false, nil // a thread ended: look again
		}
		got := ""
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "TracerPid:"); ok {
				got = strings.TrimSpace(v)
				break
			}
		}
		if got != want && (got == "0" || got == "" || tgidOf(got) != want) {
			return false, nil
		}
	}
	return len(tids) > 0, nil
}

// tgidOf returns the thread group of thread tid, "" if it is gone.
func tgidOf(tid string) string {
	b, err := os.ReadFile("/proc/" + tid + "/status")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// logTail returns the last lines of the shim's log, for an error.
func logTail(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, LogFile))
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "; " + LogFile + ": " + strings.Join(lines, " | ")
}

// Shim is `crhook hook-shim`: transplant the checkpoint in imageDir into
// pid at its exec, logging to imageDir/restore.log.
func Shim(ctx context.Context, pid int, imageDir string) error {
	f, err := os.OpenFile(filepath.Join(imageDir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open shim log: %w", err)
	}
	defer f.Close()
	lg := logrus.New()
	lg.Out = f
	lg.SetLevel(logrus.DebugLevel)
	log := lg.WithFields(logrus.Fields{"shim": os.Getpid(), "pid": pid})
	ctx, cancel := context.WithTimeout(ctx, ShimTimeout)
	defer cancel()
	log.WithField("images", imageDir).Info("waiting for the container's init to exec")
	res, err := crcore.RestoreOnExec(ctx, crcore.RestoreOptions{ImageDir: imageDir, Log: log}, pid)
	if err != nil {
		log.WithError(err).Error("restore failed")
		return err
	}
	log.WithFields(logrus.Fields{"total": res.Stats.TotalTime, "pages": res.Stats.PagesRestored}).Info("restored")
	return nil
}
