//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/zstd"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/testkit"
	kube "github.com/kiln-build/kiln/internal/testkit/kube"
)

// badCase is one row of the bad-input corpus: a broken ImageBuild and what
// it must turn into. Spec and content problems stall with reason; external
// ones retry with the reason until the world changes; transient ones
// keep retrying: Reconciling=True carrying the error, never Stalled.
type badCase struct {
	name string
	// spec edits the ImageBuild (scratch base, target corpus/<name>).
	spec      func(t testing.TB, ib *kilnv1.ImageBuild)
	reason    string
	transient bool
	// external problems (a missing source, base or platform, a 401) heal
	// when the world changes: Ready=False with the reason and retried
	// (Reconciling=True, failures counted), never Stalled.
	external bool
	// msg are fragments the condition message must contain (it must name
	// the problem, and the layer where there is one).
	msg []string
}

// badServer answers layer requests the ways a broken server does.
type badServer struct {
	srv   *http.Server
	base  string
	hangs *hangListener
}

func startBadServer(t testing.TB) *badServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/500", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "injected: internal error, forever", http.StatusInternalServerError)
	})
	// A 9 GiB Content-Length: over the source size cap (8 GiB) before a byte.
	mux.HandleFunc("/huge.tar", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(int64(9)<<30))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush() // send the headers now; the body never comes
		<-r.Context().Done()
	})
	// One byte every 200ms: never silent long enough for the read timeout,
	// far below the minimum transfer rate.
	mux.HandleFunc("/trickle.tar", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10240")
		for i := 0; i < 10240; i++ {
			if _, err := w.Write([]byte{0}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	b := &badServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, base: "http://" + l.Addr().String()}
	go func() { _ = b.srv.Serve(l) }()
	if b.hangs, err = newHangListener(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.srv.Close(); b.hangs.close() })
	return b
}

// hangListener is a TCP port that never completes a handshake: a listen
// backlog of 0 filled by one connection of ours, so every further SYN is
// dropped and clients wait for their connect timeout. This is a host that
// never answers.
type hangListener struct {
	fd     int
	addr   string
	filler net.Conn
}

func newHangListener() (*hangListener, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	h := &hangListener{fd: fd}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		h.close()
		return nil, err
	}
	if err := syscall.Listen(fd, 0); err != nil {
		h.close()
		return nil, err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		h.close()
		return nil, err
	}
	h.addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	if h.filler, err = net.DialTimeout("tcp", h.addr, time.Second); err != nil {
		h.close()
		return nil, fmt.Errorf("filling the backlog: %w", err)
	}
	if c, err := net.DialTimeout("tcp", h.addr, 300*time.Millisecond); err == nil {
		c.Close()
		h.close()
		return nil, fmt.Errorf("the hanging port %s still accepts connections", h.addr)
	}
	return h, nil
}

func (h *hangListener) close() {
	if h.filler != nil {
		h.filler.Close()
	}
	syscall.Close(h.fd)
}

