package main

import (
	"archive/tar"
	"crypto/sha256"
	"crypto/x509"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kiln-build/kiln/internal/iox"
)

// linuxArch maps an ELF machine to the OCI architecture of a Go binary.
var linuxArch = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_AARCH64: "arm64",
	elf.EM_PPC64:   "ppc64le",
	elf.EM_S390:    "s390x",
	elf.EM_RISCV:   "riscv64",
}

// platformOf reads the OCI platform of the binary at path from its ELF
// header, and refuses what cannot run on scratch: a binary for another OS
// (a `make build` on a Mac) or one linked dynamically (CGO_ENABLED=1 needs a
// libc the image does not have).
func platformOf(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return "", fmt.Errorf("%s is not a Linux ELF executable (build it with GOOS=linux): %w", path, err)
		}
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return "", fmt.Errorf("%s is an ELF executable for %s, not Linux (build it with GOOS=linux)", path, f.OSABI)
	}
	arch, ok := linuxArch[f.Machine]
	if !ok || (f.Machine == elf.EM_PPC64 && f.Data != elf.ELFDATA2LSB) {
		return "", fmt.Errorf("%s is for machine %s, which this image build does not know", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is linked dynamically and cannot run on scratch (build it with CGO_ENABLED=0, as `make build` does)", path)
		}
	}
	return "linux/" + arch, nil
}

// file is one entry of a layer tarball; src is the file whose bytes it
// holds, "" for a directory.
type file struct {
	name string
	mode int64
	src  string
}

// packed is a layer tarball written to disk.
type packed struct {
	path   string
	digest string // sha256:<hex> of the tarball's bytes
	size   int64
}

// pack writes files, in the order given, as a tarball at path: owned by
// 0:0 without owner names, every mtime set to mtime, USTAR headers. The
// same files give the same bytes on any machine.
func pack(path string, files []file, mtime time.Time) (packed, error) {
	out, err := os.Create(path)
	if err != nil {
		return packed{}, fmt.Errorf("creating %s: %w", path, err)
	}
	h := sha256.New()
	cw := iox.NewWriter(io.MultiWriter(out, h))
	tw := tar.NewWriter(cw)
	for _, f := range files {
		if err := addFile(tw, f, mtime); err != nil {
			_ = out.Close()
			return packed{}, fmt.Errorf("packing %s into %s: %w", f.name, path, err)
		}
	}
	if err := errors.Join(tw.Close(), out.Close()); err != nil {
		return packed{}, fmt.Errorf("writing %s: %w", path, err)
	}
	return packed{path: path, digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: cw.Count()}, nil
}

func addFile(tw *tar.Writer, f file, mtime time.Time) error {
	hdr := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mtime.UTC().Truncate(time.Second), Format: tar.FormatUSTAR}
	if f.src == "" {
		hdr.Typeflag = tar.TypeDir
		return tw.WriteHeader(hdr)
	}
	src, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", f.src)
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// A file that changes size while it is copied fails here (archive/tar
	// counts), instead of giving a tarball that disagrees with its header.
	_, err = io.Copy(tw, src)
	return err
}

// caBundles are where Linux distributions keep the system's PEM bundle, in
// the order Go's crypto/x509 looks for them (root_linux.go), and macOS's.
var caBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Arch, Gentoo
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine, macOS
}

// caBundle returns the CA bundle to put into the image: path when set,
// else the first of caBundles that exists. It must hold at least one PEM
// certificate: an image without one cannot verify any registry.
func caBundle(path string) (string, error) {
	candidates := caBundles
	if path != "" {
		candidates = []string{path}
	}
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) && path == "" {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading the CA bundle: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return "", fmt.Errorf("the CA bundle %s holds no PEM certificate", p)
		}
		return p, nil
	}
	return "", fmt.Errorf("no CA bundle found at %v: pass CA_BUNDLE=<PEM file> (make image) or -ca", caBundles)
}

// systemFiles are the image's files besides kiln: the CA bundle where Go
// reads it first on Linux, and a /tmp that `kiln build` run from the image
// (as any user) can keep its cache in, as distroless has.
func systemFiles(ca string) []file {
	return []file{
		{name: "etc/", mode: 0o755},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, src: ca},
		{name: "tmp/", mode: 0o1777},
	}
}

// kilnFiles is the binary as /kiln, the image's entrypoint.
func kilnFiles(bin string) []file {
	return []file{{name: "kiln", mode: 0o755, src: bin}}
}
