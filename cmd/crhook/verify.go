package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/crhook/crhook/crcore"
)

// verifyCmd checks an image directory without restoring it.
func verifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify DIR",
		Short: "Check an image directory (checksums, decoding, compatibility) without restoring it",
		Long: "Verify checks every file of DIR against the checksums the dump wrote, decodes\n" +
			"every image and checks it for consistency, and checks that this machine and\n" +
			"kernel can restore it. Exit status 0 when it can, 1 with the file named when not.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := crcore.Verify(args[0]); err != nil {
				return fmt.Errorf("verify %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}
}
