// Command crhook checkpoints and restores Linux process trees. It is a CLI
// with criu's conventions and, in hook mode, an OCI runtime hook.
//
// Exit status: 0 on success, 1 with a one-line reason on stderr when the
// operation fails, 2 on bad usage.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// usageError marks errors that are the caller's wording, not a failure.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

type globals struct {
	logLevel string
	logFile  string
	log      *logrus.Logger
	// progressAfter: a dump or restore that runs this long shows its
	// progress on stderr when that is a terminal.
	progressAfter time.Duration
}

func main() {
	// CRHOOK_CPUPROFILE=FILE writes a CPU profile of the run (for
	// `go tool pprof`); a debugging aid, not an interface.
	if path := os.Getenv("CRHOOK_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				code := run(os.Args[1:])
				pprof.StopCPUProfile()
				_ = f.Close() // a debugging aid: a short profile shows when read
				os.Exit(code)
			}
		}
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	g := &globals{}
	root := &cobra.Command{
		Use:           "crhook",
		Short:         "Checkpoint and restore Linux process trees, without parasites",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.setupLog()
		},
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return usagef("a command is required: dump, restore, show or check")
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warning", "log level: error, warning, info, debug")
	root.PersistentFlags().StringVar(&g.logFile, "log-file", "", "write the log to this file instead of stderr")
	root.PersistentFlags().DurationVar(&g.progressAfter, "progress-after", time.Second, "show progress on a terminal after this long (negative: never)")
	if err := root.PersistentFlags().MarkHidden("progress-after"); err != nil {
		panic(err) // only for a flag that does not exist
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(dumpCmd(g), restoreCmd(g), showCmd(), checkCmd(), verifyCmd())
	root.AddCommand(containerCmds(g)...)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ue usageError
	var ee exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue) || isCobraUsage(err):
		fmt.Fprintf(os.Stderr, "crhook: %v\n", err)
		fmt.Fprintln(os.Stderr, "Run 'crhook --help' for usage.")
		return 2
	default:
		fmt.Fprintf(os.Stderr, "crhook: %v\n", err)
		return 1
	}
}

// exitError carries an exit status chosen by a command (the restored
// root's own, for restore without -d).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires ", "invalid argument"} {
		if len(msg) >= len(p) && contains(msg, p) {
			return true
		}
	}
	return false
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func (g *globals) setupLog() error {
	g.log = logrus.New()
	g.log.Out = os.Stderr
	lvl, err := logrus.ParseLevel(g.logLevel)
	if err != nil {
		return usagef("--log-level: %v", err)
	}
	g.log.SetLevel(lvl)
	if g.logFile != "" {
		f, err := os.OpenFile(g.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		g.log.Out = f
	}
	return nil
}
