package buffstreams

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// header returns the header f writes for a payload of n bytes.
func header(f Framing, n int) []byte {
	var b [maxHeaderLen]byte
	return b[:f.putHeader(b[:], n)]
}

// mustDelimited returns Delimited(delim) and panics on error.
func mustDelimited(delim string) Framing {
	f, err := Delimited([]byte(delim))
	if err != nil {
		panic(err)
	}
	return f
}

// crlf is the delimited framing most tests use besides Lines: its delimiter
// has two bytes, so it can straddle two reads.
var crlf = mustDelimited("\r\n")

// TestHeaderBytes pins the exact header of every framing. The expected bytes
// follow from each format's definition: the zig-zag varint of n (2n as an
// unsigned varint) padded to the header width for BuffStreams, the minimal
// unsigned varint of n for uvarint, n in big-endian for the fixed widths, n
// in little-endian for the "le" ones, n+4 in big-endian for fixed4incl, and
// nothing for delimited framings, which add a trailer instead.
func TestHeaderBytes(t *testing.T) {
	lengths := []int{0, 1, 63, 64, 127, 128, 255, 4095, 4096}
	want := map[string][]string{
		"buffstreams/4096": {"000000", "020000", "7e0000", "800100", "fe0100", "800200", "fe0300", "fe3f00", "804000"},
		"uvarint":          {"00", "01", "3f", "40", "7f", "8001", "ff01", "ff1f", "8020"},
		"fixed1":           {"00", "01", "3f", "40", "7f", "80", "ff", "", ""},
		"fixed2":           {"0000", "0001", "003f", "0040", "007f", "0080", "00ff", "0fff", "1000"},
		"fixed3":           {"000000", "000001", "00003f", "000040", "00007f", "000080", "0000ff", "000fff", "001000"},
		"fixed4":           {"00000000", "00000001", "0000003f", "00000040", "0000007f", "00000080", "000000ff", "00000fff", "00001000"},
		"fixed8":           {"0000000000000000", "0000000000000001", "000000000000003f", "0000000000000040", "000000000000007f", "0000000000000080", "00000000000000ff", "0000000000000fff", "0000000000001000"},
		"fixed2le":         {"0000", "0100", "3f00", "4000", "7f00", "8000", "ff00", "ff0f", "0010"},
		"fixed4le":         {"00000000", "01000000", "3f000000", "40000000", "7f000000", "80000000", "ff000000", "ff0f0000", "00100000"},
		"fixed8le":         {"0000000000000000", "0100000000000000", "3f00000000000000", "4000000000000000", "7f00000000000000", "8000000000000000", "ff00000000000000", "ff0f000000000000", "0010000000000000"},
		"fixed4incl":       {"00000004", "00000005", "00000043", "00000044", "00000083", "00000084", "00000103", "00001003", "00001004"},
		"lines":            {"", "", "", "", "", "", "", "", ""},
		"crlf":             {"", "", "", "", "", "", "", "", ""},
	}
	framings := map[string]Framing{
		"buffstreams/4096": BuffStreamsFraming(4096),
		"uvarint":          Uvarint, "fixed1": Fixed1, "fixed2": Fixed2,
		"fixed3": Fixed3, "fixed4": Fixed4, "fixed8": Fixed8,
		"fixed2le": Fixed2LE, "fixed4le": Fixed4LE, "fixed8le": Fixed8LE,
		"fixed4incl": Fixed4Inclusive, "lines": Lines, "crlf": crlf,
	}
	for name, f := range framings {
		for i, n := range lengths {
			exp := want[name][i]
			if n > f.maxLen() || f.trailer() != nil {
				if exp != "" {
					t.Errorf("%s: length %d should fit (max %d)", name, n, f.maxLen())
				}
				continue
			}
			got := hex.EncodeToString(header(f, n))
			if got != exp {
				t.Errorf("%s: header(%d) = %s, want %s", name, n, got, exp)
			}
		}
	}
}

// TestFrameBytes pins whole frames, header, payload and trailer, of the
// framings added after BuffStreams 2.0, including lengths whose bytes all
// differ, so that a swapped byte order cannot pass.
func TestFrameBytes(t *testing.T) {
	hello := hex.EncodeToString([]byte("hello world"))
	for _, tc := range []struct {
		f    Framing
		p    string // payload, or "" for n zero bytes
		n    int
		want string
	}{
		{Fixed2LE, "hello world", 0, "0b00" + hello},
		{Fixed4LE, "hello world", 0, "0b000000" + hello},
		{Fixed8LE, "hello world", 0, "0b00000000000000" + hello},
		{Fixed4Inclusive, "hello world", 0, "0000000f" + hello},
		{Lines, "hello world", 0, hello + "0a"},
		{crlf, "hello world", 0, hello + "0d0a"},
		{mustDelimited("\x00"), "hello world", 0, hello + "00"},
		{Fixed2LE, "", 0, "0000"},
		{Fixed4Inclusive, "", 0, "00000004"},
		{Lines, "", 0, "0a"},
		{crlf, "", 0, "0d0a"},
		{Fixed2LE, "", 0x1234, "3412"},
		{Fixed2LE, "", 65535, "ffff"},
		{Fixed4LE, "", 0x123456, "56341200"},
		{Fixed8LE, "", 0x123456, "5634120000000000"},
		{Fixed4Inclusive, "", 0x123456, "0012345a"},
		{Fixed4Inclusive, "", 252, "00000100"},
	} {
		p := []byte(tc.p)
		if tc.p == "" {
			p = make([]byte, tc.n)
		}
		got := hex.EncodeToString(encodeFrames(tc.f, [][]byte{p}))
		want := tc.want
		if tc.p == "" {
			want += strings.Repeat("00", tc.n)
		}
		if got != want {
			t.Errorf("%s: frame of %d bytes = %.40s..., want %.40s...", tc.f, len(p), got, want)
		}
		if err := tc.f.check(p); err != nil {
			t.Errorf("%s: check(%d bytes) = %v", tc.f, len(p), err)
		}
	}
}

