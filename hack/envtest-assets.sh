#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver + etcd) from the Go module
# proxy into bin/k8s. setup-envtest downloads do not work without internet, so
# each binary comes from a pinned wrapper module under hack/ (see its go.mod).
# Idempotent: a binary that exists and reports the pinned version is kept.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ROOT}/bin/k8s"
K8S_VERSION="v1.37.2"
mkdir -p "${OUT}"

build_apiserver() {
  if [[ -x "${OUT}/kube-apiserver" ]] && "${OUT}/kube-apiserver" --version 2>/dev/null | grep -q "${K8S_VERSION}"; then
    echo "kube-apiserver ${K8S_VERSION} already in ${OUT}"
    return
  fi
  echo "building kube-apiserver ${K8S_VERSION} (first run: 5-10 minutes on 2 cores)"
  local pkg=k8s.io/component-base/version
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  (cd "${ROOT}/hack/kube-apiserver" && CGO_ENABLED=0 go build -mod=mod -trimpath \
    -ldflags "-s -w -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}" \
    -o "${OUT}/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "${OUT}/kube-apiserver.tmp" "${OUT}/kube-apiserver"
}

build_etcd() {
  if [[ -x "${OUT}/etcd" ]]; then
    echo "etcd already in ${OUT}"
    return
  fi
  echo "building etcd (about a minute)"
  (cd "${ROOT}/hack/etcd" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" \
    -o "${OUT}/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "${OUT}/etcd.tmp" "${OUT}/etcd"
}

build_etcd
build_apiserver
echo "KUBEBUILDER_ASSETS=${OUT}"
