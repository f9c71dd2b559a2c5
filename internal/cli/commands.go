package cli

import "github.com/spf13/cobra"

// defaultCommands are the engine subcommands.
func defaultCommands() []*cobra.Command {
	return []*cobra.Command{
		newBuildCmd(),
		newPlanCmd(),
		{Use: "demo", Short: "Run the main job on an embedded control plane and registry", RunE: notImplemented("demo")},
	}
}
