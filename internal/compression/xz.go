package compression

// The xz container (https://tukaani.org/xz/xz-file-format.txt) is parsed here
// around ulikunitz/xz/lzma's LZMA2 decoder instead of using ulikunitz/xz's own
// Reader, because that Reader treats ReaderConfig.DictCap as a minimum and
// allocates whatever dictionary a block header declares (up to 4 GiB): a
// 100-byte file could exhaust the controller's memory. Parsing the container
// ourselves refuses such a block before anything is allocated, and exposes
// the block layout that NewParallelXzReader needs.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"slices"

	"github.com/ulikunitz/xz/lzma"

	"github.com/kiln-build/kiln/internal/failure"
	"github.com/kiln-build/kiln/internal/units"
)

var (
	xzHeaderMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	xzFooterMagic = []byte{'Y', 'Z'}
	crc64Table    = crc64.MakeTable(crc64.ECMA)
)

const (
	xzStreamHeaderSize = 12
	xzLZMA2FilterID    = 0x21
	xzMaxVarintBytes   = 9
)

// byteReader is what the container parser reads from: a *bufio.Reader in
// practice, so that lzma's byte-at-a-time reads stay cheap.
type byteReader interface {
	io.Reader
	io.ByteReader
	UnreadByte() error
}

func xzErrorf(format string, args ...any) error {
	return failure.Permanentf(failure.InvalidLayer, "xz: "+format, args...)
}

// xzCheckSize returns the size of the integrity check of type t, or false for
// check types kiln does not verify.
func xzCheckSize(t byte) (int, bool) {
	switch t {
	case 0x00:
		return 0, true
	case 0x01:
		return 4, true
	case 0x04:
		return 8, true
	case 0x0a:
		return 32, true
	}
	return 0, false
}

func xzNewHash(t byte) hash.Hash {
	switch t {
	case 0x01:
		return crc32.NewIEEE()
	case 0x04:
		return crc64.New(crc64Table)
	case 0x0a:
		return sha256.New()
	}
	return nil
}

// xzCheckSum returns the check as stored in the file: CRCs little endian,
// SHA-256 as is; nothing for check type none.
func xzCheckSum(h hash.Hash, t byte) []byte {
	if h == nil {
		return []byte{}
	}
	sum := h.Sum(nil)
	if t == 0x01 || t == 0x04 {
		slices.Reverse(sum)
	}
	return sum
}

// xzRecord is one index record: what a block occupied and produced.
type xzRecord struct {
	unpadded     int64 // header + compressed data + check, without padding
	uncompressed int64
}

// xzReader decodes a sequence of xz streams (with stream padding) from br.
type xzReader struct {
	br      byteReader
	limit   int64
	state   xzState
	check   byte       // check type of the current stream
	records []xzRecord // blocks of the current stream, for the index check
	block   *xzBlock
	nblocks int // blocks decoded in all streams, for messages
	err     error
}

type xzState int

const (
	xzStreamStart xzState = iota
	xzInStream
	xzStreamPadding
)

func newXzReader(br byteReader, dictLimit int64) *xzReader {
	return &xzReader{br: br, limit: dictLimit}
}