// TestBuffStreams2Headers checks the frames BuffStreams 2.0 produced.
func TestBuffStreams2Headers(t *testing.T) {
	for _, tc := range []struct {
		max, n int
		want   string
	}{
		{4096, 110, "dc0100"},
		{4096, 63, "7e0000"},
		{4096, 64, "800100"},
		{4096, 4095, "fe3f00"},
		{255, 255, "fe03"},
		{255, 0, "0000"},
		{0, 110, "dc0100"}, // zero means DefaultMaxMessageSize
		{65535, 65535, "feff07"},
		{65536, 1, "02000000"},
		{1 << 24, 1, "0200000000"},
		{1<<31 - 1, 1<<31 - 1, "feffffff0f"},
	} {
		f := BuffStreamsFraming(tc.max)
		if got := hex.EncodeToString(header(f, tc.n)); got != tc.want {
			t.Errorf("max %d: header(%d) = %s, want %s", tc.max, tc.n, got, tc.want)
		}
	}
}

func TestUvarintVectors(t *testing.T) {
	for n, want := range map[int]string{
		0: "00", 127: "7f", 128: "8001", 300: "ac02", 16384: "808001", 1<<31 - 1: "ffffffff07",
	} {
		if got := hex.EncodeToString(header(Uvarint, n)); got != want {
			t.Errorf("header(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestFramingMaxLen(t *testing.T) {
	for _, tc := range []struct {
		f    Framing
		want int
	}{
		{BuffStreamsFraming(255), 1<<13 - 1},
		{BuffStreamsFraming(4096), 1<<20 - 1},
		{BuffStreamsFraming(1 << 20), 1<<27 - 1},
		{BuffStreamsFraming(1 << 30), MaxMessageSizeLimit},
		{Uvarint, MaxMessageSizeLimit},
		{Fixed1, 255}, {Fixed2, 65535}, {Fixed3, 1<<24 - 1},
		{Fixed4, MaxMessageSizeLimit}, {Fixed8, MaxMessageSizeLimit},
		{Fixed2LE, 65535}, {Fixed4LE, MaxMessageSizeLimit}, {Fixed8LE, MaxMessageSizeLimit},
		{Fixed4Inclusive, MaxMessageSizeLimit},
		// Widths below 4 lose the header's bytes from the range.
		{fixedFraming{width: 1, incl: true}, 254},
		{fixedFraming{width: 2, incl: true}, 65533},
		{fixedFraming{width: 2, little: true, incl: true}, 65533},
		{fixedFraming{width: 3, incl: true}, 1<<24 - 4},
		{Lines, MaxMessageSizeLimit}, {crlf, MaxMessageSizeLimit},
	} {
		if got := tc.f.maxLen(); got != tc.want {
			t.Errorf("%s: maxLen = %d, want %d", tc.f, got, tc.want)
		}
		if tc.f.trailer() != nil {
			continue // no header; TestDelimitedLimit covers the limit
		}
		// The largest length must encode and decode.
		frame := append(header(tc.f, tc.want), make([]byte, 0)...)
		if _, n, _, err := tc.f.split(frame, tc.want); err != nil || n != tc.want {
			t.Errorf("%s: split(header(%d)) = %d, %v", tc.f, tc.want, n, err)
		}
	}
}

// TestSplitRejects feeds malformed and oversized headers to each decoder.
func TestSplitRejects(t *testing.T) {
	bs := BuffStreamsFraming(4096)
	for _, tc := range []struct {
		name string
		f    Framing
		max  int
		in   string
		want error
	}{
		{"negative -1", bs, 4096, "010000", ErrMalformedHeader},
		{"negative -2", bs, 4096, "030000", ErrMalformedHeader},
		{"negative large", bs, 4096, "ffff7f", ErrMalformedHeader},
		{"padding", bs, 4096, "020100", ErrMalformedHeader},
		{"padding last", bs, 4096, "7e0001", ErrMalformedHeader},
		{"unterminated", bs, 4096, "808080", ErrMalformedHeader},
		{"overlong zero", bs, 4096, "800000", ErrMalformedHeader},
		{"overlong 1", bs, 4096, "828000", ErrMalformedHeader},
		{"above max", bs, 4096, "824000", ErrMessageTooLarge},
		{"above small max", bs, 100, "ca0100", ErrMessageTooLarge},
		{"2 GiB", BuffStreamsFraming(MaxMessageSizeLimit), 4096, "8080808010", ErrMessageTooLarge},
		{"uvarint above max", Uvarint, 4096, "8120", ErrMessageTooLarge},
		{"uvarint 2^31", Uvarint, MaxMessageSizeLimit, "8080808008", ErrMessageTooLarge},
		{"uvarint 2^35", Uvarint, MaxMessageSizeLimit, "808080808001", ErrMessageTooLarge},
		{"uvarint 10 bytes, huge", Uvarint, MaxMessageSizeLimit, "ffffffffffffffffff01", ErrMessageTooLarge},
		{"uvarint 11 bytes", Uvarint, MaxMessageSizeLimit, "8080808080808080808000", ErrMalformedHeader},
		{"uvarint 10 continuation bytes", Uvarint, MaxMessageSizeLimit, "80808080808080808080", ErrMalformedHeader},
		{"fixed1 above max", Fixed1, 100, "65", ErrMessageTooLarge},
		{"fixed2 above max", Fixed2, 4096, "1001", ErrMessageTooLarge},
		{"fixed3 above max", Fixed3, 4096, "ffffff", ErrMessageTooLarge},
		{"fixed4 2 GiB", Fixed4, 4096, "80000000", ErrMessageTooLarge},
		{"fixed4 max uint32", Fixed4, MaxMessageSizeLimit, "ffffffff", ErrMessageTooLarge},
		{"fixed8 sign bit", Fixed8, MaxMessageSizeLimit, "8000000000000000", ErrMessageTooLarge},
		{"fixed8 2^32", Fixed8, MaxMessageSizeLimit, "0000000100000000", ErrMessageTooLarge},
		{"fixed2le above max (fits as big-endian)", Fixed2LE, 4096, "0110", ErrMessageTooLarge},
		{"fixed4le above max", Fixed4LE, 4096, "01100000", ErrMessageTooLarge},
		{"fixed4le 2 GiB", Fixed4LE, MaxMessageSizeLimit, "00000080", ErrMessageTooLarge},
		{"fixed4le max uint32", Fixed4LE, MaxMessageSizeLimit, "ffffffff", ErrMessageTooLarge},
		{"fixed8le above max", Fixed8LE, 4096, "0110000000000000", ErrMessageTooLarge},
		{"fixed8le sign bit", Fixed8LE, MaxMessageSizeLimit, "0000000000000080", ErrMessageTooLarge},
		{"fixed8le 2^32", Fixed8LE, MaxMessageSizeLimit, "0000000001000000", ErrMessageTooLarge},
		{"fixed8le max uint64", Fixed8LE, MaxMessageSizeLimit, "ffffffffffffffff", ErrMessageTooLarge},
		{"fixed4incl 0", Fixed4Inclusive, 4096, "00000000", ErrMalformedHeader},
		{"fixed4incl 1", Fixed4Inclusive, 4096, "00000001", ErrMalformedHeader},
		{"fixed4incl 3", Fixed4Inclusive, 4096, "00000003", ErrMalformedHeader},
		{"fixed4incl 3, payload follows", Fixed4Inclusive, 4096, "00000003ffffffff", ErrMalformedHeader},
		{"fixed4incl above max", Fixed4Inclusive, 4096, "00001005", ErrMessageTooLarge},
		{"fixed4incl above zero max", Fixed4Inclusive, 0, "00000005", ErrMessageTooLarge},
		{"fixed4incl 2 GiB payload", Fixed4Inclusive, MaxMessageSizeLimit, "80000004", ErrMessageTooLarge},
		{"fixed4incl max uint32", Fixed4Inclusive, MaxMessageSizeLimit, "ffffffff", ErrMessageTooLarge},
		{"fixed2incl 1", fixedFraming{width: 2, incl: true}, 4096, "0001", ErrMalformedHeader},
		{"lines no newline within max+1", Lines, 4, "6161616161", ErrMessageTooLarge},
		{"lines newline after max+1", Lines, 4, "61616161610a", ErrMessageTooLarge},
		{"lines zero max", Lines, 0, "61", ErrMessageTooLarge},
		{"crlf no delimiter within max+2", crlf, 4, "616161616161", ErrMessageTooLarge},
		{"crlf CR at max+1, LF beyond", crlf, 4, "61616161610d0a", ErrMessageTooLarge},
		{"crlf LF without CR", crlf, 4, "6161610a0a0a", ErrMessageTooLarge},
		{"crlf zero max", crlf, 0, "610d0a", ErrMessageTooLarge},
	} {
		in, err := hex.DecodeString(tc.in)
		if err != nil {
			t.Fatalf("%s: bad hex in the table: %v", tc.name, err)
		}
		_, _, _, err = tc.f.split(in, tc.max)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: split(%.40s) error = %v, want %v", tc.name, tc.in, err, tc.want)
		}
	}
}

// TestSplitAccepts covers inputs that strict decoding must still accept,
// and incomplete headers, which must ask for more bytes rather than fail.
func TestSplitAccepts(t *testing.T) {
	bs := BuffStreamsFraming(4096)
	for _, tc := range []struct {
		name    string
		f       Framing
		in      string
		start   int
		n, size int
	}{
		{"bs empty", bs, "", 0, 0, 0},
		{"bs partial header", bs, "dc01", 0, 0, 0},
		{"bs header only", bs, "dc0100", 3, 110, 113},
		{"bs max", bs, "804000", 3, 4096, 4099},
		{"uvarint empty", Uvarint, "", 0, 0, 0},
		{"uvarint partial", Uvarint, "8080", 0, 0, 0},
		{"uvarint 9 continuation bytes", Uvarint, "808080808080808080", 0, 0, 0},
		{"uvarint non-minimal zero", Uvarint, "8000", 2, 0, 2},
		{"uvarint 10-byte 1", Uvarint, "81808080808080808000", 10, 1, 11},
		{"uvarint 300", Uvarint, "ac02", 2, 300, 302},
		{"fixed4 partial", Fixed4, "000000", 0, 0, 0},
		{"fixed4 11", Fixed4, "0000000b68656c6c6f", 4, 11, 15},
		{"fixed8 4096", Fixed8, "0000000000001000", 8, 4096, 4104},
		{"fixed2le partial", Fixed2LE, "0b", 0, 0, 0},
		{"fixed2le 11", Fixed2LE, "0b0068656c6c6f", 2, 11, 13},
		{"fixed2le 4096", Fixed2LE, "0010", 2, 4096, 4098},
		{"fixed4le partial", Fixed4LE, "0b0000", 0, 0, 0},
		{"fixed4le 11", Fixed4LE, "0b00000068656c6c6f", 4, 11, 15},
		{"fixed4le 4096", Fixed4LE, "00100000", 4, 4096, 4100},
		{"fixed8le partial", Fixed8LE, "00100000000000", 0, 0, 0},
		{"fixed8le 4096", Fixed8LE, "0010000000000000", 8, 4096, 4104},
		{"fixed4incl partial", Fixed4Inclusive, "000000", 0, 0, 0},
		{"fixed4incl empty payload", Fixed4Inclusive, "00000004", 4, 0, 4},
		{"fixed4incl 11", Fixed4Inclusive, "0000000f68656c6c6f", 4, 11, 15},
		{"fixed4incl 4096", Fixed4Inclusive, "00001004", 4, 4096, 4100},
		{"lines empty", Lines, "", 0, 0, 0},
		{"lines partial", Lines, "6162", 0, 0, 0},
		{"lines empty payload", Lines, "0a", 0, 0, 1},
		{"lines first of two", Lines, "610a620a", 0, 1, 2},
		{"lines CR is payload", Lines, "0d0a", 0, 1, 2},
		{"lines max", Lines, strings.Repeat("61", 4096) + "0a", 0, 4096, 4097},
		{"lines max, newline pending", Lines, strings.Repeat("61", 4096), 0, 0, 0},
		{"crlf CR only", crlf, "0d", 0, 0, 0},
		{"crlf CR last", crlf, "61620d", 0, 0, 0},
		{"crlf empty payload", crlf, "0d0a", 0, 0, 2},
		{"crlf CR in payload", crlf, "0d0d0a", 0, 1, 3},
		{"crlf LF in payload", crlf, "0a0d0a", 0, 1, 3},
		{"crlf LF CR in payload", crlf, "0a0d0d0a", 0, 2, 4},
		{"crlf max", crlf, strings.Repeat("61", 4096) + "0d0a", 0, 4096, 4098},
		{"crlf max, CR at the boundary", crlf, strings.Repeat("61", 4096) + "0d", 0, 0, 0},
		{"crlf max, then more", crlf, strings.Repeat("61", 4096) + "0d0a6162", 0, 4096, 4098},
	} {
		in, err := hex.DecodeString(tc.in)
		if err != nil {
			t.Fatalf("%s: bad hex in the table: %v", tc.name, err)
		}
		start, n, size, err := tc.f.split(in, 4096)
		if err != nil || start != tc.start || n != tc.n || size != tc.size {
			t.Errorf("%s: split(%.40s) = %d, %d, %d, %v; want %d, %d, %d, nil", tc.name, tc.in, start, n, size, err, tc.start, tc.n, tc.size)
		}
	}
}

func TestParseFraming(t *testing.T) {
	for name, want := range map[string]string{
		"buffstreams": "buffstreams", "": "buffstreams", "UVARINT": "uvarint",
		"fixed1": "fixed1", "fixed2": "fixed2", "fixed3": "fixed3", "fixed4": "fixed4", "fixed8": "fixed8",
		"fixed2le": "fixed2le", "fixed4le": "fixed4le", "Fixed8LE": "fixed8le", "fixed4incl": "fixed4incl",
		"lines": `delim:\n`, `delim:\n`: `delim:\n`, `Delim:\r\n`: `delim:\r\n`, `DELIM:\x00`: `delim:\x00`,
		`delim:\t`: `delim:\t`, `delim:;`: `delim:;`, `delim:\x0A`: `delim:\n`, `delim:\u00e9`: `delim:é`,
		`delim:é`: `delim:é`, `delim:\xff\xfe`: `delim:\xff\xfe`, `delim:\"`: `delim:\"`, `delim:\\`: `delim:\\`,
		`delim:'`: `delim:'`, `delim:\R\N`: "", `delim:delim:`: `delim:delim:`, `delim:\x00\r\n`: `delim:\x00\r\n`,
	} {
		f, err := ParseFraming(name, 4096)
		if want == "" {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("ParseFraming(%q) error = %v, want ErrInvalidConfig", name, err)
			}
			continue
		}
		if err != nil || f.String() != want {
			t.Errorf("ParseFraming(%q) = %v, %v; want %s", name, f, err, want)
		}
	}
	for _, bad := range []string{
		"fixed5", "varint", "delim", "delim:", "fixed4be", "fixed1le", "fixed3le", "fixed4leincl",
		"fixed8incl", "lines:", "line", `delim:"`, `delim:\`, `delim:\q`, "delim:\n", `delim:\400`,
	} {
		if _, err := ParseFraming(bad, 4096); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseFraming(%q) error = %v, want ErrInvalidConfig", bad, err)
		}
	}
	if f, _ := ParseFraming("lines", 4096); f != Lines {
		t.Errorf(`ParseFraming("lines") is not Lines`)
	}
	if f, _ := ParseFraming(Lines.String(), 4096); f != Lines {
		t.Errorf("ParseFraming(%q) is not Lines", Lines)
	}
}

// TestFramingStringRoundTrip checks that every framing's name parses back
// into a framing that writes the same frames and reads them the same way.
func TestFramingStringRoundTrip(t *testing.T) {
	all := []Framing{
		BuffStreamsFraming(4096), Uvarint, Fixed1, Fixed2, Fixed3, Fixed4, Fixed8,
		Fixed2LE, Fixed4LE, Fixed8LE, Fixed4Inclusive, Lines, crlf,
	}
	for _, d := range []string{"\x00", "\r\n\r\n", `"`, `\`, "\xff\xfe", "é", ":", "delim:", " ", "\t\v\f", "\u2028", "\x7f", "aa\nbb"} {
		all = append(all, mustDelimited(d))
	}
	payloads := [][]byte{{}, []byte("x"), []byte("hello world"), make([]byte, 300)}
	for _, f := range all {
		g, err := ParseFraming(f.String(), 4096)
		if err != nil {
			t.Errorf("ParseFraming(%q): %v", f, err)
			continue
		}
		if g.String() != f.String() || !bytes.Equal(g.trailer(), f.trailer()) || g.maxLen() != f.maxLen() {
			t.Errorf("%q parses as %q, trailer %q, maxLen %d", f, g, g.trailer(), g.maxLen())
		}
		var ok [][]byte
		for _, p := range payloads {
			if f.check(p) == nil {
				ok = append(ok, p)
			}
		}
		if a, b := encodeFrames(f, ok), encodeFrames(g, ok); !bytes.Equal(a, b) {
			t.Errorf("%q and its parsed copy write different frames: %x, %x", f, a, b)
		}
	}
}

func TestDelimitedConstruction(t *testing.T) {
	for _, bad := range [][]byte{nil, {}} {
		if f, err := Delimited(bad); !errors.Is(err, ErrInvalidConfig) || f != nil {
			t.Errorf("Delimited(%q) = %v, %v; want ErrInvalidConfig", bad, f, err)
		}
	}
	if f, err := Delimited([]byte("\n")); err != nil || f != Lines {
		t.Errorf(`Delimited("\n") = %v, %v; want Lines`, f, err)
	}
	// The framing keeps its own copy, and its trailer cannot be appended to
	// in place.
	d := []byte("\r\n")
	f, err := Delimited(d)
	if err != nil {
		t.Fatal(err)
	}
	d[0], d[1] = 'x', 'y'
	tr := f.trailer()
	if string(tr) != "\r\n" || f.String() != `delim:\r\n` || cap(tr) != len(tr) {
		t.Errorf("after changing the caller's slice: trailer %q (cap %d), name %q", tr, cap(tr), f)
	}
	if f == crlf {
		t.Errorf("two calls of Delimited returned the same value")
	}
	// Framings are comparable: a map key or == must not panic.
	_ = map[Framing]bool{f: true, Lines: true, Fixed4: true}
}

// TestDelimitedCheck lists payloads a delimited framing must refuse because
// the decoder would find a delimiter before the one written after them.
func TestDelimitedCheck(t *testing.T) {
	for _, tc := range []struct {
		delim, p string
		ok       bool
	}{
		{"\n", "", true},
		{"\n", "abc", true},
		{"\n", "abc\r", true},
		{"\n", "a\nb", false},
		{"\n", "\n", false},
		{"\n", "abc\n", false},
		{"\r\n", "a\r", true},
		{"\r\n", "\n\r", true},
		{"\r\n", "\r", true},
		{"\r\n", "\n", true},
		{"\r\n", "a\r\nb", false},
		{"\r\n", "\r\n", false},
		{"\r\n\r\n", "a\r\n", false}, // a\r\n + \r\n\r\n holds \r\n\r\n at 1
		{"\r\n\r\n", "\r\n", false},
		{"\r\n\r\n", "\n\r\n", false},
		{"\r\n\r\n", "a\r\n\r", true},
		{"\r\n\r\n", "a\r", true},
		{"\r\n\r\n", "a\r\na", true},
		{"\r\n\r\n", "a\r\n\r\nb", false},
		{"aa", "a", false},
		{"aa", "ba", false},
		{"aa", "ab", true},
		{"aa", "b", true},
		{"aaa", "a", false},
		{"aaa", "aa", false},
		{"aaa", "ba", false},
		{"aaa", "b", true},
		{"abab", "ab", false},
		{"abab", "xab", false},
		{"abab", "aba", true},
		{"abab", "a", true},
		{"abab", "abx", true},
		{"abcab", "xabc", false}, // xabc + abcab holds abcab at 1
		{"abcab", "xab", true},
		{"abcab", "xa", true},
	} {
		err := mustDelimited(tc.delim).check([]byte(tc.p))
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrDelimiterInPayload) {
			t.Errorf("delimiter %q: check(%q) = %v, want ok %v", tc.delim, tc.p, err, tc.ok)
		}
	}
}

