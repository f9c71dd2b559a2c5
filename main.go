// Command kiln builds OCI images from declarative ImageBuild resources, as a
// Kubernetes operator (kiln manager) or from files (kiln build -f).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/cli"
)

func main() {
	root := cli.NewRoot(newManagerCmd())
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(cli.ExitCode(err))
}

func newManagerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "manager",
		Short: "Run the ImageBuild controller",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &cli.ExitError{Code: 2, Err: fmt.Errorf("kiln manager: not implemented yet")}
		},
	}
}
