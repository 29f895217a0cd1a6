//go:build mangen

package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Man pages for envlet and each of its commands, in section 1, from the
// command tree: `make man` runs `go run -tags mangen ./cmd/envlet
// __man-pages DIR`. The tag keeps the generator, and its markdown and roff
// dependencies, out of the envlet that ships.
func init() {
	hiddenCommands = append(hiddenCommands, func(a *app) *cobra.Command {
		return &cobra.Command{
			Use:    "__man-pages DIR",
			Hidden: true,
			Args:   nArgs(1, 1),
			RunE: func(cmd *cobra.Command, args []string) error {
				root := cmd.Root()
				root.DisableAutoGenTag = true // the pages stay the same from build to build
				if err := os.MkdirAll(args[0], 0o755); err != nil {
					return errorf(codeIO, "%v", err)
				}
				hdr := &doc.GenManHeader{Section: "1", Source: "envlet", Manual: "envlet manual"}
				if err := doc.GenManTree(root, hdr, args[0]); err != nil {
					return errorf(codeIO, "write man pages: %v", err)
				}
				return nil
			},
		}
	})
}