// TestDelimitedCheckExhaustive compares check with its definition, for every
// delimiter and payload over a two-letter alphabet up to a few bytes: a
// payload is accepted exactly when the first delimiter in payload+delim is
// the one after the payload. Then the decoder reads that payload back.
func TestDelimitedCheckExhaustive(t *testing.T) {
	words := func(maxLen int) []string {
		out := []string{""}
		for i := 0; i < len(out); i++ {
			if len(out[i]) < maxLen {
				out = append(out, out[i]+"a", out[i]+"b")
			}
		}
		return out
	}
	payloads := words(7)
	for _, d := range words(5)[1:] {
		f := mustDelimited(d)
		for _, p := range payloads {
			frame := p + d
			want := strings.Index(frame, d) == len(p)
			if got := f.check([]byte(p)) == nil; got != want {
				t.Fatalf("delimiter %q: check(%q) ok = %v, want %v", d, p, got, want)
			}
			start, n, size, err := f.split([]byte(frame+"ab"), len(p))
			if err != nil || want != (start == 0 && n == len(p) && size == len(frame)) {
				t.Fatalf("delimiter %q, payload %q: split = %d, %d, %d, %v", d, p, start, n, size, err)
			}
		}
	}
}

// TestDelimitedLimit checks the search window: a payload of exactly the
// limit is found with its delimiter arriving in any pieces, even when the
// delimiter straddles the end of the window; one byte more is refused as
// soon as limit+len(delim) bytes hold no delimiter, without reading on.
func TestDelimitedLimit(t *testing.T) {
	const limit = 100
	boom := errors.New("read past the limit")
	for _, f := range []Framing{Lines, crlf, mustDelimited("\r\n\r\n"), mustDelimited("aab")} {
		d := f.trailer()
		w := wire{framing: f, max: limit}
		atLimit := append(bytes.Repeat([]byte("a"), limit), d...)
		over := append(bytes.Repeat([]byte("a"), limit+1), d...)
		if f.String() == `delim:aab` {
			atLimit = append(bytes.Repeat([]byte("b"), limit), d...)
			over = append(bytes.Repeat([]byte("b"), limit+1), d...)
		}
		for chunk := 1; chunk <= len(atLimit); chunk++ {
			fr := newFrameReader(chunkReader{bytes.NewReader(atLimit), chunk}, w)
			if p, err := fr.next(); err != nil || len(p) != limit {
				t.Fatalf("%s chunk %d: payload of %d bytes, %v; want %d bytes", f, chunk, len(p), err, limit)
			}
			// The window ends one byte before the delimiter would: the
			// frame is refused from exactly limit+len(delim) bytes on.
			src := io.MultiReader(bytes.NewReader(over[:limit+len(d)]), iotest.ErrReader(boom))
			fr = newFrameReader(chunkReader{src, chunk}, w)
			if _, err := fr.next(); !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("%s chunk %d: %d bytes without a delimiter: %v, want ErrMessageTooLarge", f, chunk, limit+len(d), err)
			}
			// One byte less might still end in a delimiter: wait for it.
			fr = newFrameReader(chunkReader{bytes.NewReader(over[:limit+len(d)-1]), chunk}, w)
			if _, err := fr.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%s chunk %d: %d bytes: %v, want io.ErrUnexpectedEOF", f, chunk, limit+len(d)-1, err)
			}
		}
	}
}

