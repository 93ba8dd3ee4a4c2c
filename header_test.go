package buffstreams

import (
	"bytes"
	"encoding/hex"
	"errors"
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

// TestHeaderBytes pins the exact header of every framing. The expected bytes
// follow from each format's definition: the zig-zag varint of n (2n as an
// unsigned varint) padded to the header width for BuffStreams, the minimal
// unsigned varint of n for uvarint, and n in big-endian for the fixed widths.
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
	}
	framings := map[string]Framing{
		"buffstreams/4096": BuffStreamsFraming(4096),
		"uvarint":          Uvarint, "fixed1": Fixed1, "fixed2": Fixed2,
		"fixed3": Fixed3, "fixed4": Fixed4, "fixed8": Fixed8,
	}
	for name, f := range framings {
		for i, n := range lengths {
			exp := want[name][i]
			if n > f.maxLen() {
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
	} {
		if got := tc.f.maxLen(); got != tc.want {
			t.Errorf("%s: maxLen = %d, want %d", tc.f, got, tc.want)
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
	} {
		in, _ := hex.DecodeString(tc.in)
		_, _, _, err := tc.f.split(in, tc.max)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: split(%s) error = %v, want %v", tc.name, tc.in, err, tc.want)
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
	} {
		in, _ := hex.DecodeString(tc.in)
		start, n, size, err := tc.f.split(in, 4096)
		if err != nil || start != tc.start || n != tc.n || size != tc.size {
			t.Errorf("%s: split(%s) = %d, %d, %d, %v; want %d, %d, %d, nil", tc.name, tc.in, start, n, size, err, tc.start, tc.n, tc.size)
		}
	}
}

func TestParseFraming(t *testing.T) {
	for name, want := range map[string]string{
		"buffstreams": "buffstreams", "": "buffstreams", "UVARINT": "uvarint",
		"fixed1": "fixed1", "fixed2": "fixed2", "fixed3": "fixed3", "fixed4": "fixed4", "fixed8": "fixed8",
	} {
		f, err := ParseFraming(name, 4096)
		if err != nil || f.String() != want {
			t.Errorf("ParseFraming(%q) = %v, %v; want %s", name, f, err, want)
		}
	}
	for _, bad := range []string{"fixed5", "varint", "delim"} {
		if _, err := ParseFraming(bad, 4096); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseFraming(%q) error = %v, want ErrInvalidConfig", bad, err)
		}
	}
}

func TestFormatAddress(t *testing.T) {
	for _, tc := range [][3]string{
		{"", "5031", ":5031"},
		{"127.0.0.1", "5031", "127.0.0.1:5031"},
		{"::1", "5031", "[::1]:5031"},
		{"[::1]", "5031", "[::1]:5031"},
		{"fe80::1%eth0", "80", "[fe80::1%eth0]:80"},
		{"localhost", "0", "localhost:0"},
	} {
		if got := FormatAddress(tc[0], tc[1]); got != tc[2] {
			t.Errorf("FormatAddress(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}

// encodeFrames frames each payload with f.
func encodeFrames(f Framing, payloads [][]byte) []byte {
	var out []byte
	for _, p := range payloads {
		out = append(out, header(f, len(p))...)
		out = append(out, p...)
	}
	return out
}

// chunkReader returns at most n bytes per Read, to split frames anywhere.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// TestFrameReaderChunks decodes frames that arrive in pieces of every size,
// including one byte at a time.
func TestFrameReaderChunks(t *testing.T) {
	sizes := []int{0, 1, 2, 100, 4096, 70000, 3, 0, 200000}
	var payloads [][]byte
	for i, n := range sizes {
		payloads = append(payloads, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	for _, f := range []Framing{BuffStreamsFraming(1 << 20), Uvarint, Fixed3, Fixed4, Fixed8} {
		stream := encodeFrames(f, payloads)
		for _, chunk := range []int{1, 2, 3, 7, 4096, 65536, len(stream)} {
			w := wire{framing: f, max: 1 << 20}
			var src io.Reader = chunkReader{bytes.NewReader(stream), chunk}
			if chunk == 1 {
				src = iotest.OneByteReader(bytes.NewReader(stream))
			}
			fr := newFrameReader(src, w)
			for i, want := range payloads {
				got, err := fr.next()
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s chunk %d: message %d = %d bytes, %v; want %d bytes", f, chunk, i, len(got), err, len(want))
				}
			}
			if _, err := fr.next(); err != io.EOF {
				t.Fatalf("%s chunk %d: after the last message: %v, want io.EOF", f, chunk, err)
			}
			if c := cap(fr.buf); c > maxHeaderLen+w.max {
				t.Errorf("%s chunk %d: buffer grew to %d, above the largest frame", f, chunk, c)
			}
		}
	}
}

func TestFrameReaderTruncated(t *testing.T) {
	stream := encodeFrames(Fixed4, [][]byte{[]byte("hello"), []byte("world")})
	for cut := 1; cut < len(stream); cut++ {
		if cut == 9 {
			continue // a frame boundary
		}
		fr := newFrameReader(bytes.NewReader(stream[:cut]), wire{Fixed4, 4096})
		var err error
		for err == nil {
			_, err = fr.next()
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func TestFrameReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	stream := encodeFrames(Fixed2, [][]byte{[]byte("ok")})
	fr := newFrameReader(io.MultiReader(bytes.NewReader(stream), iotest.ErrReader(boom)), wire{Fixed2, 4096})
	if p, err := fr.next(); err != nil || string(p) != "ok" {
		t.Fatalf("first message: %q, %v", p, err)
	}
	if _, err := fr.next(); !errors.Is(err, boom) {
		t.Fatalf("second read: %v, want boom", err)
	}
}

// TestFrameReaderGrowsWithData checks that a declared length, even one the
// limit allows, does not make the buffer grow faster than bytes arrive.
func TestFrameReaderGrowsWithData(t *testing.T) {
	const max = 64 << 20
	stream := append(header(Fixed4, max), make([]byte, 300<<10)...)
	fr := newFrameReader(bytes.NewReader(stream), wire{Fixed4, max})
	_, err := fr.next()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("next = %v, want io.ErrUnexpectedEOF", err)
	}
	if c := cap(fr.buf); c > 2*len(stream) {
		t.Fatalf("buffer of %d KiB for %d KiB received", c>>10, len(stream)>>10)
	}
}

// TestFrameReaderAllocs checks that the steady state allocates nothing.
func TestFrameReaderAllocs(t *testing.T) {
	payload := make([]byte, 110)
	stream := encodeFrames(BuffStreamsFraming(4096), [][]byte{payload, payload, payload, payload})
	r := bytes.NewReader(stream)
	fr := newFrameReader(r, wire{BuffStreamsFraming(4096), 4096})
	fr.grow(readBufferSize)
	allocs := testing.AllocsPerRun(1000, func() {
		r.Reset(stream)
		fr.reset(r)
		for {
			if _, err := fr.next(); err != nil {
				break
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per pass, want 0", allocs)
	}
}

// fuzzFraming is the body of each framing's fuzz target. It decodes data as
// a stream of frames, in chunks whose size data chooses, checking that the
// decoder neither panics nor hands out or buffers more than the limit; then
// it frames payloads cut from data and checks they decode unchanged.
func fuzzFraming(f *testing.F, fr Framing, limit int) {
	for _, seed := range [][]byte{
		nil, {0}, {1}, {0xff}, {0x80, 0x80, 0x80},
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		encodeFrames(fr, [][]byte{[]byte("hello"), {}, []byte("world")}),
	} {
		f.Add(seed)
	}
	w := wire{framing: fr, max: min(limit, fr.maxLen())}
	f.Fuzz(func(t *testing.T, data []byte) {
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
			payloads = append(payloads, rest[:n])
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
	})
}

func FuzzBuffStreams(f *testing.F) { fuzzFraming(f, BuffStreamsFraming(4096), 4096) }
func FuzzUvarint(f *testing.F)     { fuzzFraming(f, Uvarint, 1<<16) }
func FuzzFixed1(f *testing.F)      { fuzzFraming(f, Fixed1, 4096) }
func FuzzFixed2(f *testing.F)      { fuzzFraming(f, Fixed2, 1<<16) }
func FuzzFixed3(f *testing.F)      { fuzzFraming(f, Fixed3, 1<<16) }
func FuzzFixed4(f *testing.F)      { fuzzFraming(f, Fixed4, 1<<16) }
func FuzzFixed8(f *testing.F)      { fuzzFraming(f, Fixed8, 1<<16) }

// TestSplitErrorText checks that the error names the length and the limit.
func TestSplitErrorText(t *testing.T) {
	_, _, _, err := Fixed4.split([]byte("GET "), 4096)
	if err == nil || !strings.Contains(err.Error(), "1195725856") || !strings.Contains(err.Error(), "4096") {
		t.Errorf("error %q should give the declared length and the limit", err)
	}
}
