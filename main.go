// Command kiln builds OCI images from declarative ImageBuild resources, as a
// Kubernetes operator (kiln manager) or from files (kiln build -f).
package main

import (
	"context"
	"fmt"
	"os"

	"k8s.io/client-go/rest"

	"github.com/kiln-build/kiln/controllers"
	"github.com/kiln-build/kiln/internal/build"
	"github.com/kiln-build/kiln/internal/cli"
)

func main() {
	root := cli.NewRoot(cli.NewManagerCmd(), cli.NewDemoCmd(runDemoManager))
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(cli.ExitCode(err))
}

// runDemoManager runs the controller in-process for `kiln demo`. The
// endpoints are off so that the demo never fights over fixed ports.
func runDemoManager(ctx context.Context, cfg *rest.Config, cacheDir string) error {
	return controllers.Run(ctx, cfg, controllers.ManagerOptions{
		MetricsBindAddress: "0", HealthProbeBindAddress: "0", Engine: build.Config{CacheDir: cacheDir},
	})
}