// encodeFrames frames each payload with f.
func encodeFrames(f Framing, payloads [][]byte) []byte {
	var out []byte
	for _, p := range payloads {
		out = append(out, header(f, len(p))...)
		out = append(out, p...)
		out = append(out, f.trailer()...)
	}
	return out
}

// chunkReader returns at most n bytes per Read, to split frames anywhere.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// allocFramings are the framings whose hot paths must not allocate.
var allocFramings = []Framing{
	BuffStreamsFraming(4096), Uvarint, Fixed1, Fixed2, Fixed3, Fixed4, Fixed8,
	Fixed2LE, Fixed4LE, Fixed8LE, Fixed4Inclusive, Lines, crlf, mustDelimited("\r\n\r\n"),
}

// TestFramingAllocs checks that the writer's calls allocate nothing.
func TestFramingAllocs(t *testing.T) {
	payload := []byte("a payload of text, no delimiter")
	dst := make([]byte, maxHeaderLen)
	for _, f := range allocFramings {
		allocs := testing.AllocsPerRun(1000, func() {
			if f.check(payload) != nil {
				panic("payload refused")
			}
			f.putHeader(dst, len(payload))
			_ = f.trailer()
			_, _, _, _ = f.split(dst, 4096)
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per frame written, want 0", f, allocs)
		}
	}
}

// fuzzFraming is the body of each framing's fuzz target. It decodes data as
// a stream of frames, in chunks whose size data chooses, checking that the
// decoder neither panics nor hands out or buffers more than the limit; then
// it frames payloads cut from data and checks they decode unchanged.
func fuzzFraming(f *testing.F, fr Framing, limit int, seeds ...[]byte) {
	for _, seed := range fuzzSeeds(fr) {
		f.Add(seed)
	}
	for _, seed := range seeds {
		f.Add(seed)
	}
	w := wire{framing: fr, max: min(limit, fr.maxLen())}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzFrames(t, w, data) })
}