func (x *xzReader) Read(p []byte) (int, error) {
	for x.err == nil {
		if x.block == nil {
			x.err = x.advance()
			continue
		}
		n, err := x.block.Read(p)
		if err == io.EOF {
			err = x.endBlock()
		}
		x.err = err
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, x.err
}

// advance parses container structure until the next block starts or the
// input ends (io.EOF).
func (x *xzReader) advance() error {
	switch x.state {
	case xzStreamStart:
		check, err := readXzStreamHeader(x.br)
		if err != nil {
			return err
		}
		x.check, x.records, x.state = check, x.records[:0], xzInStream
		return nil
	case xzInStream:
		b, err := x.br.ReadByte()
		if err != nil {
			return unexpectedEOF(err)
		}
		if b == 0x00 { // index indicator: no more blocks in this stream
			if err := x.readIndexAndFooter(); err != nil {
				return err
			}
			x.state = xzStreamPadding
			return nil
		}
		x.block, err = openXzBlock(x.br, b, x.check, x.limit, x.nblocks, -1)
		return err
	default:
		more, err := skipXzStreamPadding(x.br)
		if err != nil || !more {
			return err
		}
		x.state = xzStreamStart
		return nil
	}
}

func (x *xzReader) endBlock() error {
	rec, err := x.block.finish()
	if err != nil {
		return err
	}
	x.records = append(x.records, rec)
	x.block = nil
	x.nblocks++
	return nil
}

func (x *xzReader) readIndexAndFooter() error {
	size, err := readXzIndex(x.br, x.records)
	if err != nil {
		return err
	}
	var footer [12]byte
	if err := readFull(x.br, footer[:]); err != nil {
		return err
	}
	return checkXzFooter(footer[:], x.check, size)
}

// readXzStreamHeader reads the 12-byte stream header and returns its check type.
func readXzStreamHeader(r io.Reader) (byte, error) {
	var h [xzStreamHeaderSize]byte
	if err := readFull(r, h[:]); err != nil {
		return 0, err
	}
	if !bytes.Equal(h[:6], xzHeaderMagic) {
		return 0, xzErrorf("bad stream header magic %x", h[:6])
	}
	if crc32.ChecksumIEEE(h[6:8]) != binary.LittleEndian.Uint32(h[8:]) {
		return 0, xzErrorf("stream header checksum mismatch")
	}
	return xzStreamFlags(h[6:8])
}

func xzStreamFlags(f []byte) (byte, error) {
	if f[0] != 0 || f[1]&0xf0 != 0 {
		return 0, xzErrorf("unsupported stream flags %x", f)
	}
	if _, ok := xzCheckSize(f[1]); !ok {
		return 0, xzErrorf("unsupported check type %#x (want none, CRC32, CRC64 or SHA-256)", f[1])
	}
	return f[1], nil
}

func checkXzFooter(f []byte, check byte, indexSize int64) error {
	if !bytes.Equal(f[10:], xzFooterMagic) {
		return xzErrorf("bad stream footer magic %x", f[10:])
	}
	if crc32.ChecksumIEEE(f[4:10]) != binary.LittleEndian.Uint32(f[:4]) {
		return xzErrorf("stream footer checksum mismatch")
	}
	if f[8] != 0 || f[9] != check {
		return xzErrorf("stream footer flags %x differ from the header's check type %#x", f[8:10], check)
	}
	if backward := (int64(binary.LittleEndian.Uint32(f[4:8])) + 1) * 4; backward != indexSize {
		return xzErrorf("stream footer says the index is %d bytes, it is %d", backward, indexSize)
	}
	return nil
}

// skipXzStreamPadding consumes zero bytes after a stream and reports whether
// another stream follows. Padding must be a multiple of four bytes.
func skipXzStreamPadding(br byteReader) (more bool, err error) {
	n := 0
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			if n%4 != 0 {
				return false, xzErrorf("stream padding of %d bytes is not a multiple of 4", n)
			}
			return false, io.EOF
		}
		if err != nil {
			return false, err
		}
		if b != 0 {
			if n%4 != 0 {
				return false, xzErrorf("stream padding of %d bytes is not a multiple of 4", n)
			}
			return true, br.UnreadByte()
		}
		n++
	}
}

// readXzIndex parses an index whose indicator byte was already read, checks
// it against the blocks that were decoded and returns its size in bytes.
func readXzIndex(br io.ByteReader, records []xzRecord) (int64, error) {
	cr := &crcByteReader{r: br, crc: crc32.Update(0, crc32.IEEETable, []byte{0}), n: 1}
	count, err := readXzVarint(cr)
	if err != nil {
		return 0, err
	}
	if count != uint64(len(records)) {
		return 0, xzErrorf("index lists %d blocks, the stream has %d", count, len(records))
	}
	for i, rec := range records {
		unpadded, err := readXzVarint(cr)
		if err != nil {
			return 0, err
		}
		uncompressed, err := readXzVarint(cr)
		if err != nil {
			return 0, err
		}
		if unpadded != uint64(rec.unpadded) || uncompressed != uint64(rec.uncompressed) {
			return 0, xzErrorf("index record %d (%d, %d bytes) does not match the block (%d, %d bytes)",
				i, unpadded, uncompressed, rec.unpadded, rec.uncompressed)
		}
	}
	for cr.n%4 != 0 {
		if b, err := cr.ReadByte(); err != nil {
			return 0, err
		} else if b != 0 {
			return 0, xzErrorf("non-zero index padding")
		}
	}
	want := cr.crc
	var sum [4]byte
	for i := range sum {
		b, err := br.ReadByte()
		if err != nil {
			return 0, unexpectedEOF(err)
		}
		sum[i] = b
	}
	if binary.LittleEndian.Uint32(sum[:]) != want {
		return 0, xzErrorf("index checksum mismatch")
	}
	return cr.n + 4, nil
}

// crcByteReader counts and checksums the bytes read through it.
type crcByteReader struct {
	r   io.ByteReader
	crc uint32
	n   int64
}

