package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"

	"github.com/buffstreams/buffstreams"
)

// maxMessageSize is the MaxMessageSize of both ends of the buffstreams
// transport, and the largest payload -sizes accepts.
const maxMessageSize = 1 << 20

// payload returns a message of n bytes.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return p
}

// ---- buffstreams: the library, default framing, one Write per message ----

type buffstreamsTransport struct{}

func (buffstreamsTransport) Name() string { return "buffstreams" }

type buffstreamsSession struct {
	ln      *buffstreams.TCPListener
	conns   []*buffstreams.TCPConn
	payload []byte
}

func (buffstreamsTransport) Open(size, conns int) (session, error) {
	ln, err := buffstreams.ListenTCP(buffstreams.TCPListenerConfig{
		Address:        "127.0.0.1:0",
		MaxMessageSize: maxMessageSize,
		// Counting is left to the listener's Stats, so the callback does
		// no work of its own, like the ceiling's parse loop.
		Callback: func([]byte) error { return nil },
	})
	if err != nil {
		return nil, err
	}
	s := &buffstreamsSession{ln: ln, payload: payload(size)}
	if err := ln.StartListeningAsync(); err != nil {
		s.Close()
		return nil, err
	}
	for range conns {
		c, err := buffstreams.DialTCP(&buffstreams.TCPConnConfig{
			Address:        ln.Addr().String(),
			MaxMessageSize: maxMessageSize,
		})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.conns = append(s.conns, c)
	}
	return s, nil
}

func (s *buffstreamsSession) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c, p := s.conns[i], s.payload
	var n uint64
	for n < limit && !stop.Load() {
		if _, err := c.Write(p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *buffstreamsSession) Received() (uint64, uint64) {
	st := s.ln.Stats()
	return st.Messages, st.Bytes
}

func (s *buffstreamsSession) Close() error {
	var errs []error
	for _, c := range s.conns {
		errs = append(errs, c.Close())
	}
	s.ln.Close() // waits for the accept loop and every read loop
	st := s.ln.Stats()
	if st.BadInput+st.CallbackErrors+st.Panics != 0 {
		errs = append(errs, fmt.Errorf("listener stats: %+v", st))
	}
	return errors.Join(errs...)
}

// ---- plain TCP: the machinery shared by transports over a plain net.Conn ----
//
// A transport over plain net.Conn embeds a plainServer, which owns the
// listener, the client connections and the served ones, and the session's
// Close; the transport brings only its serve loop (given to start), its
// client write loop (Send, on clients[i]) and Received.

// plainServer is a server on 127.0.0.1 serving every accepted connection in
// a goroutine of its own, and the client connections dialed to it.
type plainServer struct {
	ln      net.Listener
	clients []net.Conn
	wg      sync.WaitGroup // accept loop and serve loops

	mu     sync.Mutex
	served []net.Conn // guarded by mu
	closed bool       // guarded by mu
	err    error      // first server error; guarded by mu
}

// start listens on 127.0.0.1:0, runs serve on every accepted connection and
// dials conns clients. serve returns nil when its client closed the
// connection cleanly; any other error is the server's first error unless
// the server was closed already. The connection is closed when serve
// returns. On error start closes what it started.
func (s *plainServer) start(conns int, serve func(net.Conn) error) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept(serve)
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			s.Close()
			return err
		}
		s.clients = append(s.clients, c)
	}
	return nil
}

func (s *plainServer) accept(serve func(net.Conn) error) {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.served = append(s.served, c)
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer c.Close()
			if err := serve(c); err != nil {
				s.fail(err)
			}
		}()
	}
}

func (s *plainServer) fail(err error) {
	s.mu.Lock()
	if s.err == nil && !s.closed {
		s.err = err
	}
	s.mu.Unlock()
}