// fuzzSeeds returns inputs every fuzz target starts from.
func fuzzSeeds(fr Framing) [][]byte {
	return [][]byte{
		nil, {0}, {1}, {0xff}, {0x80, 0x80, 0x80},
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		encodeFrames(fr, [][]byte{[]byte("hello"), {}, []byte("world")}),
	}
}

// fuzzFrames checks the decoder of w.framing on data, then round trips
// payloads cut from data, leaving out those the framing cannot carry.
func fuzzFrames(t *testing.T, w wire, data []byte) {
	fr := w.framing
	chunk := 1
	if len(data) > 0 {
		chunk = int(data[0])%64 + 1
	}
	rd := newFrameReader(chunkReader{bytes.NewReader(data), chunk}, w)
	consumed := 0
	for {
		p, err := rd.next()
		if err != nil {
			if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) &&
				!errors.Is(err, ErrMalformedHeader) && !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("unexpected error %v", err)
			}
			break
		}
		if len(p) > w.max {
			t.Fatalf("payload of %d bytes exceeds the limit %d", len(p), w.max)
		}
		// What the decoder hands out, the encoder can send back.
		if err := fr.check(p); err != nil {
			t.Fatalf("decoded payload %q refused by check: %v", p, err)
		}
		consumed += rd.last
	}
	if consumed > len(data) {
		t.Fatalf("consumed %d of %d bytes", consumed, len(data))
	}
	if c := cap(rd.buf); c > max(readBufferSize, maxHeaderLen+w.max) {
		t.Fatalf("buffer of %d bytes for a limit of %d", c, w.max)
	}

	// Round trip: cut data into payloads whose lengths data chooses.
	var payloads [][]byte
	for rest := data; len(rest) > 0; {
		n := min(len(rest), int(rest[0])%(w.max+1))
		if p := rest[:n]; fr.check(p) == nil {
			payloads = append(payloads, p)
		}
		rest = rest[max(n, 1):]
	}
	rd = newFrameReader(chunkReader{bytes.NewReader(encodeFrames(fr, payloads)), chunk}, w)
	for i, want := range payloads {
		got, err := rd.next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("round trip of message %d (%d bytes): got %d bytes, %v", i, len(want), len(got), err)
		}
	}
	if _, err := rd.next(); err != io.EOF {
		t.Fatalf("after the last message: %v", err)
	}
}

