package cli

import "github.com/spf13/cobra"

// defaultCommands are the engine subcommands; the manager needs the
// controller and is added by main.
func defaultCommands() []*cobra.Command {
	return []*cobra.Command{newBuildCmd(), newPlanCmd()}
}
