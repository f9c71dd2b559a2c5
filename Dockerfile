# syntax=docker/dockerfile:1
# The kiln manager image: a static binary on distroless, non-root.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t ghcr.io/kiln-build/kiln:dev .
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the builder runs natively and cross-compiles; no emulation needed).

FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev

WORKDIR /workspace
# Dependencies first: this layer is reused until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download

# Then the sources (.dockerignore keeps bin/, dist/ and .git out of the context).
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X github.com/kiln-build/kiln/internal/version.Version=${VERSION}" \
      -o /kiln .

# distroless/static: CA certificates and /etc/passwd, no shell, no package manager.
FROM gcr.io/distroless/static:nonroot
COPY --from=builder /kiln /kiln
USER 65532:65532
ENTRYPOINT ["/kiln"]
CMD ["manager"]