func FuzzBuffStreams(f *testing.F) { fuzzFraming(f, BuffStreamsFraming(4096), 4096) }
func FuzzUvarint(f *testing.F)     { fuzzFraming(f, Uvarint, 1<<16) }
func FuzzFixed1(f *testing.F)      { fuzzFraming(f, Fixed1, 4096) }
func FuzzFixed2(f *testing.F)      { fuzzFraming(f, Fixed2, 1<<16) }
func FuzzFixed3(f *testing.F)      { fuzzFraming(f, Fixed3, 1<<16) }
func FuzzFixed4(f *testing.F)      { fuzzFraming(f, Fixed4, 1<<16) }
func FuzzFixed8(f *testing.F)      { fuzzFraming(f, Fixed8, 1<<16) }
func FuzzFixed2LE(f *testing.F)    { fuzzFraming(f, Fixed2LE, 1<<16) }
func FuzzFixed4LE(f *testing.F)    { fuzzFraming(f, Fixed4LE, 1<<16) }
func FuzzFixed8LE(f *testing.F)    { fuzzFraming(f, Fixed8LE, 1<<16) }

func FuzzFixed4Inclusive(f *testing.F) {
	fuzzFraming(f, Fixed4Inclusive, 1<<16,
		[]byte{0, 0, 0, 0}, []byte{0, 0, 0, 3, 0, 0, 0, 4}, []byte{0, 0, 0, 4, 0, 0, 0, 5, 'x'},
		[]byte{0, 1, 0, 4}, []byte{0, 1, 0, 5}, []byte{0xff, 0xff, 0xff, 0xff})
}

