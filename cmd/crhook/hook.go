package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/crhook/crhook/hook"
)

// containerCmds are the subcommands for OCI containers.
func containerCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{checkpointCmd(g), thawGuardCmd(), hookCmd(), hookShimCmd(), installHooksCmd()}
}

// self is the running crhook's absolute path, for hooks and the shim.
func self() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find crhook executable: %w", err)
	}
	return p, nil
}

func hookCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hook [STAGE]",
		Short: "OCI runtime hook (createRuntime): restore a container whose config has io.crhook.restore",
		Long: "Run by the OCI runtime with the container's state on stdin. A container without\n" +
			"the io.crhook.restore=DIR annotation is left alone (exit 0). Otherwise a detached\n" +
			"shim is started that transplants the checkpoint in DIR into the container's init\n" +
			"when the runtime starts it; it logs to DIR/" + hook.LogFile + ".\n" +
			"Malformed state exits 1: the runtime then refuses the container.",
		Args: cobra.MaximumNArgs(1),
		// No log set-up, nothing but the state decode for a plain container.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := self()
			if err != nil {
				return err
			}
			_, err = hook.Run(hook.Options{Args: args, Stdin: os.Stdin, Stderr: os.Stderr, Self: exe})
			return err
		},
	}
}

func hookShimCmd() *cobra.Command {
	var (
		pid    int
		images string
		detach bool
	)
	c := &cobra.Command{
		Use:    "hook-shim --pid PID --images DIR",
		Short:  "The hook's detached restore shim (started by crhook hook)",
		Hidden: true,
		Args:   cobra.NoArgs,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pid <= 0 || images == "" {
				return usagef("hook-shim: --pid and --images are required")
			}
			if detach {
				exe, err := self()
				if err != nil {
					return err
				}
				p, err := hook.Detach(exe, pid, images)
				if err != nil {
					return err
				}
				fmt.Println(p)
				return nil
			}
			return hook.Shim(cmd.Context(), pid, images)
		},
	}
	c.Flags().IntVar(&pid, "pid", 0, "pid of the container's init, as the runtime left it")
	c.Flags().StringVar(&images, "images", "", "image directory to restore")
	c.Flags().BoolVar(&detach, "detach", false, "start the shim as a grandchild and print its pid")
	return c
}