// corpus returns the rows. Layer bytes are generated here, deterministically.
func corpus(t testing.TB, ns string, bad *badServer, authProxy *faultProxy, windowsBase string) []badCase {
	// A tar big enough that truncation and corruption land inside the data.
	payload := testkit.Tar(t,
		testkit.Dir("data/"),
		testkit.File("data/blob", string(noise(7, 256<<10))),
		testkit.File("data/text", string(pseudoText(8, 256<<10))),
	)
	compressed := map[string][]byte{
		"gzip": testkit.Gzip(t, payload), "xz": testkit.Xz(t, payload), "zstd": testkit.Zstd(t, payload), "bzip2": testkit.Bzip2(t, payload),
	}
	serve := func(name string, b []byte) string { return s.serveFile(t, "corpus/"+name, b) }
	layerFrom := func(name string, b []byte) func(testing.TB, *kilnv1.ImageBuild) {
		url := serve(name, b)
		return func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("bad", url)}
		}
	}
	tarLayer := func(name string, es ...testkit.Entry) func(testing.TB, *kilnv1.ImageBuild) {
		return layerFrom(name+".tar.gz", testkit.Gzip(t, testkit.Tar(t, es...)))
	}
	okGz := testkit.Gzip(t, testkit.Tar(t, testkit.Dir("ok/"), testkit.File("ok/file", "fine\n")))
	okURL := serve("ok.tar.gz", okGz)

	var rows []badCase
	for _, alg := range []string{"gzip", "xz", "zstd", "bzip2"} {
		c := compressed[alg]
		rows = append(rows, badCase{
			name: "truncated-" + alg, spec: layerFrom("truncated."+alg, c[:len(c)/2]),
			reason: "InvalidLayer", msg: []string{`"bad"`},
		})
		flipped := bytes.Clone(c)
		flipped[len(c)/2] ^= 0x55
		rows = append(rows, badCase{
			name: "corrupt-" + alg, spec: layerFrom("corrupt."+alg, flipped),
			reason: "InvalidLayer", msg: []string{`"bad"`},
		})
	}
	rows = append(rows,
		badCase{name: "not-a-tar", spec: layerFrom("notatar.txt", bytes.Repeat([]byte("this is not a tar archive\n"), 100)),
			reason: "InvalidLayer", msg: []string{`"bad"`, "not a tar"}},
		badCase{name: "empty-file", spec: layerFrom("empty.bin", nil),
			reason: "InvalidLayer", msg: []string{`"bad"`}},
		badCase{name: "wrong-digest", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{URL: okURL}, Digest: testkit.Digest([]byte("something else"))}}
		}, reason: "DigestMismatch", msg: []string{`"bad"`, testkit.Digest([]byte("something else")), testkit.Digest(okGz)}},
		badCase{name: "wrong-diffid", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{URL: okURL}, DiffID: testkit.Digest([]byte("something else"))}}
		}, reason: "DiffIDMismatch", msg: []string{`"bad"`, testkit.Digest([]byte("something else"))}},
		badCase{name: "gzip-declared-on-xz", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{URL: serve("declared.xz", compressed["xz"])}, Compression: kilnv1.CompressionGzip}}
		}, reason: "InvalidLayer", msg: []string{`"bad"`, "gzip", "xz"}},
		badCase{name: "zstd-declared-on-gzip", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{URL: okURL}, Compression: kilnv1.CompressionZstd}}
		}, reason: "InvalidLayer", msg: []string{`"bad"`, "zstd", "gzip"}},
		badCase{name: "dotdot-traversal", spec: tarLayer("dotdot", testkit.Dir("a/"), testkit.File("a/../../escape", "x")),
			reason: "InvalidLayer", msg: []string{`"bad"`, "escape"}},
		badCase{name: "absolute-path", spec: tarLayer("absolute", testkit.File("/etc/passwd", "root::0:0::/:/bin/sh\n")),
			reason: "InvalidLayer", msg: []string{`"bad"`, "/etc/passwd", "absolute"}},
		badCase{name: "through-symlink", spec: tarLayer("through", testkit.Dir("a/"), testkit.Symlink("a/etc", "/etc"), testkit.File("a/etc/passwd", "x")),
			reason: "InvalidLayer", msg: []string{`"bad"`, "a/etc", "symlink"}},
		badCase{name: "hardlink-missing", spec: tarLayer("hl-missing", testkit.Dir("a/"), testkit.Hardlink("a/link", "a/nowhere")),
			reason: "InvalidLayer", msg: []string{`"bad"`, "a/nowhere"}},
		badCase{name: "hardlink-outside", spec: tarLayer("hl-outside", testkit.Dir("a/"), testkit.Hardlink("a/link", "../../etc/shadow")),
			reason: "InvalidLayer", msg: []string{`"bad"`, "a/link"}},
		badCase{name: "duplicate-file", spec: tarLayer("dup", testkit.Dir("a/"), testkit.File("a/x", "1"), testkit.File("./a/x", "2")),
			reason: "InvalidLayer", msg: []string{`"bad"`, "a/x", "duplicate"}},
		badCase{name: "malformed-whiteout", spec: tarLayer("wh", testkit.Dir("a/"), testkit.File("a/.wh..wh.bogus", "")),
			reason: "InvalidLayer", msg: []string{`"bad"`, ".wh..wh.bogus"}},
		badCase{name: "windows-hives-escape", spec: func(t testing.TB, ib *kilnv1.ImageBuild) {
			tarLayer("hives", testkit.Dir("app/"), testkit.File("../Hives/Software_Delta", "regf"))(t, ib)
			ib.Spec.Base = &kilnv1.Base{Image: windowsBase, Platform: "windows/amd64"}
		}, reason: "InvalidLayer", msg: []string{`"bad"`, "Hives"}},
		badCase{name: "over-size-limit", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("bad", bad.base+"/huge.tar")}
		}, reason: "LimitExceeded", msg: []string{`"bad"`, "limit"}},
		badCase{name: "ratio-bomb", spec: layerFrom("bomb.tar.zst", zstdBomb(t, 64<<20)),
			reason: "LimitExceeded", msg: []string{`"bad"`, "1000 times", "MaxRatio"}},
		badCase{name: "pax-header-bomb", spec: layerFrom("pax.tar.gz", testkit.Gzip(t, paxBomb(t, 2<<20))),
			reason: "LimitExceeded", msg: []string{`"bad"`, "header"}},
		badCase{name: "url-404", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("bad", s.files.URL("corpus/does-not-exist.tar.gz"))}
		}, reason: "SourceNotFound", external: true, msg: []string{`"bad"`, "404"}},
		badCase{name: "url-500-forever", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("bad", bad.base+"/500")}
		}, transient: true, msg: []string{"500"}},
		badCase{name: "url-never-answers", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("bad", "http://"+bad.hangs.addr+"/layer.tar.gz")}
		}, transient: true, msg: []string{bad.hangs.addr}},
		badCase{name: "missing-configmap", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "no-such-configmap", Key: "layer.tar"}}}}
		}, reason: "SourceNotFound", external: true, msg: []string{`"bad"`, "no-such-configmap"}},
		badCase{name: "missing-configmap-key", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{ConfigMap: &kilnv1.KeySelector{Name: "corpus-files", Key: "absent.tar"}}}}
		}, reason: "SourceNotFound", external: true, msg: []string{`"bad"`, "absent.tar"}},
		badCase{name: "missing-secret", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "no-such-secret", Key: "layer.tar"}}}}
		}, reason: "SourceNotFound", external: true, msg: []string{`"bad"`, "no-such-secret"}},
		badCase{name: "missing-secret-key", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{{Name: "bad", Source: &kilnv1.Source{Secret: &kilnv1.KeySelector{Name: "corpus-secret", Key: "absent.tar"}}}}
		}, reason: "SourceNotFound", external: true, msg: []string{`"bad"`, "absent.tar"}},
		badCase{name: "registry-401", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Target.Image = authProxy.addr + "/corpus/registry-401:e2e"
		}, reason: "Unauthorized", external: true, msg: []string{authProxy.addr}},
		badCase{name: "base-tag-not-found", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Base = &kilnv1.Base{Image: s.reg.Addr() + "/corpus/no-such-base:1.0"}
		}, reason: "BaseNotFound", external: true, msg: []string{"corpus/no-such-base:1.0"}},
		badCase{name: "platform-not-in-index", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Base = &kilnv1.Base{Image: windowsBase, Platform: "linux/arm64"}
		}, reason: "PlatformNotFound", external: true, msg: []string{"linux/arm64", "windows/amd64"}},
		badCase{name: "invalid-target", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Target.Image = s.reg.Addr() + "/corpus/Invalid Target!:e2e"
		}, reason: "InvalidSpec", msg: []string{"target"}},
	)
	rows = append(rows, securityRows(t, serve, tarLayer, okURL, bad, windowsBase)...)
	return rows
}

