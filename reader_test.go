package buffstreams

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestFrameReaderChunks decodes frames that arrive in pieces of every size,
// including one byte at a time.
func TestFrameReaderChunks(t *testing.T) {
	sizes := []int{0, 1, 2, 100, 4096, 70000, 3, 0, 200000}
	var payloads [][]byte
	for i, n := range sizes {
		payloads = append(payloads, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	for _, f := range []Framing{
		BuffStreamsFraming(1 << 20), Uvarint, Fixed3, Fixed4, Fixed8,
		Fixed4LE, Fixed8LE, Fixed4Inclusive, Lines, crlf, mustDelimited("\r\n\r\n"),
	} {
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
	for _, f := range allocFramings {
		stream := encodeFrames(f, [][]byte{payload, payload, payload, payload})
		r := bytes.NewReader(stream)
		fr := newFrameReader(r, wire{f, 4096})
		fr.grow(readBufferSize)
		messages := 0
		allocs := testing.AllocsPerRun(1000, func() {
			r.Reset(stream)
			fr.reset(r)
			messages = 0
			for {
				if _, err := fr.next(); err != nil {
					break
				}
				messages++
			}
		})
		if allocs != 0 || messages != 4 {
			t.Errorf("%s: %.1f allocations per pass of %d messages, want 0 and 4", f, allocs, messages)
		}
	}
}
