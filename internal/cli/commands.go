package cli

import "github.com/spf13/cobra"

// defaultCommands are the engine subcommands; manager and demo need the
// controller and are added by main.
func defaultCommands() []*cobra.Command {
	return []*cobra.Command{newBuildCmd(), newPlanCmd()}
}
