package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeELF writes a minimal ELF64 header with one program header per type
// in progs: enough for debug/elf, which is all platformOf reads.
func writeELF(t *testing.T, osabi elf.OSABI, data elf.Data, machine elf.Machine, progs ...elf.ProgType) string {
	t.Helper()
	var order binary.ByteOrder = binary.LittleEndian
	if data == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: uint32(elf.EV_CURRENT),
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: uint16(len(progs)), Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA] = byte(elf.ELFCLASS64), byte(data)
	h.Ident[elf.EI_VERSION], h.Ident[elf.EI_OSABI] = byte(elf.EV_CURRENT), byte(osabi)
	var b bytes.Buffer
	if err := binary.Write(&b, order, h); err != nil {
		t.Fatal(err)
	}
	for _, p := range progs {
		if err := binary.Write(&b, order, elf.Prog64{Type: uint32(p)}); err != nil {
			t.Fatal(err)
		}
	}
	return writeFile(t, "elf", b.Bytes(), 0o755)
}

func writeFile(t *testing.T, name string, b []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlatformOf(t *testing.T) {
	const (
		lsb  = elf.ELFDATA2LSB
		none = elf.ELFOSABI_NONE
	)
	rows := []struct {
		name string
		path func(t *testing.T) string
		want string // platform, or a part of the error
	}{
		{"static amd64", func(t *testing.T) string { return writeELF(t, none, lsb, elf.EM_X86_64, elf.PT_LOAD) }, "linux/amd64"},
		{"static arm64", func(t *testing.T) string { return writeELF(t, none, lsb, elf.EM_AARCH64, elf.PT_LOAD) }, "linux/arm64"},
		{"linux osabi", func(t *testing.T) string { return writeELF(t, elf.ELFOSABI_LINUX, lsb, elf.EM_X86_64) }, "linux/amd64"},
		{"dynamic", func(t *testing.T) string {
			return writeELF(t, none, lsb, elf.EM_X86_64, elf.PT_PHDR, elf.PT_INTERP, elf.PT_LOAD)
		}, "linked dynamically"},
		{"freebsd", func(t *testing.T) string { return writeELF(t, elf.ELFOSABI_FREEBSD, lsb, elf.EM_X86_64) }, "not Linux"},
		{"unknown machine", func(t *testing.T) string { return writeELF(t, none, lsb, elf.EM_386) }, "machine EM_386"},
		{"big-endian ppc64", func(t *testing.T) string { return writeELF(t, none, elf.ELFDATA2MSB, elf.EM_PPC64) }, "machine EM_PPC64"},
		{"mach-o", func(t *testing.T) string {
			return writeFile(t, "kiln", append([]byte{0xcf, 0xfa, 0xed, 0xfe}, make([]byte, 60)...), 0o755)
		}, "not a Linux ELF executable"},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "kiln") }, "reading "},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			got, err := platformOf(r.path(t))
			if strings.HasPrefix(r.want, "linux/") {
				if err != nil || got != r.want {
					t.Fatalf("platformOf = %q, %v; want %s", got, err, r.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("platformOf = %q, %v; want an error containing %q", got, err, r.want)
			}
		})
	}
}

// TestPackIsReproducible packs the same bytes from files with different
// modes, owners and mtimes: the tarballs must be identical, with the
// canonical headers.
func TestPackIsReproducible(t *testing.T) {
	created := time.Date(2025, 12, 2, 6, 25, 0, 0, time.UTC)
	body := []byte("\x7fELF not really")
	var digests []string
	for i, mode := range []os.FileMode{0o700, 0o644} {
		src := writeFile(t, "kiln", body, mode)
		if err := os.Chtimes(src, time.Now(), time.Now().Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
		ca := writeFile(t, "ca.pem", []byte("pem"), mode)
		files := append(systemFiles(ca), kilnFiles(src)...)
		p, err := pack(filepath.Join(t.TempDir(), "layer.tar"), files, created.Add(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, p.digest)
		b, err := os.ReadFile(p.path)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != p.size {
			t.Errorf("size %d, file has %d bytes", p.size, len(b))
		}
		checkTar(t, b, created, body)
	}
	if digests[0] != digests[1] {
		t.Errorf("the same files packed to %s and %s", digests[0], digests[1])
	}
}

func checkTar(t *testing.T, b []byte, created time.Time, body []byte) {
	t.Helper()
	want := []struct {
		name string
		mode int64
	}{
		{"etc/", 0o755}, {"etc/ssl/", 0o755}, {"etc/ssl/certs/", 0o755},
		{"etc/ssl/certs/ca-certificates.crt", 0o644}, {"tmp/", 0o1777}, {"kiln", 0o755},
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for i := 0; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Errorf("%d entries, want %d", i, len(want))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) || h.Name != want[i].name || h.Mode != want[i].mode {
			t.Fatalf("entry %d: %s mode %o, want %+v", i, h.Name, h.Mode, want)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(created) || h.Format != tar.FormatUSTAR {
			t.Errorf("%s: owner %d:%d %q:%q mtime %s format %s, want 0:0 without names, %s, USTAR",
				h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime, h.Format, created)
		}
		if h.Name == "kiln" {
			if got, _ := io.ReadAll(tr); !bytes.Equal(got, body) {
				t.Errorf("kiln holds %q, want %q", got, body)
			}
		}
	}
}

func TestPackRefusesWhatIsNotAFile(t *testing.T) {
	_, err := pack(filepath.Join(t.TempDir(), "l.tar"), kilnFiles(t.TempDir()), time.Unix(0, 0))
	if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
		t.Fatalf("pack of a directory as kiln: %v", err)
	}
}

func TestCABundle(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	rows := []struct {
		name string
		path func(t *testing.T) string
		want string // "" for the path itself
	}{
		{"pem", func(t *testing.T) string { return writeFile(t, "ca.pem", cert, 0o644) }, ""},
		{"not pem", func(t *testing.T) string { return writeFile(t, "ca.pem", []byte("hello"), 0o644) }, "holds no PEM certificate"},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "ca.pem") }, "reading the CA bundle"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			p := r.path(t)
			got, err := caBundle(p)
			if r.want == "" {
				if err != nil || got != p {
					t.Fatalf("caBundle = %q, %v; want %s", got, err, p)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("caBundle = %q, %v; want an error containing %q", got, err, r.want)
			}
		})
	}
}

