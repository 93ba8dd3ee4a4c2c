package buffstreams

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// This file owns the wire formats. Every framing turns a payload length into
// a header on the way out and finds the next frame in a buffer on the way in;
// the read loop knows nothing else about them.

// MaxMessageSizeLimit is the largest MaxMessageSize a configuration may ask
// for: 2^31-1 bytes, the limit of protobuf messages and of the length types of
// the Java and C# protobuf runtimes. On 32-bit platforms it is 2^29-1, so
// that sizes computed from it cannot overflow an int.
const MaxMessageSizeLimit = min(1<<31-1, math.MaxInt/4)

// maxHeaderLen is the widest header of any framing (a 10-byte varint).
const maxHeaderLen = binary.MaxVarintLen64

// A Framing is a wire format that marks where each message of a byte stream
// ends. Both ends of a connection must use the same Framing (and, for the
// BuffStreams framing, the same MaxMessageSize).
//
// The framings are the values returned by [BuffStreamsFraming], [Delimited]
// and [ParseFraming] and the variables [Uvarint], [Fixed1], [Fixed2],
// [Fixed3], [Fixed4], [Fixed8], [Fixed2LE], [Fixed4LE], [Fixed8LE],
// [Fixed4Inclusive] and [Lines]. The set is closed so that every decoder is
// strict, fuzzed and allocation free; Framing values are immutable and safe
// for concurrent use.
type Framing interface {
	// String returns the framing's name as accepted by ParseFraming.
	String() string

	// maxLen returns the largest payload length the header can express.
	maxLen() int
	// putHeader writes the header for a payload of n bytes (n <= maxLen) at
	// the start of dst, which has room for maxHeaderLen bytes, and returns
	// the header width.
	putHeader(dst []byte, n int) int
	// trailer returns the bytes written after every payload: nil for
	// length-prefixed framings, the delimiter for delimited ones.
	trailer() []byte
	// check reports whether payload p can be framed at all (a delimited
	// framing cannot carry a payload that contains its delimiter). It is
	// called before anything of p is written; length limits are checked
	// separately.
	check(p []byte) error
	// split finds the frame at the start of p. The payload is
	// p[start:start+n] and the frame occupies size bytes. size == 0 means p
	// is too short to know the frame's size; size > len(p) means size bytes
	// are needed. A declared length above limit is an error, reported as soon
	// as the header is complete and before any payload is read.
	split(p []byte, limit int) (start, n, size int, err error)
}

// BuffStreamsFraming returns the framing of BuffStreams 2.0 for the given
// MaxMessageSize (0 means [DefaultMaxMessageSize]). It is the default framing,
// so a zero Framing field in a configuration means
// BuffStreamsFraming(MaxMessageSize).
//
// Each frame is a header of H bytes followed by the payload, where H depends
// only on MaxMessageSize:
//
//	H = ceil((floor(log2(MaxMessageSize)) + 1) / 8) + 1
//
// that is 2 bytes for MaxMessageSize up to 255, 3 up to 65535, 4 up to
// 2^24-1 and 5 above. The header holds the zig-zag (signed) varint of the
// payload length, as written by [encoding/binary.PutVarint], followed by
// zero bytes up to H. With MaxMessageSize 4096 (H = 3), a 110-byte payload is
// framed as:
//
//	+------+------+------+----------------------+
//	| 0xdc | 0x01 | 0x00 | 110 bytes of payload |
//	+------+------+------+----------------------+
//	  varint(110)   pad
//
// Because H follows from MaxMessageSize, both ends must be configured with
// the same MaxMessageSize or every frame is misread. The decoder rejects a
// negative length, non-zero padding, a varint that does not end within the
// header or is not minimally encoded, and a length above MaxMessageSize.
// New systems should prefer [Uvarint] or [Fixed4], which every protobuf
// runtime or framing library can speak without sharing a setting.
func BuffStreamsFraming(maxMessageSize int) Framing {
	if maxMessageSize <= 0 {
		maxMessageSize = DefaultMaxMessageSize
	}
	w := (bits.Len(uint(maxMessageSize))+7)/8 + 1
	return zigzagFraming{width: w}
}

// Uvarint is protobuf's size-delimited format: the length as a minimal
// unsigned varint (1 to 5 bytes for lengths below 2^31), then the payload.
// It is what Java's writeDelimitedTo/parseDelimitedFrom, C#'s
// WriteDelimitedTo, C++'s delimited_message_util, protobufjs'
// encodeDelimited/decodeDelimited, Python's varint helpers and Go's protodelim
// produce and expect:
//
//	0 -> 00   127 -> 7f   128 -> 80 01   300 -> ac 02   2^31-1 -> ff ff ff ff 07
//
// The decoder reads varints of up to 10 bytes, as protobuf readers do, and
// rejects lengths of 2^31 or more.
var Uvarint Framing = uvarintFraming{}

