package layer

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Raw header checks: parser differentials.
//
// In minimal mode kiln pushes the header blocks it read byte for byte, so
// archive/tar is only one of the readers of those bytes: whatever unpacks the
// image (containerd and other Go code, GNU tar, bsdtar/libarchive, Python's
// tarfile) reads them too. An entry passes only when every name those readers
// can derive from the raw blocks is the name kiln checked. What each reader
// reads: archive/tar (Go 1.26) and tarfile (CPython 3.11) from their sources,
// both and GNU tar 1.34 checked on the inputs of TestParserDifferentials;
// libarchive was not at hand, and no rule depends on which way it goes:
//
//   - The ustar name and linkname fields: every reader stops at the first
//     NUL, so junk after a NUL is harmless.
//   - The ustar prefix field (bytes 345-500): archive/tar and GNU tar
//     prepend it for a POSIX ustar magic ("ustar\x00" "00"). archive/tar
//     reads only 131 bytes of it when the star trailer is present, and in a
//     GNU header (magic "ustar  \x00", where those bytes are atime, ctime
//     and sparse data) reads it only when the times do not parse. Python
//     prepends whatever is there, whatever the magic: a GNU header with
//     times (GNU tar --incremental writes them) reads as "15303732233/d/f".
//     So a non-empty prefix is accepted only in a plain POSIX ustar header.
//   - A PAX path/linkpath record ('x') and a GNU long name/link ('L'/'K')
//     override those fields in every reader. An empty one is skipped by
//     archive/tar (which keeps the field) and applied by GNU tar and Python.
//   - Both a PAX path and a GNU long name: archive/tar takes the long name,
//     GNU tar the PAX record, Python whichever header came first.
//   - Several 'x' (or 'L', or 'K') headers before one entry: archive/tar and
//     GNU tar apply the last one, Python the first.
//   - An 'x', 'L' or 'K' before a global header 'g': archive/tar forgets it
//     (the global header is returned on its own), GNU tar and Python apply
//     it to the entry after the global header.
//   - A NUL inside a long name: archive/tar, GNU tar and Python stop at it;
//     a reader that takes the record's length would not. archive/tar itself
//     refuses a NUL in a PAX path.
//   - A PAX record length with a sign ("+12 path=x"): archive/tar applies
//     the record, GNU tar and Python skip it.
//   - Typeflag '\x00' means a directory when the name ends in "/":
//     archive/tar and GNU tar test the final name, Python the name field.
//   - Global headers: archive/tar applies none of their records, the other
//     readers apply them to every later entry; see normalizer.globalHeader.
//
// Each rule rejects the entry, in every mode, rather than guessing which
// reading is the intended one.

// Header block layout (POSIX ustar; GNU and star differ after byte 345).
const (
	offName     = 0
	offSize     = 124
	offTypeflag = 156
	offLinkname = 157
	offMagic    = 257
	offPrefix   = 345
	endPrefix   = 500
	offTrailer  = 508
	lenName     = 100
	lenSize     = 12
)

// rawEntry is what the raw header blocks of one entry say, before any
// reader's interpretation.
type rawEntry struct {
	header   []byte            // the entry's own header block
	global   bool              // header is a global PAX header ('g')
	pax      map[string]string // records of the 'x' header, nil without one
	longName *string           // content of the 'L' block, up to its trailing NULs
	longLink *string           // content of the 'K' block
}

// metaName names the pseudo-header types in messages.
var metaName = map[byte]string{
	tar.TypeXHeader:       "PAX extended header ('x')",
	tar.TypeGNULongName:   "GNU long name header ('L')",
	tar.TypeGNULongLink:   "GNU long link header ('K')",
	tar.TypeXGlobalHeader: "global PAX header ('g')",
}

