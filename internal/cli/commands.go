package cli

import "github.com/spf13/cobra"

// defaultCommands are the engine subcommands.
func defaultCommands() []*cobra.Command {
	var cmds []*cobra.Command
	for _, c := range []struct{ use, short string }{
		{"build", "Build and push the ImageBuilds in the given files"},
		{"plan", "Compute digests of the ImageBuilds in the given files without pushing"},
		{"demo", "Run the main job on an embedded control plane and registry"},
	} {
		cmds = append(cmds, &cobra.Command{Use: c.use, Short: c.short, RunE: notImplemented(c.use)})
	}
	return cmds
}