// Fixed-width unsigned big-endian length prefixes, as written by Netty's
// LengthFieldPrepender(width) and tokio's LengthDelimitedCodec (4 bytes by
// default). A 1-byte header limits messages to 255 bytes, 2 bytes to 65535,
// 3 bytes to 2^24-1; 4 and 8 bytes reach MaxMessageSizeLimit. Fixed4 frames
// "hello world" as 00 00 00 0b followed by the 11 bytes.
var (
	Fixed1 Framing = fixedFraming{width: 1}
	Fixed2 Framing = fixedFraming{width: 2}
	Fixed3 Framing = fixedFraming{width: 3}
	Fixed4 Framing = fixedFraming{width: 4}
	Fixed8 Framing = fixedFraming{width: 8}
)

// Fixed-width unsigned little-endian length prefixes, as written by Netty's
// LengthFieldPrepender(ByteOrder.LITTLE_ENDIAN, width, 0, false), C#'s
// BinaryWriter.Write(uint) and programs that write a native integer on x86
// or ARM. Fixed4LE frames "hello world" as 0b 00 00 00 followed by the 11
// bytes. Fixed2LE limits messages to 65535 bytes; Fixed4LE and Fixed8LE
// reach MaxMessageSizeLimit.
var (
	Fixed2LE Framing = fixedFraming{width: 2, little: true}
	Fixed4LE Framing = fixedFraming{width: 4, little: true}
	Fixed8LE Framing = fixedFraming{width: 8, little: true}
)

// Fixed4Inclusive is a 4-byte unsigned big-endian length that counts the
// header itself: 4 plus the payload length. It is what Netty's
// LengthFieldBasedFrameDecoder(max, 0, 4, -4, 4) reads and
// LengthFieldPrepender(4, true) writes. It frames "hello world" as
// 00 00 00 0f followed by the 11 bytes, and an empty payload as 00 00 00 04.
// The decoder rejects a length below 4 as malformed and applies
// MaxMessageSize to the payload, the length minus 4.
var Fixed4Inclusive Framing = fixedFraming{width: 4, incl: true}

// fixedFramings are the fixed-width framings ParseFraming knows, by their
// String.
var fixedFramings = [...]Framing{
	Fixed1, Fixed2, Fixed3, Fixed4, Fixed8,
	Fixed2LE, Fixed4LE, Fixed8LE,
	Fixed4Inclusive,
}

// Lines is the delimited framing of newline-terminated text: each message is
// the bytes before a newline (0x0a), which is not part of it. It is
// Delimited([]byte("\n")); see [Delimited].
var Lines Framing = &delimFraming{delim: []byte{'\n'}, name: delimPrefix + `\n`}

// delimPrefix starts the name of every delimited framing.
const delimPrefix = "delim:"

// Delimited returns the framing that ends each message with delim, which
// may be any non-empty byte sequence, such as "\n", "\r\n" or "\x00".
// There is no header: a frame is the payload followed by delim, and the
// payload is everything before the first occurrence of delim. Delimited
// keeps its own copy of delim.
//
// A delimited framing carries only payloads that do not contain delim (nor
// end with the start of it in a way that makes a delimiter appear earlier,
// such as a payload ending in "\r\n" with the delimiter "\r\n\r\n"):
// Write returns [ErrDelimiterInPayload] for the others. It suits text; binary
// formats such as protobuf can contain any byte.
//
// The decoder looks for delim in at most MaxMessageSize+len(delim) bytes: a
// peer that sends that many without a delimiter is sent away with
// [ErrMessageTooLarge], without waiting for more.
//
// The framing's name, as String returns and ParseFraming accepts, is
// "delim:" followed by delim escaped as between the quotes of a Go string
// literal: for "\r\n" it is the 10 characters delim:\r\n, with two
// backslashes. Delimited returns [Lines] for "\n", and an error wrapping
// [ErrInvalidConfig] if delim is empty or longer than MaxMessageSizeLimit.
func Delimited(delim []byte) (Framing, error) {
	switch {
	case len(delim) == 0:
		return nil, fmt.Errorf("%w: empty delimiter", ErrInvalidConfig)
	case len(delim) > MaxMessageSizeLimit:
		return nil, fmt.Errorf("%w: delimiter of %d bytes is longer than MaxMessageSizeLimit", ErrInvalidConfig, len(delim))
	case len(delim) == 1 && delim[0] == '\n':
		return Lines, nil
	}
	d := bytes.Clone(delim)
	q := strconv.Quote(string(d))
	return &delimFraming{delim: d, name: delimPrefix + q[1:len(q)-1], borders: borders(d)}, nil
}

