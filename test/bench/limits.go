package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"

	kgzip "github.com/klauspost/compress/gzip"

	"github.com/kiln-build/kiln/internal/compression"
)

// The limits run in a child process (the driver re-executes itself with
// `limit NAME FILE...`) so their CPU time and peak RSS are measured exactly
// like kiln's and crane's.

const ioBuf = 1 << 20

type limitFunc func(files []string) error

var limits = map[string]limitFunc{
	// kiln's own gzip encoder (parallel, deterministic) over the tar bytes.
	"gzip-encoder": encodeWith(func(w io.Writer) (io.WriteCloser, error) {
		return compression.NewWriter(w, compression.Gzip)
	}),
	// single-threaded klauspost gzip level 1, the usual reference.
	"klauspost-gzip1": encodeWith(func(w io.Writer) (io.WriteCloser, error) {
		return kgzip.NewWriterLevel(w, kgzip.BestSpeed)
	}),
	"sha256": func(files []string) error {
		return eachFile(files, func(r io.Reader) error { return hashAll(sha256.New(), r) })
	},
	// the fast path's work in Go: gunzip (our reader) and hash the tar.
	"go-gunzip-sha256": decodeHash(compression.Gzip),
	// our xz decoder alone.
	"kiln-xz-decoder":   decodeHash(compression.Xz),
	"kiln-zstd-decoder": decodeHash(compression.Zstd),
}

func runLimit(name string, files []string) error {
	f, ok := limits[name]
	if !ok {
		return fmt.Errorf("unknown limit %q", name)
	}
	return f(files)
}

func eachFile(files []string, fn func(io.Reader) error) error {
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = fn(bufio.NewReaderSize(f, ioBuf))
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func hashAll(h hash.Hash, r io.Reader) error {
	_, err := io.CopyBuffer(h, r, make([]byte, ioBuf))
	return err
}

func encodeWith(newEnc func(io.Writer) (io.WriteCloser, error)) limitFunc {
	return func(files []string) error {
		return eachFile(files, func(r io.Reader) error {
			enc, err := newEnc(io.Discard)
			if err != nil {
				return err
			}
			if _, err := io.CopyBuffer(enc, r, make([]byte, ioBuf)); err != nil {
				enc.Close()
				return fmt.Errorf("encoding: %w", err)
			}
			return enc.Close()
		})
	}
}

func decodeHash(alg compression.Algorithm) limitFunc {
	return func(files []string) error {
		return eachFile(files, func(r io.Reader) error {
			dec, err := compression.NewReader(r, alg, compression.ReaderOptions{})
			if err != nil {
				return err
			}
			defer dec.Close()
			if err := hashAll(sha256.New(), dec); err != nil {
				return fmt.Errorf("decoding %s: %w", alg, err)
			}
			return nil
		})
	}
}