// parseRaw splits the bytes archive/tar read for one header (see
// normalizer.next) into the pseudo-headers and the entry's own header
// block, rejecting the sequences readers resolve differently.
func parseRaw(raw []byte) (rawEntry, error) {
	var e rawEntry
	var seen []byte
	for off := 0; off+blockSize <= len(raw); {
		blk := raw[off : off+blockSize]
		typ := blk[offTypeflag]
		if metaName[typ] == "" {
			if off+blockSize != len(raw) {
				return e, fmt.Errorf("unexpected data after the header block")
			}
			e.header = blk
			return e, nil
		}
		if bytes.IndexByte(seen, typ) >= 0 {
			return e, fmt.Errorf("more than one %s before one entry (readers differ on which one applies)", metaName[typ])
		}
		seen = append(seen, typ)
		body, next, err := metaBody(raw, off)
		if err != nil {
			return e, err
		}
		if typ == tar.TypeXGlobalHeader {
			if off != 0 {
				return e, fmt.Errorf("%s before a global PAX header (readers differ on which entry it applies to)", metaName[seen[0]])
			}
			e.header, e.global = blk, true
			return e, nil
		}
		if err := e.addMeta(typ, body); err != nil {
			return e, err
		}
		off = next
	}
	return e, fmt.Errorf("the header blocks end without an entry header")
}

// metaBody returns the body of the pseudo-header at raw[off:] and the
// offset of the block after its padding. The size is parsed as archive/tar
// parses it; it did accept these bytes.
func metaBody(raw []byte, off int) (body []byte, next int, err error) {
	size, ok := parseNumeric(raw[off+offSize : off+offSize+lenSize])
	start := off + blockSize
	if !ok || size < 0 || size > int64(len(raw)-start) {
		return nil, 0, fmt.Errorf("metadata header with an unreadable size")
	}
	end := start + int(size)
	return raw[start:end], end + int(padding(size)), nil
}

func (e *rawEntry) addMeta(typ byte, body []byte) error {
	switch typ {
	case tar.TypeXHeader:
		recs, err := parsePAXRecords(body)
		if err != nil {
			return err
		}
		e.pax = recs
	case tar.TypeGNULongName, tar.TypeGNULongLink:
		s, err := gnuLongString(body, typ)
		if err != nil {
			return err
		}
		if typ == tar.TypeGNULongName {
			e.longName = &s
		} else {
			e.longLink = &s
		}
	}
	return nil
}

// gnuLongString is the content of an 'L' or 'K' block. GNU tar writes the
// name and a NUL; a NUL followed by more bytes is read differently by
// readers that stop at the first NUL and those that take the length.
func gnuLongString(body []byte, typ byte) (string, error) {
	what := "name"
	if typ == tar.TypeGNULongLink {
		what = "link"
	}
	s := bytes.TrimRight(body, "\x00")
	if bytes.IndexByte(s, 0) >= 0 {
		return "", fmt.Errorf("NUL byte inside the GNU long %s (readers truncate it differently)", what)
	}
	if len(s) == 0 {
		return "", fmt.Errorf("empty GNU long %s (archive/tar ignores it, Python's tarfile applies it)", what)
	}
	return string(s), nil
}

// headerFieldList are the PAX keywords that override a header field in
// every reader (POSIX pax "path", "size", ...).
var headerFieldList = []string{"path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime"}

var headerFields = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range headerFieldList {
		m[k] = true
	}
	return m
}()

// parsePAXRecords parses "%d %s=%s\n" records more strictly than
// archive/tar: the length is decimal digits only (archive/tar takes "+12",
// Python stops there), no keyword appears twice, and no header-field record
// is empty (POSIX: an empty value deletes the field; archive/tar keeps the
// header's field instead, Python applies the empty value).
func parsePAXRecords(body []byte) (map[string]string, error) {
	recs := map[string]string{}
	for s := string(body); s != ""; {
		k, v, rest, err := parsePAXRecord(s)
		if err != nil {
			return nil, err
		}
		if _, dup := recs[k]; dup {
			return nil, fmt.Errorf("PAX header repeats the %q record (readers differ on which one applies)", k)
		}
		if v == "" && headerFields[k] {
			return nil, fmt.Errorf("empty PAX %q record (archive/tar ignores it, Python's tarfile applies it)", k)
		}
		recs[k] = v
		s = rest
	}
	return recs, nil
}

