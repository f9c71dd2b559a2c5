// Command kiln-demo is `make demo`: the samples of config/samples built by
// the manager, run in-process, on an embedded control plane (etcd +
// kube-apiserver from bin/k8s), a CNCF distribution registry (bin/registry)
// and a file server on 127.0.0.1.
//
// It is a main package of its own, not a kiln subcommand, because the
// control plane comes from envtest: linking it into bin/kiln put envtest and
// the apiextensions server into the operator's image and broke
// `GOOS=windows go build .` (controller-runtime's internal test-process
// package does not compile for Windows).
package main

import (
	"context"
	"fmt"
	"os"

	"k8s.io/client-go/rest"

	"github.com/kiln-build/kiln/controllers"
	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/engine"
)

func main() {
	err := newDemoCmd(runManager).Execute()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(cli.ExitCode(err))
}

// runManager runs the controller in-process. The endpoints are off so that
// the demo never fights over fixed ports.
func runManager(ctx context.Context, cfg *rest.Config, cacheDir string) error {
	return controllers.Run(ctx, cfg, controllers.ManagerOptions{
		MetricsBindAddress: "0", HealthProbeBindAddress: "0", Engine: engine.Config{CacheDir: cacheDir},
	})
}
