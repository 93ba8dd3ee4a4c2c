package buffstreams

import (
	"bytes"
	"fmt"
)

// This file turns "length 1195725860 exceeds the maximum" into "the peer
// speaks HTTP": when the first frame of a connection cannot be read, the
// bytes that arrived are compared with the openings of other protocols and
// with the other framings.

// sniff returns an error wrapping ErrWrongProtocol and cause when p, the
// first bytes received on a connection whose first frame failed, shows what
// the peer speaks instead; otherwise it returns cause.
func sniff(p []byte, w wire, cause error) error {
	if what := recognise(p, w); what != "" {
		return fmt.Errorf("%w: %s (first bytes % x): %w", ErrWrongProtocol, what, p[:min(len(p), 8)], cause)
	}
	return cause
}

// httpOpenings are the starts of HTTP/1 requests and responses, and of the
// HTTP/2 connection preface.
var httpOpenings = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("HEAD "),
	[]byte("DELETE "), []byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "),
	[]byte("TRACE "), []byte("HTTP/1."), []byte("PRI * HTTP/2"),
}

// recognise names the protocol or framing p looks like, or returns "".
func recognise(p []byte, w wire) string {
	// A TLS record: handshake (22), version 3.x.
	if len(p) >= 3 && p[0] == 0x16 && p[1] == 0x03 && p[2] <= 0x04 {
		return "the peer speaks TLS; set TLSConfig on this side, or turn TLS off on the peer"
	}
	// A TLS alert or other record from a TLS server answering a plain client.
	if len(p) >= 3 && p[0] >= 0x14 && p[0] <= 0x17 && p[1] == 0x03 && p[2] <= 0x04 {
		return "the peer speaks TLS; set TLSConfig on this side"
	}
	for _, o := range httpOpenings {
		n := min(len(p), len(o))
		if n >= 4 && bytes.Equal(p[:n], o[:n]) {
			return "the peer speaks HTTP, not length-prefixed messages"
		}
	}
	if bytes.HasPrefix(p, []byte("SSH-")) {
		return "the peer speaks SSH"
	}
	// Another framing that reads a plausible first frame, with everything
	// received so far made of whole frames of it.
	for _, f := range []Framing{Uvarint, Fixed4, Fixed2, BuffStreamsFraming(w.max), Fixed8} {
		if f.String() == w.framing.String() && f.maxLen() == w.framing.maxLen() {
			continue
		}
		if fits(p, f, w.max) {
			return fmt.Sprintf("the peer may be using the %s framing, not %s", f, w.framing)
		}
	}
	return ""
}

// fits reports whether p begins with at least one whole, non-empty frame of
// f and is cut only at frame boundaries or inside the last frame.
func fits(p []byte, f Framing, limit int) bool {
	frames := 0
	for len(p) > 0 {
		_, n, size, err := f.split(p, limit)
		if err != nil || size == 0 {
			break
		}
		if size > len(p) {
			break
		}
		if n == 0 {
			return false // an empty message is too easily a coincidence
		}
		frames++
		p = p[size:]
	}
	return frames > 0
}
