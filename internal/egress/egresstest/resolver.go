// Package egresstest provides a fake DNS resolver, so that tests can make a
// host name resolve to a forbidden address (a rebinding attacker's name) and
// check that the refusal happens after resolution, at dial time.
package egresstest

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
)

// Resolver answers A and AAAA queries from hosts (names without the trailing
// dot, lower case) and NXDOMAIN for any other name. It never touches the
// network. Lookups counts the queries it answered.
type Resolver struct {
	*net.Resolver
	hosts   map[string]netip.Addr
	Lookups atomic.Int64
}

// NewResolver returns a Resolver for hosts.
func NewResolver(hosts map[string]netip.Addr) *Resolver {
	r := &Resolver{hosts: hosts}
	r.Resolver = &net.Resolver{PreferGo: true, Dial: r.dial}
	return r
}

// dial hands the Go resolver one end of a pipe; it speaks DNS over TCP
// framing (a two-byte length before each message) to a stream conn.
func (r *Resolver) dial(context.Context, string, string) (net.Conn, error) {
	client, server := net.Pipe()
	go r.serve(server)
	return client, nil
}

func (r *Resolver) serve(c net.Conn) {
	defer c.Close()
	for {
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		q := make([]byte, n)
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		resp, err := r.answer(q)
		if err != nil {
			return
		}
		r.Lookups.Add(1)
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

const (
	typeA    = 1
	typeAAAA = 28
)

// answer builds the response to one query with a single question.
func (r *Resolver) answer(q []byte) ([]byte, error) {
	name, end, err := question(q)
	if err != nil {
		return nil, err
	}
	qtype := binary.BigEndian.Uint16(q[end-4:])
	addr, known := r.hosts[strings.ToLower(strings.TrimSuffix(name, "."))]
	var rdata []byte
	switch {
	case known && qtype == typeA && addr.Is4():
		rdata = addr.AsSlice()
	case known && qtype == typeAAAA && addr.Is6():
		rdata = addr.AsSlice()
	}
	flags := uint16(0x8180) // response, recursion desired and available
	if !known {
		flags |= 3 // NXDOMAIN
	}
	ancount := uint16(0)
	if rdata != nil {
		ancount = 1
	}
	resp := append([]byte{}, q[:2]...) // ID
	resp = binary.BigEndian.AppendUint16(resp, flags)
	resp = binary.BigEndian.AppendUint16(resp, 1) // QDCOUNT
	resp = binary.BigEndian.AppendUint16(resp, ancount)
	resp = append(resp, 0, 0, 0, 0) // NSCOUNT, ARCOUNT
	resp = append(resp, q[12:end]...)
	if rdata != nil {
		resp = append(resp, 0xc0, 12) // pointer to the question's name
		resp = binary.BigEndian.AppendUint16(resp, qtype)
		resp = binary.BigEndian.AppendUint16(resp, 1) // class IN
		resp = binary.BigEndian.AppendUint32(resp, 60)
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
		resp = append(resp, rdata...)
	}
	return resp, nil
}

// question returns the queried name and the offset after the question.
func question(q []byte) (string, int, error) {
	if len(q) < 12 {
		return "", 0, errors.New("short DNS message")
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return "", 0, errors.New("bad DNS label")
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	end := i + 1 + 4 // root label, QTYPE, QCLASS
	if end > len(q) {
		return "", 0, errors.New("short DNS question")
	}
	return strings.Join(labels, "."), end, nil
}