func (c *crcByteReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		return 0, unexpectedEOF(err)
	}
	c.crc = crc32.Update(c.crc, crc32.IEEETable, []byte{b})
	c.n++
	return b, nil
}

// readXzVarint reads a multibyte integer: 7 bits per byte, little endian,
// at most 9 bytes, no redundant trailing zero byte.
func readXzVarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := 0; i < xzMaxVarintBytes; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, unexpectedEOF(err)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if i > 0 && b == 0 {
				return 0, xzErrorf("non-minimal multibyte integer")
			}
			return v, nil
		}
	}
	return 0, xzErrorf("multibyte integer longer than 9 bytes")
}

// xzBlockHeader is what a block header declares.
type xzBlockHeader struct {
	size             int64 // of the header itself
	compressedSize   int64 // -1 when absent
	uncompressedSize int64 // -1 when absent
	dictSize         int64
}

// readXzBlockHeader reads the rest of a block header whose first byte (the
// encoded header size, non-zero) was already read.
func readXzBlockHeader(r io.Reader, first byte, index int) (xzBlockHeader, error) {
	h := xzBlockHeader{size: (int64(first) + 1) * 4, compressedSize: -1, uncompressedSize: -1}
	buf := make([]byte, h.size)
	buf[0] = first
	if err := readFull(r, buf[1:]); err != nil {
		return h, err
	}
	body := buf[:h.size-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(buf[h.size-4:]) {
		return h, xzErrorf("block %d: header checksum mismatch", index)
	}
	if err := h.parse(body, index); err != nil {
		return h, err
	}
	return h, nil
}

func (h *xzBlockHeader) parse(body []byte, index int) error {
	flags := body[1]
	if flags&0x3c != 0 {
		return xzErrorf("block %d: reserved header flags %#x set", index, flags)
	}
	if flags&0x03 != 0 {
		return xzErrorf("block %d: %d filters; only a lone LZMA2 filter is supported", index, flags&0x03+1)
	}
	r := bytes.NewReader(body[2:])
	if flags&0x40 != 0 {
		v, err := readXzVarint(r)
		if err != nil || v == 0 || v > 1<<62 {
			return xzErrorf("block %d: bad compressed size in header", index)
		}
		h.compressedSize = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := readXzVarint(r)
		if err != nil || v > 1<<62 {
			return xzErrorf("block %d: bad uncompressed size in header", index)
		}
		h.uncompressedSize = int64(v)
	}
	if err := h.parseFilter(r, index); err != nil {
		return err
	}
	for r.Len() > 0 {
		if b, _ := r.ReadByte(); b != 0 {
			return xzErrorf("block %d: non-zero header padding", index)
		}
	}
	return nil
}

func (h *xzBlockHeader) parseFilter(r *bytes.Reader, index int) error {
	id, err := readXzVarint(r)
	if err != nil {
		return xzErrorf("block %d: truncated filter flags", index)
	}
	if id != xzLZMA2FilterID {
		return xzErrorf("block %d: unsupported filter %#x; only LZMA2 (0x21) is supported", index, id)
	}
	propSize, err := readXzVarint(r)
	if err != nil || propSize != 1 {
		return xzErrorf("block %d: LZMA2 filter properties must be 1 byte", index)
	}
	prop, err := r.ReadByte()
	if err != nil || prop > 40 {
		return xzErrorf("block %d: bad LZMA2 dictionary size property", index)
	}
	h.dictSize = lzma2DictSize(prop)
	return nil
}

// dictCap is the dictionary to allocate for a block: the declared size, but
// no more than the block's uncompressed size when that is known, as liblzma
// does. Matches can never reach further back than the block's own output (the
// decoder rejects them), so a smaller buffer decodes the same bytes; an xz -6
// file of 30 KiB then needs 30 KiB, not 8 MiB.
func dictCap(h xzBlockHeader, sizeHint int64) int {
	c := h.dictSize
	for _, u := range []int64{h.uncompressedSize, sizeHint} {
		if u >= 0 && u < c {
			c = u
		}
	}
	return int(max(c, lzma.MinDictCap))
}

// lzma2DictSize decodes the LZMA2 dictionary size property (0..40).
func lzma2DictSize(p byte) int64 {
	if p == 40 {
		return 1<<32 - 1
	}
	return int64(2|p&1) << (p/2 + 11)
}

// xzBlock decodes one block's LZMA2 data and verifies its check.
type xzBlock struct {
	hdr   xzBlockHeader
	index int
	check byte
	src   *countingReader
	lz    *lzma.Reader2
	hash  hash.Hash
	n     int64 // uncompressed bytes produced
}

// openXzBlock reads the header of a block (first byte already read) and
// prepares its decoder, refusing dictionaries above limit. sizeHint is the
// block's uncompressed size from the index, or -1.
func openXzBlock(br byteReader, first byte, check byte, limit int64, index int, sizeHint int64) (*xzBlock, error) {
	hdr, err := readXzBlockHeader(br, first, index)
	if err != nil {
		return nil, err
	}
	if hdr.dictSize > limit {
		return nil, failure.Permanentf(failure.LimitExceeded,
			"xz: block %d needs a %s dictionary, above the %s limit",
			index, units.Bytes(hdr.dictSize), units.Bytes(limit))
	}
	src := &countingReader{r: br}
	lz, err := lzma.Reader2Config{DictCap: dictCap(hdr, sizeHint)}.NewReader2(src)
	if err != nil {
		return nil, blockErr(index, err)
	}
	return &xzBlock{hdr: hdr, index: index, check: check, src: src, lz: lz, hash: xzNewHash(check)}, nil
}

func (b *xzBlock) Read(p []byte) (int, error) {
	n, err := b.lz.Read(p)
	b.n += int64(n)
	if b.hash != nil {
		b.hash.Write(p[:n])
	}
	if b.hdr.uncompressedSize >= 0 && b.n > b.hdr.uncompressedSize {
		return n, xzErrorf("block %d: more data than the %d bytes its header declares", b.index, b.hdr.uncompressedSize)
	}
	if b.hdr.compressedSize >= 0 && b.src.n > b.hdr.compressedSize {
		return n, xzErrorf("block %d: compressed data longer than the %d bytes its header declares", b.index, b.hdr.compressedSize)
	}
	if err != nil && err != io.EOF {
		return n, blockErr(b.index, err)
	}
	return n, err
}

// finish verifies sizes, padding and check after the LZMA2 data ended.
func (b *xzBlock) finish() (xzRecord, error) {
	if b.hdr.compressedSize >= 0 && b.src.n != b.hdr.compressedSize {
		return xzRecord{}, xzErrorf("block %d: %d compressed bytes, header declares %d", b.index, b.src.n, b.hdr.compressedSize)
	}
	if b.hdr.uncompressedSize >= 0 && b.n != b.hdr.uncompressedSize {
		return xzRecord{}, xzErrorf("block %d: %d uncompressed bytes, header declares %d", b.index, b.n, b.hdr.uncompressedSize)
	}
	var pad [3]byte
	p := pad[:(4-b.src.n%4)%4]
	if err := readFull(b.src.r, p); err != nil {
		return xzRecord{}, err
	}
	if !isZero(p) {
		return xzRecord{}, xzErrorf("block %d: non-zero block padding", b.index)
	}
	size, _ := xzCheckSize(b.check)
	sum := make([]byte, size)
	if err := readFull(b.src.r, sum); err != nil {
		return xzRecord{}, err
	}
	if computed := xzCheckSum(b.hash, b.check); !bytes.Equal(sum, computed) {
		return xzRecord{}, xzErrorf("block %d: check mismatch: stored %x, computed %x", b.index, sum, computed)
	}
	return xzRecord{unpadded: b.hdr.size + b.src.n + int64(size), uncompressed: b.n}, nil
}

// blockErr names the block in an LZMA2 decoding error; truncation stays
// io.ErrUnexpectedEOF so that the caller reports it as such.
func blockErr(index int, err error) error {
	var fe *failure.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &fe) {
		return err
	}
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return &sourceOrData{index: index, err: err}
}

// sourceOrData carries a non-EOF error out of the LZMA2 decoder. Whether it
// is corrupt data or the source failing is decided by decoder.classify, which
// knows the source's last error; the message gains the block number.
type sourceOrData struct {
	index int
	err   error
}

func (e *sourceOrData) Error() string {
	return fmt.Sprintf("block %d: %s", e.index, trimLibPrefix(e.err.Error()))
}
func (e *sourceOrData) Unwrap() error { return e.err }

func trimLibPrefix(s string) string {
	for _, p := range []string{"xz: ", "lzma: "} {
		if len(s) > len(p) && s[:len(p)] == p {
			return s[len(p):]
		}
	}
	return s
}

// countingReader counts the compressed bytes a block consumes. It is not an
// iox.Reader because the LZMA decoder reads byte by byte through ReadByte,
// and hiding that method behind an io.Reader would cost a buffer copy.
type countingReader struct {
	r byteReader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

func readFull(r io.Reader, p []byte) error {
	_, err := io.ReadFull(r, p)
	return unexpectedEOF(err)
}

// unexpectedEOF turns io.EOF into io.ErrUnexpectedEOF: inside a container
// every read expects more bytes.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