// FuzzHeaderFastPaths compares the one-pass parsers of the BuffStreams and
// fixed-width headers with the definitions they shortcut: for the
// BuffStreams framing, binary.Varint and the checks after it (decode);
// for fixed widths, the length read byte by byte. Both the result and the
// error's text must agree, for every width and any limit.
func FuzzHeaderFastPaths(f *testing.F) {
	for _, h := range [][]byte{
		{0xdc, 0x01, 0, 0}, {0x00, 0, 0}, {0x02, 0, 0}, {0x01, 0, 0}, {0x80, 0x00, 0, 0},
		{0xdc, 0x01, 1, 0}, {0xff, 0xff, 0xff, 0xff, 0x0f}, {0x80, 0x80, 0x01, 0}, {0, 0, 0, 4},
	} {
		f.Add(h, uint32(4096))
	}
	f.Fuzz(func(t *testing.T, h []byte, limit32 uint32) {
		limit := int(limit32 % (MaxMessageSizeLimit + 1))
		for w := 2; w <= 9 && w <= len(h); w++ {
			z := zigzagFraming{width: w}
			s1, n1, z1, err1 := z.split(h, limit)
			s2, n2, z2, err2 := z.decode(h[:w], limit)
			if s1 != s2 || n1 != n2 || z1 != z2 || fmt.Sprint(err1) != fmt.Sprint(err2) {
				t.Fatalf("width %d, limit %d, % x: split (%d, %d, %d, %v), decode (%d, %d, %d, %v)",
					w, limit, h[:w], s1, n1, z1, err1, s2, n2, z2, err2)
			}
		}
		for _, fr := range []fixedFraming{{width: 4}, {width: 4, little: true}, {width: 4, incl: true}, {width: 2}, {width: 8, little: true}} {
			if len(h) < fr.width {
				continue
			}
			var v uint64
			for i := range fr.width {
				if fr.little {
					v |= uint64(h[i]) << (8 * i)
				} else {
					v = v<<8 | uint64(h[i])
				}
			}
			s1, n1, z1, err1 := fr.split(h, limit)
			s2, n2, z2, err2 := fr.checkLen(h[:fr.width], v, limit)
			if s1 != s2 || n1 != n2 || z1 != z2 || fmt.Sprint(err1) != fmt.Sprint(err2) {
				t.Fatalf("%s, limit %d, % x: split (%d, %d, %d, %v), byte by byte (%d, %d, %d, %v)",
					fr, limit, h[:fr.width], s1, n1, z1, err1, s2, n2, z2, err2)
			}
			dst := make([]byte, maxHeaderLen)
			if fr.putHeader(dst, n2); err2 == nil && !bytes.Equal(dst[:fr.width], h[:fr.width]) {
				t.Fatalf("%s: putHeader(%d) = % x, want % x", fr, n2, dst[:fr.width], h[:fr.width])
			}
		}
	})
}

