#!/usr/bin/env bash
# Builds the sigstore cosign CLI from the Go module proxy into bin/cosign. The
# e2e tests use it as the independent verifier of what kiln signs: `cosign
# verify`, `cosign verify-attestation` and `cosign tree` must accept kiln's
# signatures and attestations in both the bundle and the legacy format.
# Idempotent: a bin/cosign that reports the pinned version is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="v3.1.3"
BIN="${ROOT}/bin/cosign"

if [[ -x "${BIN}" ]] && "${BIN}" version 2>/dev/null | grep -qF "${VERSION#v}"; then
  echo "cosign ${VERSION} already in ${BIN}"
  exit 0
fi

echo "building cosign ${VERSION} into ${ROOT}/bin (first run: several minutes, it is a large module graph)"
mkdir -p "${ROOT}/bin"
# go install writes the binary in place; build into a scratch GOBIN and move it
# so an interrupted build never leaves a half-written bin/cosign behind.
TMP="$(mktemp -d "${ROOT}/bin/.cosign-build.XXXXXX")"
trap 'rm -rf "${TMP}"' EXIT
# The version is stamped the way cosign's own release build does it, so
# `cosign version` reports the pinned version and the check above can keep it.
GOBIN="${TMP}" CGO_ENABLED=0 go install -trimpath \
  -ldflags "-X sigs.k8s.io/release-utils/version.gitVersion=${VERSION}" \
  "github.com/sigstore/cosign/v3/cmd/cosign@${VERSION}"
mv "${TMP}/cosign" "${BIN}"
"${BIN}" version
