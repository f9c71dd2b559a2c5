package testkit

import (
	"fmt"
	"strconv"
)

// Raw tar builders, for inputs archive/tar refuses to write: several
// pseudo-headers before one entry, a PAX path together with a GNU long
// name, bytes in the prefix field of a GNU header, unknown typeflags.

const (
	// BlockSize is the size of a tar header block.
	BlockSize  = 512
	MagicPOSIX = "ustar\x0000"
	MagicGNU   = "ustar  \x00"
	MagicV7    = "\x00\x00\x00\x00\x00\x00\x00\x00"
)

// Block is one raw header block.
type Block struct {
	Type  byte
	Name  string
	Link  string
	Size  int
	Magic string         // MagicPOSIX when empty
	Patch map[int]string // raw bytes written at these offsets (prefix field: 345)
}

// Bytes is the 512-byte header with a valid checksum.
func (b Block) Bytes() []byte {
	h := make([]byte, BlockSize)
	copy(h[0:100], b.Name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	copy(h[124:136], fmt.Sprintf("%011o\x00", b.Size))
	copy(h[136:148], "14621234567\x00")
	h[156] = b.Type
	copy(h[157:257], b.Link)
	magic := b.Magic
	if magic == "" {
		magic = MagicPOSIX
	}
	copy(h[257:265], magic)
	for off, s := range b.Patch {
		copy(h[off:], s)
	}
	FixChecksum(h)
	return h
}

// FixChecksum rewrites the checksum field of header block h after an edit.
func FixChecksum(h []byte) {
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h[:BlockSize] {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// Meta is a pseudo-header ('x' PAX, 'g' global, 'L'/'K' GNU long name or
// link) with its body and padding.
func Meta(typ byte, body string) []byte {
	b := append(Block{Type: typ, Name: "././@meta", Size: len(body)}.Bytes(), body...)
	return append(b, make([]byte, Padding(len(body)))...)
}

// Padding is the number of zero bytes that fill a body of size to a block.
func Padding(size int) int { return -size & (BlockSize - 1) }

// PAXRecord is "<len> key=value\n", the length counting itself.
func PAXRecord(k, v string) string {
	n := len(k) + len(v) + 3
	n += len(strconv.Itoa(n))
	if len(strconv.Itoa(n)) != len(strconv.Itoa(n-1)) {
		n++
	}
	return fmt.Sprintf("%d %s=%s\n", n, k, v)
}

// RawTar concatenates blocks and appends the end-of-archive marker.
func RawTar(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return append(out, make([]byte, 2*BlockSize)...)
}
