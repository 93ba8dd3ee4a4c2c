package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// ---- raw: the ceiling, and net.Conn ping-pong for the latency cell ----
//
// Throughput: each client writes whole frames (4-byte big-endian length, then
// the payload, repeated) built once, in chunks of rawChunk bytes; the server
// reads into one buffer of that size and walks the frames in place, counting
// them, moving only a trailing partial frame to the front before the next
// read.
//
// Latency: the client writes one frame with one Write and reads the echo with
// a frameReader; the server does the same in the other direction.

type rawTransport struct{}

func (rawTransport) Name() string { return "raw" }

// rawChunk is the size of a raw client's writes and of the server's read
// buffer: 256 KiB, or 1 MiB for payloads of 32 KiB and more, and always at
// least one frame.
func rawChunk(size int) int {
	c := 256 << 10
	if size >= 32<<10 {
		c = 1 << 20
	}
	return max(c, 4+size)
}

// frames returns k frames of a payload of size bytes, back to back.
func frames(size, k int) []byte {
	p := payload(size)
	b := make([]byte, 0, k*(4+size))
	for range k {
		b = binary.BigEndian.AppendUint32(b, uint32(size))
		b = append(b, p...)
	}
	return b
}

type rawSession struct {
	srv      *connServer
	clients  []net.Conn
	chunk    []byte // perChunk frames
	frame    int
	perChunk uint64
	counts   counters
}

func (rawTransport) Open(size, conns int) (session, error) {
	s := &rawSession{frame: 4 + size}
	s.perChunk = uint64(rawChunk(size) / s.frame)
	s.chunk = frames(size, int(s.perChunk))
	var err error
	if s.srv, err = listen(s.serve); err != nil {
		return nil, err
	}
	if s.clients, err = dialAll(s.srv.Addr(), conns); err != nil {
		s.srv.Close()
		return nil, err
	}
	return s, nil
}

func (s *rawSession) serve(c net.Conn) error {
	cnt := s.counts.new()
	buf := make([]byte, len(s.chunk))
	w := 0 // buf[:w] is not parsed yet
	for {
		n, err := c.Read(buf[w:])
		w += n
		r := 0
		var msgs, nbytes uint64
		for w-r >= 4 {
			l := binary.BigEndian.Uint32(buf[r:])
			if l > maxMessageSize {
				return fmt.Errorf("raw server: length %d above %d", l, maxMessageSize)
			}
			if uint64(w-r-4) < uint64(l) {
				break
			}
			r += 4 + int(l)
			msgs++
			nbytes += uint64(l)
		}
		if msgs > 0 {
			cnt.add(msgs, nbytes)
		}
		w = copy(buf, buf[r:w])
		if err != nil {
			if err == io.EOF && w == 0 {
				return nil
			}
			return fmt.Errorf("raw server: %w with %d bytes of a frame read", err, w)
		}
	}
}

