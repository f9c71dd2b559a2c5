package layer

import (
	"archive/tar"
	"maps"
	"strings"
	"time"
)

// WindowsRawSD is the MSWINDOWS.rawsd PAX record ko puts on the files it
// writes for Windows images (github.com/google/ko, pkg/build/gobuild.go): a
// self-relative security descriptor with owner and group BUILTIN\Users
// (SDDL "O:BUG:BU"). Without one, a file in a Windows container layer is
// owned by nobody who can execute it.
const WindowsRawSD = "AQAAgBQAAAAkAAAAAAAAAAAAAAABAgAAAAAABSAAAAAhAgAAAQIAAAAAAAUgAAAAIQIAAA=="

const paxRawSD = "MSWINDOWS.rawsd"

// allowedPAX is the reproducible-mode allowlist: records that carry file
// content semantics (capabilities, ACLs, Windows attributes), not noise.
func allowedPAX(k string) bool {
	return strings.HasPrefix(k, "SCHILY.xattr.") || strings.HasPrefix(k, "MSWINDOWS.") ||
		k == "LIBARCHIVE.creationtime"
}

// rewrite returns the header the entry should have, or nil when the raw
// header can be kept. p is the cleaned (Windows-mapped) path.
func (n *normalizer) rewrite(hdr *tar.Header, p string) (*tar.Header, error) {
	h := *hdr
	modified := false
	if n.opts.Windows && isWindowsRoot(p) {
		if h.Typeflag != tar.TypeDir {
			return nil, n.entryError(hdr.Name, "%s must be a directory in a Windows layer", p)
		}
		if p == windowsFiles {
			n.filesDone = true
		} else {
			n.hivesDone = true
		}
	}
	if n.opts.Windows || n.opts.reproducible() {
		modified = n.rewriteNames(&h, p) || modified
	}
	if isHeaderOnly(h.Typeflag) && h.Size != 0 {
		// archive/tar reads no body for these; other readers may read
		// Size bytes. Zero it so that every reader agrees.
		h.Size = 0
		n.stats.count(ChangeHeaderOnlySize, 1)
		modified = true
	}
	if n.opts.Windows && (h.Typeflag == tar.TypeDir || isRegular(h.Typeflag)) {
		if _, ok := h.PAXRecords[paxRawSD]; !ok {
			h.PAXRecords = maps.Clone(h.PAXRecords)
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[paxRawSD] = WindowsRawSD
			n.stats.count(ChangeWindowsRawSD, 1)
			modified = true
		}
	}
	modified = n.override(&h) || modified
	if n.opts.reproducible() {
		n.canonical(&h)
		return &h, nil // compared byte for byte with the input by emit
	}
	if !modified {
		return nil, nil
	}
	return &h, nil
}

// rewriteNames sets the cleaned name (and hardlink target). Directories
// get a trailing "/" in reproducible Linux layers, as docker and buildkit
// write them; Windows layers use none, as hcsshim and ko write them.
// Minimal Windows mode keeps a name that is already in shape.
func (n *normalizer) rewriteNames(h *tar.Header, p string) bool {
	name := p
	if h.Typeflag == tar.TypeDir && !n.opts.Windows {
		name += "/"
	}
	modified := false
	keep := !n.opts.reproducible() && (h.Name == p || h.Name == p+"/")
	if h.Name != name && !keep {
		if !n.opts.Windows { // Windows renames are counted as windowsPrefixed
			n.stats.count(ChangeCleanedNames, 1)
		}
		h.Name = name
		modified = true
	}
	if h.Typeflag == tar.TypeLink {
		t, _ := cleanPath(h.Linkname, n.opts.Windows) // checked by checkHardlink
		if n.opts.Windows {
			t, _ = windowsPath(t)
		}
		if t != h.Linkname {
			h.Linkname = t
			modified = true
		}
	}
	return modified
}