// ParseFraming returns the framing with the given name: "buffstreams" (for
// maxMessageSize, see BuffStreamsFraming), "uvarint", "fixed1", "fixed2",
// "fixed3", "fixed4", "fixed8", "fixed2le", "fixed4le", "fixed8le",
// "fixed4incl", "lines" (for [Lines]), or "delim:" followed by a delimiter
// escaped as between the quotes of a Go string literal, such as delim:\r\n
// or delim:\x00 (see Delimited). Names are case-insensitive; delimiters are
// not. For every Framing f, ParseFraming(f.String(), max) returns a framing
// that writes and reads the same frames.
func ParseFraming(name string, maxMessageSize int) (Framing, error) {
	if len(name) >= len(delimPrefix) && strings.EqualFold(name[:len(delimPrefix)], delimPrefix) {
		d, err := strconv.Unquote(`"` + name[len(delimPrefix):] + `"`)
		if err != nil {
			return nil, fmt.Errorf("%w: framing %q: write the delimiter as the inside of a Go string literal, as in delim:\\r\\n", ErrInvalidConfig, name)
		}
		return Delimited([]byte(d))
	}
	lower := strings.ToLower(name)
	switch lower {
	case "buffstreams", "":
		return BuffStreamsFraming(maxMessageSize), nil
	case "uvarint":
		return Uvarint, nil
	case "lines":
		return Lines, nil
	}
	for _, f := range fixedFramings {
		if f.String() == lower {
			return f, nil
		}
	}
	return nil, fmt.Errorf("%w: unknown framing %q", ErrInvalidConfig, name)
}

// tooLarge reports a declared or requested length above the limit.
func tooLarge(n uint64, limit int) error {
	return fmt.Errorf("%w: length %d exceeds the maximum of %d", ErrMessageTooLarge, n, limit)
}

// zigzagFraming is BuffStreams 2.0's fixed-width header holding a zig-zag
// varint.
type zigzagFraming struct{ width int }

func (f zigzagFraming) String() string { return "buffstreams" }

func (f zigzagFraming) trailer() []byte      { return nil }
func (f zigzagFraming) check(p []byte) error { return nil }

func (f zigzagFraming) maxLen() int {
	// The varint of 2n must fit in width bytes: 2n < 2^(7*width).
	if 7*f.width-1 >= 31 {
		return MaxMessageSizeLimit
	}
	return 1<<(7*f.width-1) - 1
}

// putHeader writes what binary.PutVarint writes for n, which is never
// negative, then zeros up to the width; by hand, as this runs once per
// frame and PutVarint and clear cost twice as much.
func (f zigzagFraming) putHeader(dst []byte, n int) int {
	h := dst[:f.width]
	u := uint64(n) << 1 // zig-zag, for n >= 0
	i := 0
	for ; u >= 0x80; i++ {
		h[i] = byte(u) | 0x80
		u >>= 7
	}
	h[i] = byte(u)
	for i++; i < len(h); i++ {
		h[i] = 0
	}
	return f.width
}

// split reads the header at once in the common case: a minimal varint of
// one or two bytes (a length below 8192) of a length from 0 to limit, then
// zero padding; the width is at least 2. Any other header goes to decode,
// which accepts or rejects it as binary.Varint reads it and says what is
// wrong.
func (f zigzagFraming) split(p []byte, limit int) (start, n, size int, err error) {
	w := f.width
	if len(p) < w {
		return 0, 0, 0, nil
	}
	h := p[:w]
	var u uint64
	k := 1 // bytes of the varint
	switch b0, b1 := h[0], h[1]; {
	case b0 < 0x80:
		u = uint64(b0)
	case b1 < 0x80 && b1 != 0:
		u, k = uint64(b0&0x7f)|uint64(b1)<<7, 2
	default:
		return f.decode(h, limit)
	}
	if u&1 != 0 || u>>1 > uint64(limit) {
		return f.decode(h, limit)
	}
	for _, c := range h[k:] {
		if c != 0 {
			return f.decode(h, limit)
		}
	}
	v := int(u >> 1)
	return w, v, w + v, nil
}