// securityRows are the rules of the security issue: tar tricks that
// archive/tar alone would not see, Windows names, forbidden hosts, slow
// sources, platform mismatches and base-archive bombs. Each must stall (or
// keep retrying) with a message naming the problem, and push nothing.
func securityRows(t testing.TB, serve func(string, []byte) string, tarLayer func(string, ...testkit.Entry) func(testing.TB, *kilnv1.ImageBuild),
	okURL string, bad *badServer, windowsBase string) []badCase {
	rawLayer := func(name string, b []byte) func(testing.TB, *kilnv1.ImageBuild) {
		url := serve(name, b)
		return func(_ testing.TB, ib *kilnv1.ImageBuild) { ib.Spec.Layers = []kilnv1.Layer{urlLayer("bad", url)} }
	}
	paxPath := func(p string) []byte {
		return testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", p)), testkit.Block{Type: '0', Name: "x", Link: "", Size: 0, Magic: "", Patch: nil}.Bytes())
	}
	onWindows := func(mk func(testing.TB, *kilnv1.ImageBuild)) func(testing.TB, *kilnv1.ImageBuild) {
		return func(t testing.TB, ib *kilnv1.ImageBuild) {
			mk(t, ib)
			ib.Spec.Base = &kilnv1.Base{Image: windowsBase, Platform: "windows/amd64"}
		}
	}
	single := s.reg.Addr() + "/corpus/windows-single:ltsc2022"
	pushSingleWindowsImage(t, single)
	invalid := func(name string, spec func(testing.TB, *kilnv1.ImageBuild), msg ...string) badCase {
		return badCase{name: name, spec: spec, reason: "InvalidLayer", msg: append([]string{`"bad"`}, msg...)}
	}
	return []badCase{
		// What archive/tar reads is not the only reading: GNU tar and
		// Python take the long name, Go the PAX path.
		invalid("pax-vs-gnu-longname", rawLayer("pax-gnu.tar", testkit.RawTar(testkit.Meta('x', testkit.PAXRecord("path", "benign")),
			testkit.Meta('L', "../../x\x00"), testkit.Block{Type: '0', Name: "benign", Link: "", Size: 0, Magic: "", Patch: nil}.Bytes())), "PAX path", "GNU long name", "disagree"),
		// Python reads a GNU header's atime/ctime as a ustar prefix.
		invalid("gnu-times-as-prefix", rawLayer("gnu-times.tar", testkit.RawTar(testkit.Block{Type: '0', Name: "d/f", Link: "", Size: 0, Magic: "ustar  \x00", Patch: map[int]string{345: "15303732233"}}.Bytes())),
			"prefix field", "15303732233"),
		invalid("whiteout-dotdot", tarLayer("wh-dotdot", testkit.Dir("a/"), testkit.File("a/.wh...", "")), `whiteout target ".."`),
		invalid("whiteout-dot", tarLayer("wh-dot", testkit.Dir("a/"), testkit.File("a/.wh..", "")), `whiteout target "."`),
		invalid("unknown-typeflag", tarLayer("typeflag", testkit.Entry{Name: "z", Type: 'Z'}), "unsupported entry type 'Z'"),
		invalid("implicit-dir-replaced", tarLayer("implicit", testkit.File("a/b", "x"), testkit.File("a", "y")),
			`"a" is a directory`, "cannot be replaced"),
		invalid("path-too-long", rawLayer("long-path.tar", paxPath(strings.Repeat(strings.Repeat("x", 200)+"/", 20)+strings.Repeat("y", 100))),
			"longer than 4096 (PATH_MAX)"),
		invalid("component-too-long", rawLayer("long-component.tar", paxPath(strings.Repeat("c", 256))), "longer than 255 (NAME_MAX)"),
		// A 512 KiB path once cost seconds of CPU in path bookkeeping.
		invalid("deep-path", rawLayer("deep.tar", paxPath(strings.Repeat("a/", 262144))), "longer than 4096 (PATH_MAX)"),
		invalid("windows-drive-letter", onWindows(tarLayer("drive", testkit.File(`C:\Windows\System32\evil.dll`, "MZ"))), `drive letter "C:"`),
		invalid("windows-alternate-stream", onWindows(tarLayer("ads", testkit.File("readme.txt:evil.exe", "MZ"))), "character ':'", "readme.txt:evil.exe"),
		invalid("windows-reserved-name", onWindows(tarLayer("reserved", testkit.Dir("app/"), testkit.File("app/CON.txt", "x"))), "CON.txt", "reserved Windows device name"),
		invalid("windows-trailing-dot", onWindows(tarLayer("trailing", testkit.File("app.exe.", "MZ"))), "app.exe.", "Windows strips"),
		{name: "base-on-metadata-address", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Base = &kilnv1.Base{Image: "169.254.169.254/team/base:1.0"}
		}, reason: "SourceForbidden", msg: []string{"169.254.169.254", "link-local"}},
		{name: "target-on-metadata-name", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Target.Image = "metadata.google.internal/team/app:1.0"
		}, reason: "SourceForbidden", msg: []string{"metadata.google.internal", "metadata"}},
		{name: "url-trickle", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("bad", bad.base+"/trickle.tar")}
		}, transient: true, msg: []string{`"bad"`, "transfer slower than"}},
		{name: "platform-of-single-image-base", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Base = &kilnv1.Base{Image: single, Platform: "linux/amd64"}
		}, reason: "PlatformNotFound", external: true, msg: []string{"linux/amd64", "windows/amd64"}},
		{name: "base-archive-bomb", spec: func(_ testing.TB, ib *kilnv1.ImageBuild) {
			ib.Spec.Layers = []kilnv1.Layer{urlLayer("ok", okURL)}
			ib.Spec.Base = &kilnv1.Base{Archive: &kilnv1.Archive{Source: kilnv1.Source{URL: serve("archive-bomb.tar.zst", zstdBomb(t, 64<<20))}}}
		}, reason: "LimitExceeded", msg: []string{"base.archive", "MaxRatio"}},
	}
}

