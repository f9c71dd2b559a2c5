#!/usr/bin/env bash
# Installs what `make test-e2e` needs besides the control plane and bin/kiln:
#   - skopeo and umoci (Debian packages): the independent clients every e2e
#     scenario ends with (copy the pushed image out, unpack it, check DiffIDs);
#   - busybox-static (Debian package): the real busybox rootfs scenario;
#   - bzip2 (Debian package): the e2e fixtures include bzip2 layers, and the
#     standard library only decodes bzip2;
#   - bin/registry: the CNCF distribution registry, built from the Go module
#     proxy by hack/registry.sh;
#   - bin/cosign: the sigstore cosign CLI, built from the Go module proxy by
#     hack/cosign.sh: the independent verifier of kiln's signatures.
# Idempotent: present parts are kept, `apt-get update` runs only when a
# package is missing. It never skips a part silently: when something cannot
# be installed it names it and exits non-zero, and the e2e run stops there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY_VERSION="v3.0.0"

# command -> Debian package that provides it.
declare -A PACKAGE_OF=(
  [skopeo]=skopeo
  [umoci]=umoci
  [busybox]=busybox-static
  [bzip2]=bzip2
)

missing_packages() {
  local cmd
  for cmd in skopeo umoci bzip2; do
    command -v "${cmd}" >/dev/null 2>&1 || echo "${PACKAGE_OF[${cmd}]}"
  done
  # The e2e rootfs is built from the statically linked busybox of
  # busybox-static (at /bin/busybox); a dynamic busybox would not do.
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
    echo "${PACKAGE_OF[busybox]}"
}

install_packages() {
  local pkgs=("$@")
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "e2e-deps: apt-get is not available; install these packages with your system's package manager: ${pkgs[*]}" >&2
    return 1
  fi
  if [[ "$(id -u)" != 0 ]]; then
    echo "e2e-deps: not root; run as root, or install them first: sudo apt-get install -y ${pkgs[*]}" >&2
    return 1
  fi
  echo "e2e-deps: installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
}

ensure_registry() {
  if [[ -x "${ROOT}/hack/registry.sh" ]]; then
    "${ROOT}/hack/registry.sh"
    return
  fi
  if [[ -x "${ROOT}/bin/registry" ]]; then
    echo "e2e-deps: registry already in ${ROOT}/bin/registry"
    return
  fi
  echo "e2e-deps: building registry ${REGISTRY_VERSION} into ${ROOT}/bin"
  GOBIN="${ROOT}/bin" CGO_ENABLED=0 go install -trimpath \
    "github.com/distribution/distribution/v3/cmd/registry@${REGISTRY_VERSION}"
}

main() {
  mapfile -t pkgs < <(missing_packages)
  if ((${#pkgs[@]} > 0)); then
    install_packages "${pkgs[@]}"
    mapfile -t pkgs < <(missing_packages)
    if ((${#pkgs[@]} > 0)); then
      echo "e2e-deps: still missing after install: ${pkgs[*]}" >&2
      return 1
    fi
  fi
  ensure_registry
  [[ -x "${ROOT}/bin/registry" ]] || { echo "e2e-deps: ${ROOT}/bin/registry is missing after the build" >&2; return 1; }
  "${ROOT}/hack/cosign.sh"
  [[ -x "${ROOT}/bin/cosign" ]] || { echo "e2e-deps: ${ROOT}/bin/cosign is missing after the build" >&2; return 1; }
  echo "e2e-deps: ok: $(skopeo --version), $(umoci --version), busybox-static $(dpkg-query -W -f='${Version}' busybox-static), registry and cosign in bin/"
}

main "$@"