func (s *rawSession) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c := s.clients[i]
	var n uint64
	for n < limit && !stop.Load() {
		k := min(s.perChunk, limit-n)
		if _, err := c.Write(s.chunk[:int(k)*s.frame]); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

func (s *rawSession) Received() (uint64, uint64) { return s.counts.Received() }

func (s *rawSession) Close() error {
	return errors.Join(closeAll(s.clients), s.srv.Close())
}

// ---- ping-pong ----

type rawEcho struct {
	srv *connServer
	cl  *echoClient
}

func (rawTransport) OpenEcho(size int) (echoSession, error) {
	srv, err := listen(func(c net.Conn) error {
		fr := newFrameReader(c, 4+size)
		for {
			frame, err := fr.next()
			if err != nil {
				if err == io.EOF {
					return nil
				}
				return fmt.Errorf("raw echo server: %w", err)
			}
			if _, err := c.Write(frame); err != nil {
				return fmt.Errorf("raw echo server: %w", err)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	cl, err := dialEcho(srv.Addr(), size)
	if err != nil {
		srv.Close()
		return nil, err
	}
	return &rawEcho{srv: srv, cl: cl}, nil
}

func (e *rawEcho) RoundTrip() error { return e.cl.RoundTrip() }

func (e *rawEcho) Close() error { return errors.Join(e.cl.Close(), e.srv.Close()) }

// echoClient is the net.Conn client of the raw and gnet latency cells: one
// Write of a pre-built frame, then a frameReader for the echo.
type echoClient struct {
	c     net.Conn
	frame []byte
	fr    *frameReader
}

func dialEcho(addr string, size int) (*echoClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &echoClient{c: c, frame: frames(size, 1), fr: newFrameReader(c, 4+size)}, nil
}

func (e *echoClient) RoundTrip() error {
	if _, err := e.c.Write(e.frame); err != nil {
		return err
	}
	got, err := e.fr.next()
	if err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if !bytes.Equal(got, e.frame) {
		return fmt.Errorf("echo of %d bytes differs from the %d bytes sent", len(got), len(e.frame))
	}
	return nil
}

func (e *echoClient) Close() error { return e.c.Close() }

// frameReader reads 4-byte big-endian length-prefixed frames from r into one
// buffer of a fixed size, which bounds the frames it accepts.
type frameReader struct {
	r    io.Reader
	buf  []byte
	head int // buf[head:tail] is read and not yet returned
	tail int
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: r, buf: make([]byte, max)}
}

// next returns the next whole frame, header included. The frame is valid
// until the next call. It returns io.EOF if r ends between frames.
func (f *frameReader) next() ([]byte, error) {
	for {
		if n := f.tail - f.head; n >= 4 {
			l := uint64(binary.BigEndian.Uint32(f.buf[f.head:]))
			if l > uint64(len(f.buf)-4) {
				return nil, fmt.Errorf("frame of %d bytes above the limit of %d", l, len(f.buf)-4)
			}
			if end := 4 + int(l); n >= end {
				frame := f.buf[f.head : f.head+end]
				f.head += end
				return frame, nil
			}
		}
		if f.head > 0 { // make room at the end
			f.tail = copy(f.buf, f.buf[f.head:f.tail])
			f.head = 0
		}
		n, err := f.r.Read(f.buf[f.tail:])
		f.tail += n
		if n > 0 || err == nil {
			continue // parse what arrived; a net.Conn's error comes back on the next Read
		}
		if err == io.EOF && f.tail > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
}

// ---- a goroutine-per-connection TCP server, and its clients ----

// connServer accepts on 127.0.0.1:0 and runs serve on each connection in a
// goroutine of its own, closing the connection when serve returns. serve
// returns nil when its client closed the connection cleanly.
type connServer struct {
	ln   net.Listener
	wg   sync.WaitGroup // the accept loop and every serve
	errs firstError

	mu     sync.Mutex
	conns  []net.Conn // guarded by mu
	closed bool       // guarded by mu
}

func listen(serve func(net.Conn) error) (*connServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &connServer{ln: ln}
	s.wg.Go(func() { s.accept(serve) })
	return s, nil
}

func (s *connServer) Addr() string { return s.ln.Addr().String() }

func (s *connServer) accept(serve func(net.Conn) error) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed: nothing else fails on loopback here
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns = append(s.conns, c)
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer c.Close()
			if err := serve(c); err != nil {
				s.errs.set(err)
			}
		}()
	}
}

// Close closes the listener and every served connection, waits for the
// accept loop and every serve, and returns the first error of a serve that
// ended before Close was called.
func (s *connServer) Close() error {
	err := s.errs.close()
	s.mu.Lock()
	s.closed = true
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
	return err
}

// dialAll dials n connections to addr, closing them all if one fails.
func dialAll(addr string, n int) ([]net.Conn, error) {
	var cs []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			closeAll(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func closeAll(cs []net.Conn) error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