// pushSingleWindowsImage pushes the Windows base's only child as a plain
// image, not an index: a single-manifest base with a platform of its own.
func pushSingleWindowsImage(t testing.TB, ref string) {
	t.Helper()
	idx, err := sandbox.WindowsBase()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) == 0 {
		t.Fatalf("windows base index: %v (%d children)", err, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(context.Background())); err != nil {
		t.Fatalf("pushing the single windows image: %v", err)
	}
}

// paxBomb is a tar whose first entry carries a PAX extended header of size
// bytes (archive/tar refuses to write one over 1 MiB, so it is made by hand).
func paxBomb(t testing.TB, size int) []byte {
	t.Helper()
	rec := testkit.PAXRecord("SCHILY.xattr.user.bomb", strings.Repeat("x", size))
	var buf bytes.Buffer
	buf.Write(testkit.Block{Type: tar.TypeXHeader, Name: "PaxHeaders/a", Size: len(rec)}.Bytes())
	buf.WriteString(rec)
	buf.Write(make([]byte, testkit.Padding(len(rec))))
	buf.Write(testkit.Tar(t, testkit.File("a", "after the bomb\n")))
	// Sanity: the standard reader must see the record, or the row tests nothing.
	if _, err := tar.NewReader(bytes.NewReader(buf.Bytes())).Next(); !errors.Is(err, tar.ErrFieldTooLong) {
		t.Fatalf("pax bomb fixture: archive/tar reads it with error %v, want %v", err, tar.ErrFieldTooLong)
	}
	return buf.Bytes()
}

