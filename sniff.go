package buffstreams

import (
	"bytes"
	"fmt"
)

// This file turns "length 1195725860 exceeds the maximum" into "the peer
// speaks HTTP": when the first frame of a connection cannot be read, the
// bytes that arrived are compared with the openings of other protocols and
// with the other framings.
//
// A mix-up can be named only when our framing fails on the peer's first
// frame: if it reads the first header as a plausible length, it delivers a
// wrong message and there is nothing to explain. For messages of a few
// hundred bytes that happens when:
//   - we use uvarint or fixed1, whose one-byte header reads almost any
//     first byte as a length (fixed1 and uvarint also write the same
//     header below 128, so between themselves they are one framing);
//   - the peer's length is wider than ours and big-endian (fixed8 at
//     fixed4 or fixed4le, fixed4 at fixed2 or fixed2le), whose high zero
//     bytes read as an empty message, or wider and little-endian at
//     little-endian (fixed8le at fixed4le), whose extra zero bytes read
//     as payload;
//   - fixed4 at fixed4incl and back: the length is read 4 bytes off;
//   - the BuffStreams framing with a wider header (a larger
//     MaxMessageSize) at a narrower one: the zero padding reads as payload;
//   - a fixed-width length at the BuffStreams framing with a 2- or 3-byte
//     header (MaxMessageSize up to 65535), which reads zero high bytes as
//     an empty message or a little-endian low byte as a zig-zag length.
// TestSniffFramingMatrix lists every such pair.

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
	if what := recogniseProtocol(p); what != "" {
		return what
	}
	if f, alt := likeliest(p, w.framing); f != nil {
		return mismatch(f, alt, w)
	}
	return ""
}

// recogniseProtocol names the protocol other than ours whose opening p is,
// or returns "".
func recogniseProtocol(p []byte) string {
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
	return ""
}

// candidates are the length-prefixed framings the sniffer tries, with the
// BuffStreams framing at each of its header widths. Delimited framings are
// not tried: their frames are too easily found in anything.
var candidates = []Framing{
	Uvarint, Fixed4, Fixed2, Fixed8, Fixed1, Fixed3,
	Fixed4LE, Fixed2LE, Fixed8LE, Fixed4Inclusive,
	zigzagFraming{width: 2}, zigzagFraming{width: 3}, zigzagFraming{width: 4}, zigzagFraming{width: 5},
}

// likeliest returns the framing other than ours that best explains p, or
// nil, and the first other framing that explains it as well, if any (fixed1
// and uvarint write the same header for lengths under 128). A framing explains p if p starts with at least one whole, non-empty
// frame of it. Those that read p to its last byte as whole frames come
// first; then the ones closest to ours (the other byte order, the
// BuffStreams framing with another header width, the same length counting
// the header), whose mix-up is the most common; then the order of
// candidates.
func likeliest(p []byte, ours Framing) (best, alt Framing) {
	bestRank := -1
	for _, f := range candidates {
		if f == ours {
			continue
		}
		frames, whole := framesFit(p, f)
		if frames == 0 {
			continue
		}
		rank := 0
		if whole {
			rank += 2
		}
		if related(f, ours) {
			rank++
		}
		switch {
		case rank > bestRank:
			best, alt, bestRank = f, nil, rank
		case rank == bestRank && alt == nil:
			alt = f
		}
	}
	return best, alt
}

// related reports whether f differs from ours only in byte order, in
// whether the length counts the header, or, for the BuffStreams framing, in
// header width (that is, in MaxMessageSize).
func related(f, ours Framing) bool {
	switch a := f.(type) {
	case fixedFraming:
		b, ok := ours.(fixedFraming)
		return ok && a.width == b.width
	case zigzagFraming:
		_, ok := ours.(zigzagFraming)
		return ok
	}
	return false
}

// mismatch describes the peer's framing f against ours; alt, if not nil,
// explains the bytes as well as f does.
func mismatch(f, alt Framing, w wire) string {
	switch a := f.(type) {
	case fixedFraming:
		b, ok := w.framing.(fixedFraming)
		switch {
		case !ok:
		case a.width == b.width && a.little != b.little:
			order := "big"
			if a.little {
				order = "little"
			}
			return fmt.Sprintf("the peer's lengths are %s-endian: it may be using the %s framing, not %s", order, f, w.framing)
		case a.width == b.width && a.incl:
			return fmt.Sprintf("the peer's lengths count the header: it may be using the %s framing, not %s", f, w.framing)
		case a.width == b.width:
			return fmt.Sprintf("the peer's lengths do not count the header: it may be using the %s framing, not %s", f, w.framing)
		default:
			return fmt.Sprintf("the peer may be using the %s framing, with %s, not %s, with %s", f, lengthOf(a.width), w.framing, lengthOf(b.width))
		}
	case zigzagFraming:
		lo, hi := a.sizes()
		if b, ok := w.framing.(zigzagFraming); ok {
			return fmt.Sprintf("the peer may be using the buffstreams framing with a different MaxMessageSize: its %d-byte headers mean a MaxMessageSize of %d to %d, ours is %d (%d-byte headers); set the same MaxMessageSize on both sides",
				a.width, lo, hi, w.max, b.width)
		}
		return fmt.Sprintf("the peer may be using the buffstreams framing (with a MaxMessageSize of %d to %d), not %s", lo, hi, w.framing)
	}
	if alt != nil {
		return fmt.Sprintf("the peer may be using the %s framing (or %s, which frames these messages alike), not %s", f, alt, w.framing)
	}
	return fmt.Sprintf("the peer may be using the %s framing, not %s", f, w.framing)
}

// lengthOf names a fixed-width length of n bytes.
func lengthOf(n int) string {
	if n == 8 {
		return "an 8-byte length"
	}
	return fmt.Sprintf("a %d-byte length", n)
}

// sizes returns the range of MaxMessageSize values that give BuffStreams
// headers of f.width bytes.
func (f zigzagFraming) sizes() (lo, hi int) {
	lo = 1 << (8 * (f.width - 2))
	if f.width >= 5 {
		return lo, MaxMessageSizeLimit
	}
	return lo, 1<<(8*(f.width-1)) - 1
}

// framesFit returns how many whole, non-empty frames of f begin p, and whether
// they make up all of p. It returns 0 if p is cut other than at a frame
// boundary or inside the last frame, or if an empty frame comes first (an
// empty message is too easily a coincidence).
func framesFit(p []byte, f Framing) (frames int, whole bool) {
	for len(p) > 0 {
		_, n, size, err := f.split(p, MaxMessageSizeLimit)
		if err != nil || size == 0 || size > len(p) {
			return frames, false
		}
		if n == 0 {
			return 0, false
		}
		frames++
		p = p[size:]
	}
	return frames, true
}