// canonical applies the reproducible-mode rules to h.
func (n *normalizer) canonical(h *tar.Header) {
	created := n.opts.created()
	mt := time.Unix(h.ModTime.Unix(), 0).UTC()
	if mt.After(created) {
		mt = created
		n.stats.count(ChangeClampedMtimes, 1)
	}
	h.ModTime = mt
	if !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
		n.stats.count(ChangeDroppedTimes, 1)
	}
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	if h.Uname != "" || h.Gname != "" {
		n.stats.count(ChangeClearedOwnerNames, 1)
	}
	h.Uname, h.Gname = "", ""
	var dropped int
	h.PAXRecords, dropped = filterPAX(h.PAXRecords)
	n.stats.count(ChangeDroppedPAXRecords, dropped)
	h.Xattrs = nil //nolint:staticcheck // the same records are in PAXRecords
	h.Mode &= 0o7777
	if h.Typeflag == tar.TypeRegA {
		h.Typeflag = tar.TypeReg
	}
	// Unknown lets archive/tar pick USTAR when it can express the header
	// and PAX otherwise: the same header always gets the same format.
	h.Format = tar.FormatUnknown
}

func filterPAX(recs map[string]string) (map[string]string, int) {
	var out map[string]string
	dropped := 0
	for k, v := range recs {
		switch {
		case headerFields[k]: // archive/tar derives these from Header fields
		case allowedPAX(k):
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		default:
			dropped++
		}
	}
	return out, dropped
}

// windowsRoots writes the Files and Hives directories the layer has not had
// yet; Windows needs both, before anything else.
func (n *normalizer) windowsRoots() error {
	for _, d := range []struct {
		name string
		done *bool
	}{{windowsFiles, &n.filesDone}, {windowsHives, &n.hivesDone}} {
		if *d.done {
			continue
		}
		*d.done = true
		info := pathInfo{entry: 0, kind: kindDir}
		if id, covered := n.paths.resolve(d.name, n.key); covered == len(d.name) {
			n.paths.nodes[id] = info // so far implied by the entries under it
		} else {
			n.paths.add(d.name, id, covered, n.key, info)
		}
		enc, err := n.encode(&tar.Header{
			Typeflag:   tar.TypeDir,
			Name:       d.name,
			Mode:       0o555,
			ModTime:    n.opts.created(),
			PAXRecords: map[string]string{paxRawSD: WindowsRawSD},
			Format:     tar.FormatPAX,
		})
		if err != nil {
			return err
		}
		if err := n.write(enc); err != nil {
			return err
		}
		n.stats.Entries++
		n.stats.count(ChangeWindowsDirectories, 1)
		n.stats.Changed = true
	}
	return nil
}

// override applies Options.Overrides to h and reports whether it changed
// anything. Only counted changes are rewrites: an entry that already has
// the mode and owner keeps its raw header.
func (n *normalizer) override(h *tar.Header) bool {
	o := n.opts.Overrides
	modified := false
	if m, ok := overriddenMode(h, o); ok && m != h.Mode&0o7777 {
		h.Mode = h.Mode&^0o7777 | m
		n.stats.count(ChangeOverriddenModes, 1)
		modified = true
	}
	owner := false
	if o.UID != nil && int64(h.Uid) != *o.UID {
		h.Uid, owner = int(*o.UID), true
	}
	if o.GID != nil && int64(h.Gid) != *o.GID {
		h.Gid, owner = int(*o.GID), true
	}
	if (o.UID != nil || o.GID != nil) && (h.Uname != "" || h.Gname != "") {
		h.Uname, h.Gname, owner = "", "", true
	}
	if owner {
		n.stats.count(ChangeOverriddenOwners, 1)
		modified = true
	}
	return modified
}

// overriddenMode is the permission bits o gives h, if it gives any.
func overriddenMode(h *tar.Header, o Overrides) (int64, bool) {
	switch {
	case h.Typeflag == tar.TypeDir && o.DirMode != nil:
		return *o.DirMode, true
	case isRegular(h.Typeflag) && o.FileMode != nil:
		m := *o.FileMode
		if h.Mode&0o111 != 0 {
			m |= (m & 0o444) >> 2
		}
		return m, true
	}
	return 0, false
}