// zstdBomb is a tar holding one file of size zero bytes, zstd-compressed:
// a few KiB that expand a thousandfold and more.
func zstdBomb(t testing.TB, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: size, ModTime: testkit.Time}); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(zeros)) {
		if _, err := tw.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The bad-input corpus: every row created at once, next to a healthy build
// that must still become Ready.
func TestBadInputCorpus(t *testing.T) {
	ns := kube.Namespace(t, s.k8s)
	bad := startBadServer(t)
	authProxy, err := startProxy(s.reg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	authProxy.setRejectAll(true)
	defer authProxy.close()
	windowsBase := s.reg.Addr() + "/corpus/windows-base:ltsc2022"
	pushWindowsBase(t, windowsBase)
	kube.Create(t, s.k8s,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "corpus-files"}, BinaryData: map[string][]byte{"present.tar": testkit.Tar(t)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "corpus-secret"}, Data: map[string][]byte{"present.tar": testkit.Tar(t)}})

	rows := corpus(t, ns, bad, authProxy, windowsBase)
	if len(rows) < 30 {
		t.Fatalf("corpus has %d rows, want at least 30", len(rows))
	}
	done := step(t, fmt.Sprintf("create %d bad ImageBuilds + 1 healthy", len(rows)))
	for _, row := range rows {
		ib := imageBuild(ns, row.name, "corpus/"+row.name)
		row.spec(t, ib)
		kube.Create(t, s.k8s, ib)
	}
	healthy, healthyWant := healthyBuild(t, ns)
	kube.Create(t, s.k8s, healthy)
	done()
	t.Cleanup(func() {
		// Transient and external rows retry forever; stop them so later scenarios get the
		// manager's workers.
		for _, row := range rows {
			if row.transient || row.external {
				_ = s.k8s.Delete(context.Background(), &kilnv1.ImageBuild{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: row.name}})
			}
		}
	})

	done = step(t, "healthy build Ready next to the corpus")
	ib := waitReady(t, ns, healthy.Name, 4*time.Minute)
	checkImage(t, digestRef(t, ib), healthyWant)
	done()

	// Each row settles on its own clock (the never-answering URL takes
	// several connect timeouts); wait for all of them in parallel.
	done = step(t, "every bad row settled")
	settled := make([]*kilnv1.ImageBuild, len(rows))
	took := make([]time.Duration, len(rows))
	var wg sync.WaitGroup
	for i, row := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			settled[i] = waitSettled(ns, row, 6*time.Minute)
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	done()
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t.Logf("settled after %s", took[i].Round(100*time.Millisecond))
			checkBadRow(t, row, settled[i])
		})
	}
}

