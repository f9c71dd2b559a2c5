# kiln — kubebuilder-style Makefile. `make help` lists the targets.

IMG ?= ghcr.io/kiln-build/kiln:latest
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/kiln-build/kiln/internal/version.Version=$(VERSION)

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
KUBECTL ?= kubectl
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.7.1
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s
# `make image` records "IMG repository@digest" here; build-installer pins to it.
IMAGE_REF ?= $(LOCALBIN)/image.ref
# The PEM bundle `make image` puts into the image; empty: the host's.
CA_BUNDLE ?=

# Tests that need the control plane find it here (see hack/envtest-assets.sh).
export KUBEBUILDER_ASSETS ?= $(ENVTEST_ASSETS)

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests into config/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/..." paths="./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: verify
verify: manifests generate vet ## Fail when generated files are stale, code is unformatted or vet complains.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed on:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@git diff --exit-code -- config/crd config/rbac api || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- config/crd config/rbac api)" || { echo "untracked generated files:"; git status --porcelain -- config/crd config/rbac api; exit 1; }
	@# kiln must build where its users run it (the Windows CI runners among
	@# them); the blob store's Windows files are type-checked by vet. The
	@# packages come from the build cache; -s -w skips writing debug info
	@# the check throws away, a third of the link time.
	@for p in windows/amd64 darwin/arm64 linux/arm64; do \
		echo "go build $$p"; GOOS=$${p%/*} GOARCH=$${p#*/} CGO_ENABLED=0 go build -ldflags="-s -w" -o /dev/null . || exit 1; \
	done
	GOOS=windows go vet ./internal/blobstore/...

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver and etcd from the Go module proxy into bin/k8s (idempotent).
	hack/envtest-assets.sh

.PHONY: test
test: manifests generate envtest-assets kustomize ## Unit tests (-race) and envtest suites against the real control plane.
	go test -race -count=1 ./internal/... ./api/... ./config/... ./hack/...
	go test -count=1 ./controllers/... .

.PHONY: test-e2e
test-e2e: envtest-assets build ## End-to-end tests: real registry, skopeo and umoci.
	hack/e2e-deps.sh
	go test -count=1 -timeout 30m -tags e2e ./test/e2e/... -v

.PHONY: bench
bench: build ## Benchmarks: kiln vs crane vs codec limits, results in bin/bench/.
	hack/bench.sh

##@ Build

.PHONY: build
build: ## Build bin/kiln.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/kiln .

.PHONY: run
run: manifests generate ## Run the manager against the cluster of the current kubeconfig.
	go run -ldflags "$(LDFLAGS)" . manager

.PHONY: demo
demo: envtest-assets registry ## The main job on an embedded control plane and registry (DEMO_ONCE=1 exits after printing).
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/kiln-demo ./test/demo
	$(LOCALBIN)/kiln-demo

.PHONY: registry
registry: ## Build the CNCF distribution registry into bin/registry (idempotent; used by demo and e2e).
	hack/registry.sh

.PHONY: cosign
cosign: ## Build the sigstore cosign CLI into bin/cosign (idempotent; e2e verifies kiln's signatures with it).
	hack/cosign.sh

.PHONY: image
image: build ## Build the manager image with kiln itself (no Docker engine): bin/kiln on scratch, pushed to IMG.
	go run ./hack/image -kiln $(LOCALBIN)/kiln -img '$(IMG)' -version '$(VERSION)' -ca '$(CA_BUNDLE)' -out '$(IMAGE_REF)'

.PHONY: docker-build
docker-build: ## Build the manager image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: build-installer
build-installer: manifests generate kustomize ## Write dist/install.yaml: CRD, RBAC and the manager Deployment (by digest after make image).
	mkdir -p dist
	@# The digest make image pushed, only when it pushed to this very IMG.
	@ref="$$(awk -v img='$(IMG)' '$$1 == img { print $$2 }' '$(IMAGE_REF)' 2>/dev/null || true)"; \
	if [[ -n "$$ref" ]]; then echo "build-installer: manager image $$ref (pushed for $(IMG) by make image)"; \
	else ref='$(IMG)'; echo "build-installer: manager image $(IMG) (no digest: make image has not pushed to it)"; fi; \
	cd config/manager && $(KUSTOMIZE) edit set image controller="$$ref"
	$(KUSTOMIZE) build config/default > dist/install.yaml

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRD into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRD from the cluster.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the manager to the cluster of the current kubeconfig.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the manager from the cluster.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
