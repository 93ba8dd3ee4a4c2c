package buffstreams

import (
	"fmt"
	"io"
	"sync"
)

// readBufferSize is the initial size of a connection's read buffer: one read
// system call brings in up to this many bytes, hundreds of small frames at a
// time. Larger frames grow the buffer, never beyond what two of them need
// nor beyond the largest frame MaxMessageSize allows.
const readBufferSize = 64 << 10

// Read buffers of connections that have nothing buffered and are waiting
// for bytes go back to these pools, so that an idle connection holds no
// buffer (see rawReader); a busy one takes the same size back at once.
var (
	readBuffers = sync.Pool{New: func() any { return new([readBufferSize]byte) }}
	bigBuffers  sync.Pool // of *[]byte, buffers grown beyond readBufferSize
)

// frameReader parses frames in place from a reused buffer filled by a
// reader. It is not safe for concurrent use.
type frameReader struct {
	src  io.Reader
	wire wire
	buf  []byte
	r, w int   // buf[r:w] holds bytes read but not yet consumed
	need int   // bytes the frame at r needs in all; 0 if not yet known
	last int   // size of the frame frame() consumed last
	err  error // sticky error from src
	raw  *rawReader
	size int     // length of the buffer to take: readBufferSize, or what a large frame grew it to
	box  *[]byte // carries a large buffer into bigBuffers without allocating
}

func newFrameReader(src io.Reader, w wire) frameReader {
	fr := frameReader{wire: w}
	fr.reset(src)
	return fr
}

// reset discards everything buffered and reads from src from now on.
func (fr *frameReader) reset(src io.Reader) {
	fr.src = src
	fr.r, fr.w, fr.need, fr.last = 0, 0, 0, 0
	fr.err = nil
	fr.raw = newRawReader(src)
}

// take gives the reader a buffer of fr.size bytes if it has none.
func (fr *frameReader) take() {
	if fr.buf != nil {
		return
	}
	fr.r, fr.w = 0, 0
	if fr.size <= readBufferSize {
		fr.buf = readBuffers.Get().(*[readBufferSize]byte)[:]
		return
	}
	if p, _ := bigBuffers.Get().(*[]byte); p != nil {
		b := *p
		*p, fr.box = nil, p
		if len(b) == fr.size {
			fr.buf = b
			return
		}
	}
	fr.buf = make([]byte, fr.size)
}

// release gives the buffer back to its pool while nothing is buffered.
func (fr *frameReader) release() {
	if fr.buf == nil || fr.r != fr.w {
		return
	}
	fr.put(fr.buf)
	fr.buf = nil
	fr.r, fr.w = 0, 0
}

// put gives a buffer back to its pool.
func (fr *frameReader) put(b []byte) {
	if len(b) == readBufferSize {
		readBuffers.Put((*[readBufferSize]byte)(b))
		return
	}
	if fr.box == nil {
		fr.box = new([]byte)
	}
	*fr.box = b
	bigBuffers.Put(fr.box)
	fr.box = nil
}

// read reads once into fr.buf[fr.w:], taking a buffer first if needed.
func (fr *frameReader) read() (int, error) {
	if fr.raw != nil {
		return fr.raw.readInto(fr)
	}
	fr.take()
	return fr.src.Read(fr.buf[fr.w:])
}

// frame consumes the next complete frame in the buffer and returns its
// payload, which aliases the buffer until the next call to fill. It does no
// I/O: ok is false when the buffer does not hold a whole frame. An error
// means the peer sent a frame that cannot be accepted; the stream cannot be
// resynchronized after it.
func (fr *frameReader) frame() (p []byte, ok bool, err error) {
	if fr.r == fr.w {
		fr.need = 0
		return nil, false, nil
	}
	start, n, size, err := fr.wire.framing.split(fr.buf[fr.r:fr.w], fr.wire.max)
	if err != nil {
		return nil, false, err
	}
	if size == 0 || size > fr.w-fr.r {
		fr.need = size
		return nil, false, nil
	}
	start += fr.r
	fr.r += size
	fr.last = size
	return fr.buf[start : start+n : start+n], true, nil
}

// unread gives back the frame the last call to frame consumed.
func (fr *frameReader) unread() { fr.r -= fr.last; fr.last = 0 }

// fill makes room for the frame in progress and reads from src once. It
// invalidates every payload returned so far. A peer that closes the
// connection inside a frame makes it return an error wrapping
// io.ErrUnexpectedEOF; one that closes at a frame boundary, io.EOF.
func (fr *frameReader) fill() error {
	if fr.r == fr.w {
		fr.r, fr.w = 0, 0
	}
	if fr.err != nil {
		return fr.eof()
	}
	if fr.buf == nil && fr.raw != nil {
		// Wait for bytes without a buffer: see rawReader.
		return fr.afterRead(fr.read())
	}
	fr.take()
	// Move the partial frame to the front when it cannot complete where it
	// is, or when it is short and little room is left behind it; otherwise
	// read on behind it, so large frames are not copied again and again.
	need := max(fr.need, fr.w-fr.r+1)
	if fr.r > 0 && (need > len(fr.buf)-fr.r ||
		len(fr.buf)-fr.w < len(fr.buf)/4 && fr.w-fr.r <= len(fr.buf)/4) {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	if fr.w == len(fr.buf) {
		fr.grow(need)
	}
	return fr.afterRead(fr.read())
}

// afterRead records the outcome of one read.
func (fr *frameReader) afterRead(n int, err error) error {
	fr.w += n
	if err != nil {
		fr.err = err
		if n == 0 {
			return fr.eof()
		}
	}
	return nil
}

// eof returns the sticky read error, saying whether a frame was cut short.
// io.EOF at a frame boundary is returned as is.
func (fr *frameReader) eof() error {
	switch {
	case fr.err == io.EOF && fr.w > fr.r:
		return fmt.Errorf("buffstreams: %w: connection closed inside a frame, %d bytes of it received", io.ErrUnexpectedEOF, fr.w-fr.r)
	case fr.err == io.EOF:
		return io.EOF
	}
	return fmt.Errorf("buffstreams: read: %w", fr.err)
}

// grow replaces the full buffer with a larger one and moves the unread
// bytes to its front. The buffer aims at room for two frames of need bytes
// (at most the largest frame the limit allows), but grows only when full and
// at most doubles at a time, so memory follows the bytes that actually
// arrive rather than the length a peer declares.
func (fr *frameReader) grow(need int) {
	target := max(need, min(2*need, maxHeaderLen+fr.wire.max))
	buf := make([]byte, max(readBufferSize, min(target, 2*len(fr.buf))))
	fr.w = copy(buf, fr.buf[fr.r:fr.w])
	fr.r = 0
	fr.put(fr.buf)
	fr.buf = buf
	fr.size = len(buf)
}

// next returns the next payload, reading as needed. The payload is valid
// until the next call.
func (fr *frameReader) next() ([]byte, error) {
	for {
		p, ok, err := fr.frame()
		if ok || err != nil {
			return p, err
		}
		if err := fr.fill(); err != nil {
			return nil, err
		}
	}
}

// buffered returns the number of bytes read but not yet consumed.
func (fr *frameReader) buffered() int { return fr.w - fr.r }
