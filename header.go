package buffstreams

import (
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
// The framings are the values returned by [BuffStreamsFraming] and
// [ParseFraming] and the variables [Uvarint], [Fixed1], [Fixed2], [Fixed3],
// [Fixed4] and [Fixed8]. The set is closed so that every decoder is strict,
// fuzzed and allocation free; Framing values are safe for concurrent use.
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

// ParseFraming returns the framing with the given name: "buffstreams" (for
// maxMessageSize, see BuffStreamsFraming), "uvarint", "fixed1", "fixed2",
// "fixed3", "fixed4" or "fixed8". Names are case-insensitive.
func ParseFraming(name string, maxMessageSize int) (Framing, error) {
	switch strings.ToLower(name) {
	case "buffstreams", "":
		return BuffStreamsFraming(maxMessageSize), nil
	case "uvarint":
		return Uvarint, nil
	case "fixed1":
		return Fixed1, nil
	case "fixed2":
		return Fixed2, nil
	case "fixed3":
		return Fixed3, nil
	case "fixed4":
		return Fixed4, nil
	case "fixed8":
		return Fixed8, nil
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

func (f zigzagFraming) putHeader(dst []byte, n int) int {
	k := binary.PutVarint(dst, int64(n))
	clear(dst[k:f.width])
	return f.width
}

func (f zigzagFraming) split(p []byte, limit int) (start, n, size int, err error) {
	if len(p) < f.width {
		return 0, 0, 0, nil
	}
	h := p[:f.width]
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

// fixedFraming is an unsigned big-endian length of 1 to 8 bytes.
type fixedFraming struct{ width int }

func (f fixedFraming) String() string { return "fixed" + strconv.Itoa(f.width) }

func (f fixedFraming) trailer() []byte      { return nil }
func (f fixedFraming) check(p []byte) error { return nil }

func (f fixedFraming) maxLen() int {
	if f.width >= 4 {
		return MaxMessageSizeLimit
	}
	return 1<<(8*f.width) - 1
}

func (f fixedFraming) putHeader(dst []byte, n int) int {
	v := uint64(n)
	for i := f.width - 1; i >= 0; i-- {
		dst[i] = byte(v)
		v >>= 8
	}
	return f.width
}

func (f fixedFraming) split(p []byte, limit int) (start, n, size int, err error) {
	if len(p) < f.width {
		return 0, 0, 0, nil
	}
	var v uint64
	for _, b := range p[:f.width] {
		v = v<<8 | uint64(b)
	}
	if v > uint64(limit) {
		return 0, 0, 0, tooLarge(v, limit)
	}
	return f.width, int(v), f.width + int(v), nil
}
