#!/usr/bin/env bash
# `make bench`: kiln against crane and against the codecs' limits, side by
# side in one run (issue 7). Builds what is missing (crane from the pinned
# go-containerregistry, the CNCF registry), runs the driver in test/bench,
# then the Go benchmarks of the hot packages. Results: bin/bench/results.md
# and bin/bench/results.json.
#
#   BENCH_RUNS=5     runs per case (median and min/max are reported)
#   BENCH_SMALL=1    inputs 10x smaller, for a quick check
#   BENCH_CASES=...  comma-separated case names or prefixes (kiln-,crane-,limit-)
#   BENCH_GO=0       skip the `go test -bench` part
#   BENCH_PROFILE=0 skip the CPU profiles of the engine (tar, gz, xz inputs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
OUT="${ROOT}/bin/bench"
mkdir -p "${OUT}"

# crane at the go-containerregistry version go.mod pins, so we compare with
# the same library kiln uses.
GGCR_VERSION="$(go list -m -f '{{.Version}}' github.com/google/go-containerregistry)"
if [[ ! -x bin/crane ]] || ! bin/crane version 2>/dev/null | grep -qF "${GGCR_VERSION}"; then
  echo "building crane ${GGCR_VERSION} into bin/"
  TMP="$(mktemp -d "${ROOT}/bin/.crane-build.XXXXXX")"
  trap 'rm -rf "${TMP}"' EXIT
  GOBIN="${TMP}" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-X github.com/google/go-containerregistry/cmd/crane/cmd.Version=${GGCR_VERSION}" \
    "github.com/google/go-containerregistry/cmd/crane@${GGCR_VERSION}"
  mv "${TMP}/crane" bin/crane
fi

if [[ -x hack/registry.sh ]]; then
  hack/registry.sh
elif [[ ! -x bin/registry ]]; then
  echo "building registry v3.0.0 into bin/ (first run: about 2 minutes)"
  GOBIN="${ROOT}/bin" CGO_ENABLED=0 go install -trimpath \
    github.com/distribution/distribution/v3/cmd/registry@v3.0.0
fi

for tool in gzip xz; do
  command -v "${tool}" >/dev/null || { echo "bench needs ${tool} (apt-get install ${tool/xz/xz-utils})" >&2; exit 1; }
done

go build -o "${OUT}/driver" ./test/bench
"${OUT}/driver" -root "${ROOT}" -out "${OUT}"

if [[ "${BENCH_GO:-1}" != "0" ]]; then
  echo "running go test -bench (internal/compression, internal/layer)"
  {
    printf '\n## Go benchmarks\n\n```\n'
    go test -run '^$' -bench . -benchtime "${BENCH_GOTIME:-3x}" ./internal/compression ./internal/layer 2>&1 || true
    printf '```\n'
  } | tee -a "${OUT}/results.md"
fi
echo "results: ${OUT}/results.md ${OUT}/results.json"
