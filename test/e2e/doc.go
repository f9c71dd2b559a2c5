// Package e2e is kiln's end-to-end proof with real parts: the control plane
// from bin/k8s, the manager as a separate process built from the tree
// (bin/kiln manager), the CNCF distribution registry (bin/registry), a local
// file server for layer sources, a fault-injecting reverse proxy, and skopeo
// and umoci as independent clients that copy every pushed image out and
// unpack it (umoci checks every DiffID), and the sigstore cosign CLI
// (bin/cosign, hack/cosign.sh) as the independent verifier of signatures
// and attestations.
//
// The tests carry the build tag e2e: run them with `make test-e2e`, which
// installs what is missing (hack/e2e-deps.sh) and then runs
//
//	go test -count=1 -timeout 30m -tags e2e ./test/e2e/... -v
//
// A missing part fails the run and names it; nothing is skipped silently.
// Set KILN_E2E_KEEP=1 to keep the work directory (manager logs, registry
// storage, unpacked images) after the run.
package e2e
