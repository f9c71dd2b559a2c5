// Command kiln builds OCI images from declarative ImageBuild resources, as a
// Kubernetes operator (kiln manager) or from files (kiln build -f). The demo
// of `make demo` is a separate program (test/demo) so that this binary links
// neither envtest nor the apiextensions server.
package main

import (
	"fmt"
	"os"

	"github.com/kiln-build/kiln/internal/cli"
)

func main() {
	root := cli.NewRoot(cli.NewManagerCmd())
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(cli.ExitCode(err))
}
