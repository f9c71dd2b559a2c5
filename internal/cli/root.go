// Package cli implements kiln's subcommands on top of the build engine.
// The manager subcommand lives with the controller and is added by main.
package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/version"
)

// ExitError carries a process exit status through cobra.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode maps an error returned by the root command to a process status:
// 0 for nil, the carried code for an ExitError, 1 otherwise.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// NewRoot returns the kiln root command with the engine subcommands and any
// extra commands (the manager) the caller adds.
func NewRoot(extra ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "Build OCI images from declarative ImageBuild resources",
		Long:          "kiln fetches layer tarballs, normalizes and verifies them, assembles base + layers + config in one pass and pushes the image, recording every digest.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd())
	for _, c := range defaultCommands() {
		root.AddCommand(c)
	}
	root.AddCommand(extra...)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of kiln and its build engine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.String())
			return err
		},
	}
}

// fprintf writes to w ignoring errors: used for best-effort terminal output.
func fprintf(w io.Writer, format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
