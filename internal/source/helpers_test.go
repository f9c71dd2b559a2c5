package source

import (
	"io"
	"log"
	"net/netip"
)

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