// decode is split's careful path, for the header h.
func (f zigzagFraming) decode(h []byte, limit int) (start, n, size int, err error) {
	v, k := binary.Varint(h)
	switch {
	case k == 0:
		return 0, 0, 0, fmt.Errorf("%w: varint does not end within the %d-byte header % x", ErrMalformedHeader, f.width, h)
	case k < 0:
		return 0, 0, 0, fmt.Errorf("%w: varint overflows in header % x", ErrMalformedHeader, h)
	case k > 1 && h[k-1] == 0:
		return 0, 0, 0, fmt.Errorf("%w: overlong varint in header % x", ErrMalformedHeader, h)
	case v < 0:
		return 0, 0, 0, fmt.Errorf("%w: negative length %d in header % x", ErrMalformedHeader, v, h)
	}
	for _, b := range h[k:] {
		if b != 0 {
			return 0, 0, 0, fmt.Errorf("%w: non-zero padding in header % x", ErrMalformedHeader, h)
		}
	}
	if uint64(v) > uint64(limit) {
		return 0, 0, 0, tooLarge(uint64(v), limit)
	}
	return f.width, int(v), f.width + int(v), nil
}

// uvarintFraming is protobuf's size-delimited format.
type uvarintFraming struct{}

func (uvarintFraming) String() string { return "uvarint" }

func (uvarintFraming) trailer() []byte      { return nil }
func (uvarintFraming) check(p []byte) error { return nil }

func (uvarintFraming) maxLen() int { return MaxMessageSizeLimit }

func (uvarintFraming) putHeader(dst []byte, n int) int {
	return binary.PutUvarint(dst, uint64(n))
}

func (uvarintFraming) split(p []byte, limit int) (start, n, size int, err error) {
	var v uint64
	for i := 0; i < len(p) && i < binary.MaxVarintLen64; i++ {
		b := p[i]
		// Bits beyond the 35th cannot matter except to reject the length:
		// any of them set makes it at least 2^35.
		if i < 5 {
			v |= uint64(b&0x7f) << (7 * i)
		} else if b&0x7f != 0 {
			v = 1 << 63
		}
		if b < 0x80 {
			if v > uint64(limit) {
				if v >= 1<<31 {
					return 0, 0, 0, fmt.Errorf("%w: declared length is 2^31 or more", ErrMessageTooLarge)
				}
				return 0, 0, 0, tooLarge(v, limit)
			}
			return i + 1, int(v), i + 1 + int(v), nil
		}
	}
	if len(p) >= binary.MaxVarintLen64 {
		return 0, 0, 0, fmt.Errorf("%w: varint longer than %d bytes: % x", ErrMalformedHeader, binary.MaxVarintLen64, p[:binary.MaxVarintLen64])
	}
	return 0, 0, 0, nil
}

// fixedFraming is an unsigned length of 1 to 8 bytes, big- or
// little-endian, that counts the payload or, if incl is set, the header too.
type fixedFraming struct {
	width  int
	little bool // little-endian
	incl   bool // the length includes the width bytes of the header
}

func (f fixedFraming) String() string {
	s := "fixed" + strconv.Itoa(f.width)
	if f.little {
		s += "le"
	}
	if f.incl {
		s += "incl"
	}
	return s
}

func (f fixedFraming) trailer() []byte      { return nil }
func (f fixedFraming) check(p []byte) error { return nil }

func (f fixedFraming) maxLen() int {
	if f.width >= 4 {
		return MaxMessageSizeLimit // 2^32-1-width is more
	}
	m := 1<<(8*f.width) - 1
	if f.incl {
		m -= f.width
	}
	return m
}

func (f fixedFraming) putHeader(dst []byte, n int) int {
	v := uint64(n)
	if f.incl {
		v += uint64(f.width)
	}
	switch {
	case f.width == 4 && !f.little:
		binary.BigEndian.PutUint32(dst, uint32(v))
	case f.width == 4:
		binary.LittleEndian.PutUint32(dst, uint32(v))
	default:
		for i := range f.width {
			if f.little {
				dst[i] = byte(v)
			} else {
				dst[f.width-1-i] = byte(v)
			}
			v >>= 8
		}
	}
	return f.width
}

func (f fixedFraming) split(p []byte, limit int) (start, n, size int, err error) {
	if len(p) < f.width {
		return 0, 0, 0, nil
	}
	h := p[:f.width]
	var v uint64
	switch {
	case f.width == 4 && !f.little: // the common case, in one load
		v = uint64(binary.BigEndian.Uint32(h))
	case f.width == 4:
		v = uint64(binary.LittleEndian.Uint32(h))
	default:
		for i := range h {
			if f.little {
				v = v<<8 | uint64(h[len(h)-1-i])
			} else {
				v = v<<8 | uint64(h[i])
			}
		}
	}
	if !f.incl && v <= uint64(limit) {
		return f.width, int(v), f.width + int(v), nil
	}
	return f.checkLen(h, v, limit)
}