func TestServeServesOnlyTheLayers(t *testing.T) {
	body := bytes.Repeat([]byte("kiln"), 1000)
	srv, err := serve(map[string]string{"kiln.tar": writeFile(t, "kiln.tar", body, 0o644)}, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	rows := []struct {
		name, method, path, rng string
		status                  int
		body                    []byte
	}{
		{"whole", http.MethodGet, "/kiln.tar", "", http.StatusOK, body},
		{"range (a resumed fetch)", http.MethodGet, "/kiln.tar", "bytes=4-7", http.StatusPartialContent, body[4:8]},
		{"other path", http.MethodGet, "/etc/passwd", "", http.StatusNotFound, nil},
		{"not a read", http.MethodPut, "/kiln.tar", "", http.StatusMethodNotAllowed, nil},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			req, _ := http.NewRequest(r.method, "http://"+srv.addr+r.path, nil)
			if r.rng != "" {
				req.Header.Set("Range", r.rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != r.status || (r.body != nil && !bytes.Equal(got, r.body)) {
				t.Fatalf("%s %s: %d, %d bytes; want %d, %d bytes", r.method, r.path, resp.StatusCode, len(got), r.status, len(r.body))
			}
		})
	}
	if !strings.HasPrefix(srv.url("kiln.tar"), "http://127.0.0.1:") {
		t.Errorf("url %s is not on loopback", srv.url("kiln.tar"))
	}
	if err := srv.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(srv.url("kiln.tar")); err == nil {
		t.Error("the server still answers after close")
	}
}

// TestKilnBuildReadsTheResult runs a stand-in for `kiln build -o json`.
func TestKilnBuildReadsTheResult(t *testing.T) {
	const ready = `{"apiVersion":"kiln.dev/v1alpha1","kind":"ImageBuild","metadata":{"name":"kiln"},
"status":{"image":"r/kiln@sha256:ab","conditions":[{"type":"Ready","status":"True","reason":"Pushed","message":"","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}`
	const failed = `{"apiVersion":"kiln.dev/v1alpha1","kind":"ImageBuild","metadata":{"name":"kiln"},
"status":{"conditions":[{"type":"Ready","status":"False","reason":"PushFailed","message":"registry said no","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}`
	rows := []struct {
		name, stdout string
		exit         int
		want         string // "" for success
	}{
		{"ready", ready, 0, ""},
		{"failed build", failed, 1, "PushFailed: registry said no"},
		{"ready but a non-zero exit", ready, 1, "exit status 1"},
		{"invalid spec, nothing printed", "", 2, "printed no ImageBuild"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			out := writeFile(t, "out.json", []byte(r.stdout), 0o644)
			kiln := writeFile(t, "kiln", []byte("#!/bin/sh\ncat '"+out+"'\nexit "+string(rune('0'+r.exit))+"\n"), 0o755)
			ib, err := kilnBuild(context.Background(), kiln, "spec.yaml", nil)
			if r.want == "" {
				if err != nil || ib.Status.Image != "r/kiln@sha256:ab" {
					t.Fatalf("kilnBuild = %+v, %v", ib, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("kilnBuild: %v, want an error containing %q", err, r.want)
			}
		})
	}
}

func TestParseFlagsRequiresImageAndVersion(t *testing.T) {
	if _, err := parseFlags([]string{"-version", "v1"}, io.Discard); err == nil {
		t.Error("no -img: no error")
	}
	o, err := parseFlags([]string{"-img", "r/kiln:dev", "-version", "v1", "--", "--cache-dir", "/c"}, io.Discard)
	if err != nil || strings.Join(o.buildArgs, " ") != "--cache-dir /c" || o.out != "bin/image.ref" {
		t.Errorf("parseFlags = %+v, %v", o, err)
	}
}