// FuzzDelimited fuzzes the delimiter as well as the input. Besides the
// properties every framing has, it compares split with a plain search for
// the delimiter, and check with its definition: a payload is accepted
// exactly when the first delimiter in payload+delim is the one after it.
func FuzzDelimited(f *testing.F) {
	for _, d := range []string{"\n", "\r\n", "\r\n\r\n", "\x00", "aa", "abab"} {
		fr := mustDelimited(d)
		for _, seed := range fuzzSeeds(fr) {
			f.Add([]byte(d), seed)
		}
	}
	f.Add([]byte("\r\n"), append(bytes.Repeat([]byte{'a'}, 64), '\r', '\n'))
	f.Add([]byte("\r\n"), append(bytes.Repeat([]byte{'a'}, 64), '\r', 'a', '\r', '\n'))
	f.Add([]byte("aa"), []byte("\x03aaaaaaa"))
	const limit = 64
	f.Fuzz(func(t *testing.T, delim, data []byte) {
		if len(delim) == 0 || len(delim) > 8 {
			return
		}
		fr, err := Delimited(delim)
		if err != nil {
			t.Fatal(err)
		}
		// split against a plain search.
		start, n, size, err := fr.split(data, limit)
		switch i := bytes.Index(data, delim); {
		case i >= 0 && i <= limit:
			if err != nil || start != 0 || n != i || size != i+len(delim) {
				t.Fatalf("split = %d, %d, %d, %v; want the delimiter at %d", start, n, size, err, i)
			}
		case len(data) >= limit+len(delim):
			if !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("split = %d, %d, %d, %v; want ErrMessageTooLarge", start, n, size, err)
			}
		default:
			if err != nil || size != 0 {
				t.Fatalf("split = %d, %d, %d, %v; want more bytes", start, n, size, err)
			}
		}
		// check against its definition, for every prefix of data.
		for k := range min(len(data), 2*limit) + 1 {
			p := data[:k]
			want := bytes.Index(append(p[:k:k], delim...), delim) == k
			if err := fr.check(p); (err == nil) != want || err != nil && !errors.Is(err, ErrDelimiterInPayload) {
				t.Fatalf("check(%q) = %v, want ok %v", p, err, want)
			}
		}
		fuzzFrames(t, wire{framing: fr, max: limit}, data)
	})
}

// TestSplitErrorText checks that the error names the length and the limit.
func TestSplitErrorText(t *testing.T) {
	for _, tc := range []struct {
		f    Framing
		in   string
		want []string
	}{
		{Fixed4, "GET ", []string{"1195725856", "4096"}},
		{Fixed4LE, " TEG", []string{"1195725856", "4096"}},
		{Fixed4Inclusive, "GET ", []string{"1195725856", "4-byte header", "4096"}},
		{Fixed4Inclusive, "\x00\x00\x00\x02", []string{"length 2", "4-byte header"}},
		{crlf, strings.Repeat("x", 4098), []string{"4098 bytes", "4096"}},
	} {
		_, _, _, err := tc.f.split([]byte(tc.in), 4096)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q should contain %q", tc.f, err, w)
			}
		}
	}
	err := crlf.check([]byte("a\r\nb"))
	if err == nil || err.Error() != `buffstreams: payload contains the delimiter: "\r\n" at offset 1` {
		t.Errorf("check error %q", err)
	}
}