// Close closes the clients, then the served connections and the listener,
// and waits for the accept loop and every serve loop.
func (s *plainServer) Close() error {
	var errs []error
	for _, c := range s.clients {
		errs = append(errs, c.Close())
	}
	s.mu.Lock()
	s.closed = true
	err := s.err
	for _, c := range s.served {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
	return errors.Join(append(errs, err)...)
}

// counter counts received messages and their payload bytes. add adds the
// bytes before the messages, and a reader loads the messages first, so that
// it never sees a message without its bytes.
type counter struct {
	msgs  atomic.Uint64
	bytes atomic.Uint64
}

func (c *counter) add(msgs, bytes uint64) {
	c.bytes.Add(bytes)
	c.msgs.Add(msgs)
}

func (c *counter) load() (msgs, bytes uint64) {
	msgs = c.msgs.Load()
	return msgs, c.bytes.Load()
}

// ---- bs2.0: BuffStreams 2.0's I/O pattern, the one-syscall-per-message baseline ----
//
// The client does what 2.0's TCPConn.Write did for every message: allocate a
// header of bs2HeaderWidth bytes holding the varint length (zero padded),
// append the payload to it (a second, fresh allocation) and write the result
// with one Write call. The server does what 2.0's read loop did: io.ReadFull
// of the header, binary.Varint, then io.ReadFull of the payload into a reused
// buffer of maxMessageSize bytes: two read calls per message.

type bs2Transport struct{}

func (bs2Transport) Name() string { return "bs2.0" }

// Aliases lets -t bs2 select it too.
func (bs2Transport) Aliases() []string { return []string{"bs2"} }

// bs2HeaderWidth is 2.0's header size for maxMessageSize:
// ceil((floor(log2(max))+1)/8)+1, which is 4 for 1 MiB.
var bs2HeaderWidth = (bits.Len(uint(maxMessageSize))+7)/8 + 1

// bs2Header returns a new header of width bytes holding n, as 2.0's
// intToByteArray did.
func bs2Header(n, width int) []byte {
	h := make([]byte, width)
	binary.PutVarint(h, int64(n))
	return h
}

// bs2Counter is one served connection's counts, padded so that two
// connections' counters never share a cache line.
type bs2Counter struct {
	counter
	_ [48]byte
}

type bs2Session struct {
	plainServer
	payload []byte
	width   int

	countersMu sync.Mutex
	counters   []*bs2Counter // guarded by countersMu; one per serve loop
}

func (bs2Transport) Open(size, conns int) (session, error) {
	s := &bs2Session{payload: payload(size), width: bs2HeaderWidth}
	if err := s.start(conns, s.serve); err != nil {
		return nil, err
	}
	return s, nil
}

// serve reads one message at a time: the header, then the payload.
func (s *bs2Session) serve(c net.Conn) error {
	cnt := new(bs2Counter)
	s.countersMu.Lock()
	s.counters = append(s.counters, cnt)
	s.countersMu.Unlock()
	header := make([]byte, s.width)
	buf := make([]byte, maxMessageSize)
	for {
		if _, err := io.ReadFull(c, header); err != nil {
			if err == io.EOF { // closed between messages
				return nil
			}
			return fmt.Errorf("bs2.0 server: header: %w", err)
		}
		l, n := binary.Varint(header)
		if n <= 0 || l < 0 || l > maxMessageSize {
			return fmt.Errorf("bs2.0 server: bad header %x", header)
		}
		if _, err := io.ReadFull(c, buf[:l]); err != nil {
			return fmt.Errorf("bs2.0 server: payload of %d bytes: %w", l, err)
		}
		cnt.add(1, uint64(l))
	}
}

func (s *bs2Session) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c, p := s.clients[i], s.payload
	var n uint64
	for n < limit && !stop.Load() {
		msg := append(bs2Header(len(p), s.width), p...)
		if _, err := c.Write(msg); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Received loads every connection's messages, then every connection's
// bytes (see counter).
func (s *bs2Session) Received() (msgs, bytes uint64) {
	s.countersMu.Lock()
	defer s.countersMu.Unlock()
	for _, c := range s.counters {
		msgs += c.msgs.Load()
	}
	for _, c := range s.counters {
		bytes += c.bytes.Load()
	}
	return msgs, bytes
}

// ---- raw: the ceiling ----
//
// Clients write pre-framed bytes (4-byte big-endian length + payload,
// repeated) in large chunks; the server reads into a large buffer and walks
// the frames in place, counting them. No framing library can do less work.

type rawTransport struct{}

func (rawTransport) Name() string { return "raw" }

// rawChunkSize is the size of the clients' writes: 256 KiB for small
// payloads, 1 MiB for large ones; always at least one frame.
func rawChunkSize(size int) int {
	c := 256 << 10
	if size >= 32<<10 {
		c = 1 << 20
	}
	return max(c, 4+size)
}

type rawSession struct {
	plainServer
	size     int
	frame    int    // 4 + size
	chunk    []byte // perChunk whole frames
	perChunk uint64
	bufSize  int     // the server's read buffer
	counts   counter // every served connection's
}

func (rawTransport) Open(size, conns int) (session, error) {
	s := &rawSession{size: size, frame: 4 + size}
	cs := rawChunkSize(size)
	s.perChunk = uint64(cs / s.frame)
	s.bufSize = cs
	p := payload(size)
	s.chunk = make([]byte, 0, int(s.perChunk)*s.frame)
	for range s.perChunk {
		s.chunk = binary.BigEndian.AppendUint32(s.chunk, uint32(size))
		s.chunk = append(s.chunk, p...)
	}
	if err := s.start(conns, s.serve); err != nil {
		return nil, err
	}
	return s, nil
}

// serve reads into one buffer and counts the frames in it, moving only the
// incomplete frame at the end (if any) to the front before the next read.
func (s *rawSession) serve(c net.Conn) error {
	buf := make([]byte, s.bufSize)
	w := 0 // buf[:w] holds unparsed bytes
	for {
		n, err := c.Read(buf[w:])
		w += n
		r := 0
		var msgs, nbytes uint64
		for w-r >= 4 {
			l := int(binary.BigEndian.Uint32(buf[r:]))
			if l > maxMessageSize {
				return fmt.Errorf("raw server: length %d above %d", l, maxMessageSize)
			}
			if w-r-4 < l {
				break
			}
			r += 4 + l
			msgs++
			nbytes += uint64(l)
		}
		if msgs > 0 {
			s.counts.add(msgs, nbytes)
		}
		if r > 0 {
			w = copy(buf, buf[r:w])
		}
		if err != nil {
			if err == io.EOF && w == 0 {
				return nil
			}
			return fmt.Errorf("raw server: %w (%d bytes pending)", err, w)
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

func (s *rawSession) Received() (uint64, uint64) {
	return s.counts.load()
}