// checkLen is split's path for a header h holding v that counts itself,
// or declares too much.
func (f fixedFraming) checkLen(h []byte, v uint64, limit int) (start, n, size int, err error) {
	if f.incl {
		if v < uint64(f.width) {
			return 0, 0, 0, fmt.Errorf("%w: length %d is less than the %d-byte header it counts, in header % x", ErrMalformedHeader, v, f.width, h)
		}
		if v-uint64(f.width) > uint64(limit) {
			return 0, 0, 0, fmt.Errorf("%w: length %d, less the %d-byte header, exceeds the maximum of %d", ErrMessageTooLarge, v, f.width, limit)
		}
		v -= uint64(f.width)
	}
	if v > uint64(limit) {
		return 0, 0, 0, tooLarge(v, limit)
	}
	return f.width, int(v), f.width + int(v), nil
}

// delimFraming ends each payload with a delimiter. It is used through a
// pointer, so that Framing values stay comparable, and never modified after
// Delimited returns it.
type delimFraming struct {
	delim []byte
	name  string // delimPrefix and the escaped delimiter
	// borders are the lengths of delim's proper prefixes that are also
	// suffixes of it (for "\r\n\r\n", 2), longest first: only with such
	// a border can a payload's tail and the delimiter after it contain an
	// earlier delimiter.
	borders []int
}

// borders returns the lengths b, 0 < b < len(d), for which d[:b] equals
// d[len(d)-b:], longest first. It computes the prefix function of d, in
// linear time.
func borders(d []byte) []int {
	pi := make([]int, len(d)) // pi[i]: the longest border of d[:i+1]
	for i := 1; i < len(d); i++ {
		k := pi[i-1]
		for k > 0 && d[i] != d[k] {
			k = pi[k-1]
		}
		if d[i] == d[k] {
			k++
		}
		pi[i] = k
	}
	var out []int
	for b := pi[len(d)-1]; b > 0; b = pi[b-1] {
		out = append(out, b)
	}
	return out
}

func (f *delimFraming) String() string { return f.name }

func (f *delimFraming) maxLen() int { return MaxMessageSizeLimit }

func (f *delimFraming) putHeader(dst []byte, n int) int { return 0 }

// trailer returns the delimiter, which must not be modified; its capacity is
// its length, so appending to it copies.
func (f *delimFraming) trailer() []byte { return f.delim[:len(f.delim):len(f.delim)] }

// check rejects a payload in which the decoder would find the delimiter
// before the one written after it: one that contains the delimiter, or whose
// last bytes and the delimiter after them do.
func (f *delimFraming) check(p []byte) error {
	if i := bytes.Index(p, f.delim); i >= 0 {
		return fmt.Errorf("%w: %s at offset %d", ErrDelimiterInPayload, strconv.Quote(string(f.delim)), i)
	}
	// The delimiter at offset len(p)-k, 0 < k < len(delim), would overlap the
	// written one by len(delim)-k bytes, a border of the delimiter.
	for _, b := range f.borders {
		k := len(f.delim) - b
		if bytes.HasSuffix(p, f.delim[:k]) {
			return fmt.Errorf("%w: %s at offset %d, made of the payload's last %d bytes and the start of the delimiter written after it",
				ErrDelimiterInPayload, strconv.Quote(string(f.delim)), len(p)-k, k)
		}
	}
	return nil
}

// split finds the first delimiter among the first limit+len(delim) bytes of
// p, which is where the delimiter of the largest allowed payload ends. It
// searches all of them on every call, so a frame that arrives in many pieces
// is scanned again with each; a peer cannot make that cost more than the
// limit per piece.
func (f *delimFraming) split(p []byte, limit int) (start, n, size int, err error) {
	window := min(max(limit, 0), MaxMessageSizeLimit) + len(f.delim)
	if i := bytes.Index(p[:min(len(p), window)], f.delim); i >= 0 {
		return 0, i, i + len(f.delim), nil
	}
	if len(p) >= window {
		return 0, 0, 0, fmt.Errorf("%w: no delimiter within %d bytes, the maximum of %d and the %d-byte delimiter",
			ErrMessageTooLarge, window, limit, len(f.delim))
	}
	return 0, 0, 0, nil
}
