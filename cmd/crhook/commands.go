package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
)

func dumpCmd(g *globals) *cobra.Command {
	var (
		pid          int
		dir          string
		leaveRunning bool
		statsFile    string
	)
	c := &cobra.Command{
		Use:   "dump -t PID -D DIR [--leave-running]",
		Short: "Checkpoint the process PID into the image directory DIR",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pid <= 0 {
				return usagef("dump: -t PID is required")
			}
			if dir == "" {
				return usagef("dump: -D DIR is required")
			}
			prog, stop := startProgress("dump", os.Stderr, g.progressAfter)
			res, err := crcore.Dump(cmd.Context(), crcore.DumpOptions{
				Pid: pid, ImageDir: dir, LeaveRunning: leaveRunning,
				Progress: prog, Log: logrus.NewEntry(g.log),
			})
			stop()
			if err != nil {
				return err
			}
			return writeStats(statsFile, res.Stats)
		},
	}
	c.Flags().IntVarP(&pid, "tree", "t", 0, "pid of the process to dump")
	c.Flags().StringVarP(&dir, "images-dir", "D", "", "directory for the images (created 0700)")
	c.Flags().BoolVar(&leaveRunning, "leave-running", false, "keep the process running after the dump (default: kill it)")
	c.Flags().StringVar(&statsFile, "stats", "", "write timings and page counts as JSON to this file")
	return c
}

func restoreCmd(g *globals) *cobra.Command {
	var (
		dir       string
		detach    bool
		pidns     string
		pidfile   string
		statsFile string
		shellJob  bool
	)
	c := &cobra.Command{
		Use:   "restore -D DIR [-d] [--pidfile FILE] [--shell-job]",
		Short: "Restore the process tree checkpointed in DIR",
		Long: "Restore the process tree checkpointed in DIR with its original pids.\n" +
			"Without -d, crhook stays the restored root's parent and exits with its status;\n" +
			"with -d it exits once the tree runs.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("restore: -D DIR is required")
			}
			if pidns != "" && pidns != "new" {
				return usagef("restore: --pidns takes only \"new\"")
			}
			// A terminal at the dumped fds 0-2 always becomes crhook's
			// own stdio; --shell-job (criu's name) checks that this is a
			// terminal to put the job on.
			if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); shellJob && err != nil {
				return usagef("restore --shell-job: standard input is not a terminal")
			}
			prog, stop := startProgress("restore", os.Stderr, g.progressAfter)
			res, err := crcore.Restore(cmd.Context(), crcore.RestoreOptions{
				ImageDir: dir, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
				NewPidNS: pidns == "new",
				Progress: prog,
				Log:      logrus.NewEntry(g.log),
			})
			stop()
			if err != nil {
				return err
			}
			if pidfile != "" {
				if err := os.WriteFile(pidfile, []byte(strconv.Itoa(res.Pid)+"\n"), 0o644); err != nil { //nolint:gosec // a pidfile is for other tools to read, as runc's and podman's are
					_ = unix.Kill(res.Pid, unix.SIGKILL) // best effort: the write's error is the one to report
					return fmt.Errorf("write pidfile: %w", err)
				}
			}
			if err := writeStats(statsFile, res.Stats); err != nil {
				return err
			}
			if detach {
				return nil
			}
			return waitRoot(res.Pid)
		},
	}
	c.Flags().StringVarP(&dir, "images-dir", "D", "", "directory holding the images")
	c.Flags().BoolVarP(&detach, "restore-detached", "d", false, "exit once the restored tree runs")
	c.Flags().StringVar(&pidns, "pidns", "", `"new": restore into a new pid namespace, the root as its init (the image's root must have been pid 1)`)
	c.Flags().BoolVarP(&shellJob, "shell-job", "j", false, "restore a job dumped on a terminal onto this terminal (stdin must be one)")
	c.Flags().StringVar(&pidfile, "pidfile", "", "write the restored root's pid to this file")
	c.Flags().StringVar(&statsFile, "stats", "", "write timings and page counts as JSON to this file")
	return c
}

// waitRoot waits for the restored root, forwarding SIGINT/SIGTERM to it,
// and exits with its status.
func waitRoot(pid int) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		for s := range sigs {
			_ = unix.Kill(pid, s.(syscall.Signal)) // ESRCH once the root has exited: nothing to forward to
		}
	}()
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for restored pid %d: %w", pid, err)
		}
		if ws.Exited() || ws.Signaled() {
			break
		}
	}
	if ws.Signaled() {
		return exitError{128 + int(ws.Signal())}
	}
	if ws.ExitStatus() != 0 {
		return exitError{ws.ExitStatus()}
	}
	return nil
}

func writeStats(path string, st crcore.Stats) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

func checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Probe every kernel feature crhook needs and say which is missing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res := crcore.Check(context.Background())
			bad := 0
			for _, p := range res {
				state := "ok"
				if p.Err != nil {
					state = "MISSING: " + p.Err.Error()
					bad++
				}
				fmt.Printf("%-32s %s\n", p.Name, state)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d kernel features missing", bad, len(res))
			}
			fmt.Println("Looks good.")
			return nil
		},
	}
}