// waitSettled polls until the row shows its outcome: Stalled=True for a
// permanent problem, or a failed attempt recorded in Reconciling for a
// transient one. It returns the last object seen either way.
func waitSettled(ns string, row badCase, timeout time.Duration) *kilnv1.ImageBuild {
	deadline := time.Now().Add(timeout)
	var last *kilnv1.ImageBuild
	for time.Now().Before(deadline) {
		ib := &kilnv1.ImageBuild{}
		if err := s.k8s.Get(context.Background(), keyOf(ns, row.name), ib); err == nil {
			last = ib
			if c := kube.Condition(ib, kilnv1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
				return ib
			}
			if c := kube.Condition(ib, kilnv1.ReadyCondition); c != nil && c.Status == metav1.ConditionTrue {
				return ib
			}
			if (row.transient || row.external) && ib.Status.Failures > 0 {
				return ib
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return last
}

func checkBadRow(t *testing.T, row badCase, ib *kilnv1.ImageBuild) {
	if ib == nil {
		t.Fatalf("never read back")
	}
	ready := kube.Condition(ib, kilnv1.ReadyCondition)
	stalled := kube.Condition(ib, kilnv1.StalledCondition)
	reconciling := kube.Condition(ib, kilnv1.ReconcilingCondition)
	if ready == nil || ready.Status == metav1.ConditionTrue {
		t.Fatalf("Ready should be False; conditions: %s", kube.Describe(ib))
	}
	var msg string
	if row.transient {
		if stalled != nil && stalled.Status == metav1.ConditionTrue {
			t.Fatalf("a transient problem must keep retrying, not stall; conditions: %s", kube.Describe(ib))
		}
		if reconciling == nil || reconciling.Status != metav1.ConditionTrue || ib.Status.Failures == 0 {
			t.Fatalf("want Reconciling=True with a failed attempt recorded (failures=%d); conditions: %s", ib.Status.Failures, kube.Describe(ib))
		}
		msg = ready.Message // Reconciling says it retries; Ready carries the error
		if reconciling.Reason != "TransientError" || ready.Reason != "TransientError" {
			t.Errorf("Reconciling reason %q, want TransientError", reconciling.Reason)
		}
	} else if row.external {
		if stalled != nil && stalled.Status == metav1.ConditionTrue {
			t.Fatalf("an external problem must heal by itself, not stall; conditions: %s", kube.Describe(ib))
		}
		if reconciling == nil || reconciling.Status != metav1.ConditionTrue || ib.Status.Failures == 0 {
			t.Fatalf("want Reconciling=True with a failed attempt recorded (failures=%d); conditions: %s", ib.Status.Failures, kube.Describe(ib))
		}
		msg = ready.Message
		if ready.Reason != row.reason {
			t.Errorf("Ready reason %q, want %q (message: %s)", ready.Reason, row.reason, msg)
		}
	} else {
		if stalled == nil || stalled.Status != metav1.ConditionTrue {
			t.Fatalf("want Stalled=True reason %s; conditions: %s", row.reason, kube.Describe(ib))
		}
		msg = stalled.Message
		if stalled.Reason != row.reason || ready.Reason != row.reason {
			t.Errorf("reason: Stalled %q, Ready %q; want %q (message: %s)", stalled.Reason, ready.Reason, row.reason, msg)
		}
	}
	for _, frag := range row.msg {
		if !strings.Contains(msg, frag) {
			t.Errorf("message does not name %q: %s", frag, msg)
		}
	}
	noPushes(t, "corpus/"+row.name)
	t.Logf("%s: %s", ready.Reason, msg)
}

// healthyBuild is a normal build created together with the corpus.
func healthyBuild(t testing.TB, ns string) (*kilnv1.ImageBuild, wantImage) {
	rootfs, err := sandbox.RootfsTar()
	if err != nil {
		t.Fatal(err)
	}
	app := appLayer(t)
	ib := imageBuild(ns, "healthy", "corpus/healthy",
		urlLayer("rootfs", s.serveFile(t, "corpus/healthy/rootfs.tar.xz", testkit.Xz(t, rootfs))),
		urlLayer("app", s.serveFile(t, "corpus/healthy/app.tar.gz", testkit.Gzip(t, app))))
	ib.Spec.Config = &kilnv1.ImageConfig{Env: []kilnv1.EnvVar{{Name: "HEALTHY", Value: "yes"}}}
	return ib, wantImage{
		tree: expectedTree(t, rootfs, app), env: []string{"HEALTHY=yes"}, os: "linux", arch: "amd64",
		diffIDs: []string{testkit.Digest(rootfs), testkit.Digest(app)},
	}
}
