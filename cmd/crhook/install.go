package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/crhook/crhook/hook"
)

func installHooksCmd() *cobra.Command {
	var (
		images  string
		noImage bool
	)
	c := &cobra.Command{
		Use:   "install-hooks BUNDLE [--images DIR]",
		Short: "Add crhook's createRuntime hook (and, with --images, the restore annotation) to BUNDLE/config.json",
		Long: "Add crhook as a createRuntime hook of BUNDLE/config.json (idempotent). With\n" +
			"--images DIR the bundle also gets the annotation io.crhook.restore=DIR, so the\n" +
			"next container started from it is restored from DIR. --no-restore removes the\n" +
			"annotation again (the hook stays, a no-op without it).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if images != "" && noImage {
				return usagef("install-hooks: --images and --no-restore exclude each other")
			}
			exe, err := self()
			if err != nil {
				return err
			}
			changed, err := hook.InstallHooks(args[0], exe, images)
			if err != nil {
				return err
			}
			if noImage {
				removed, err := hook.RemoveRestore(args[0])
				if err != nil {
					return err
				}
				changed = changed || removed
			}
			if changed {
				fmt.Fprintf(cmd.OutOrStdout(), "updated %s/config.json\n", args[0])
			}
			return nil
		},
	}
	c.Flags().StringVar(&images, "images", "", "restore the next container of this bundle from this image directory")
	c.Flags().BoolVar(&noImage, "no-restore", false, "remove the restore annotation")
	return c
}
