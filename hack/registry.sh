#!/usr/bin/env bash
# Builds the CNCF distribution registry (the reference OCI registry) from the Go
# module proxy into bin/registry. `make demo` and the e2e tests start it on
# 127.0.0.1 with filesystem storage (see internal/sandbox).
# Idempotent: a bin/registry that reports the pinned version is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="v3.0.0"
BIN="${ROOT}/bin/registry"

if [[ -x "${BIN}" ]] && "${BIN}" --version 2>/dev/null | grep -qF "${VERSION}"; then
  echo "registry ${VERSION} already in ${BIN}"
  exit 0
fi

echo "building registry ${VERSION} into ${ROOT}/bin (first run: about 2 minutes)"
mkdir -p "${ROOT}/bin"
# go install writes the binary in place; build into a scratch GOBIN and move it
# so an interrupted build never leaves a half-written bin/registry behind.
TMP="$(mktemp -d "${ROOT}/bin/.registry-build.XXXXXX")"
trap 'rm -rf "${TMP}"' EXIT
GOBIN="${TMP}" CGO_ENABLED=0 go install -trimpath \
  "github.com/distribution/distribution/v3/cmd/registry@${VERSION}"
mv "${TMP}/registry" "${BIN}"
"${BIN}" --version