func parsePAXRecord(s string) (k, v, rest string, err error) {
	nStr, _, ok := strings.Cut(s, " ")
	n, perr := strconv.Atoi(nStr)
	if !ok || !isDigits(nStr) || perr != nil || n <= len(nStr)+1 || n > len(s) || s[n-1] != '\n' {
		return "", "", "", fmt.Errorf("malformed PAX record %q", truncate(s, 40))
	}
	k, v, ok = strings.Cut(s[len(nStr)+1:n-1], "=")
	if !ok || k == "" {
		return "", "", "", fmt.Errorf("malformed PAX record %q", truncate(s, 40))
	}
	return k, v, s[n:], nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseNumeric parses a numeric header field as archive/tar does: base-256
// when the high bit of the first byte is set, else octal padded with spaces
// and NULs.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 {
			return 0, false // negative: not a size
		}
		var x uint64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if x>>56 > 0 {
				return 0, false
			}
			x = x<<8 | uint64(c)
		}
		return int64(x), x>>63 == 0
	}
	b = bytes.Trim(b, " \x00")
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return 0, true
	}
	x, err := strconv.ParseUint(string(b), 8, 63)
	return int64(x), err == nil
}

// cstring is a header string field up to its first NUL, as every reader
// reads it.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// fieldName is the name a plain header block gives, when no PAX record or
// GNU long name overrides it.
func fieldName(blk []byte) (string, error) {
	name := cstring(blk[offName : offName+lenName])
	prefix := cstring(blk[offPrefix:endPrefix])
	if prefix == "" {
		return name, nil
	}
	posix := string(blk[offMagic:offMagic+8]) == "ustar\x0000"
	star := string(blk[offTrailer:blockSize]) == "tar\x00"
	if !posix || star {
		return "", fmt.Errorf("the prefix field of this non-ustar header holds %q (Python's tarfile reads it as part of the name, other readers do not)",
			truncate(prefix, 40))
	}
	return prefix + "/" + name, nil
}

// checkRawNames checks that the raw blocks name the entry (and its link)
// the way archive/tar read it into hdr, with no second reading.
func checkRawNames(e rawEntry, hdr *tar.Header) error {
	name, err := fieldName(e.header)
	if _, hasPath := e.pax["path"]; err != nil && !hasPath && e.longName == nil {
		return err // the prefix field is the name's only source
	}
	name, err = override(name, "path", e.pax, e.longName, "GNU long name")
	if err != nil {
		return err
	}
	link := cstring(e.header[offLinkname : offLinkname+lenName])
	link, err = override(link, "linkpath", e.pax, e.longLink, "GNU long link")
	if err != nil {
		return err
	}
	if name != hdr.Name || link != hdr.Linkname {
		return fmt.Errorf("archive/tar read the name %q (link %q) but the raw header says %q (link %q)",
			truncate(hdr.Name, 80), truncate(hdr.Linkname, 80), truncate(name, 80), truncate(link, 80))
	}
	if e.header[offTypeflag] == tar.TypeRegA {
		field := cstring(e.header[offName : offName+lenName])
		if strings.HasSuffix(field, "/") != strings.HasSuffix(name, "/") {
			return fmt.Errorf("old-style type '\\x00' entry: its name field %q and its full name disagree on the trailing \"/\" that makes it a directory",
				truncate(field, 80))
		}
	}
	return nil
}

// override applies the PAX record key and the GNU long name/link long to
// the header field value; both present must agree.
func override(field, key string, pax map[string]string, long *string, longWhat string) (string, error) {
	p, hasPAX := pax[key]
	switch {
	case hasPAX && long != nil && p != *long:
		return "", fmt.Errorf("PAX %s %q and %s %q disagree (readers differ on which one applies)",
			key, truncate(p, 80), longWhat, truncate(*long, 80))
	case long != nil:
		return *long, nil
	case hasPAX:
		return p, nil
	}
	return field, nil
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
