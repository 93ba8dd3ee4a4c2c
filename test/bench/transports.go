package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/buffstreams/buffstreams"
	"github.com/buffstreams/buffstreams/test/message"
)

// maxMessageSize is the MaxMessageSize of both ends of the buffstreams
// transports, and the largest payload a workload may have.
const maxMessageSize = 1 << 20

// bufioSize is the buffer size of both ends of the bufio and protodelim
// transports: what a Go developer would pick by hand.
const bufioSize = 64 << 10

// payload returns a message of n bytes.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return p
}

// ---- buffstreams: the library, default framing ----

// libServer is a buffstreams listener with a callback that does nothing:
// counting is left to the listener's Stats, like the ceiling's parse loop
// does no work per message either. It is the server of the sync and batch
// transports.
type libServer struct {
	ln *buffstreams.TCPListener
}

func listenLib(acks *buffstreams.AckConfig) (*libServer, error) {
	ln, err := buffstreams.ListenTCP(buffstreams.TCPListenerConfig{
		Address:        "127.0.0.1:0",
		MaxMessageSize: maxMessageSize,
		Callback:       func([]byte) error { return nil },
		Acks:           acks,
	})
	if err != nil {
		return nil, err
	}
	s := &libServer{ln: ln}
	if err := ln.StartListeningAsync(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *libServer) Addr() string { return s.ln.Addr().String() }

func (s *libServer) Received() (uint64, uint64) {
	st := s.ln.Stats()
	return st.Messages, st.Bytes
}

// Close closes the listener, which waits for its accept loop and every read
// loop, and reports bad input or callback failures it counted.
func (s *libServer) Close() error {
	s.ln.Close()
	if st := s.ln.Stats(); st.BadInput+st.CallbackErrors+st.Panics != 0 {
		return fmt.Errorf("listener stats: %+v", st)
	}
	return nil
}

// libClients are the connections of the sync and batch transports, dialed
// with one configuration.
type libClients struct {
	conns   []*buffstreams.TCPConn
	payload []byte
	batch   bool // Flush after the last Write of Send
	acks    bool // Sync after the last Write of Send
	// writers, when set, holds a BufferedWriter for each connection, through
	// which Send writes (the bufwriter transports).
	writers []*buffstreams.BufferedWriter
}

func dialLib(addr string, size, conns int, cfg buffstreams.TCPConnConfig) (*libClients, error) {
	s := &libClients{payload: payload(size), batch: cfg.WriteBufferSize > 0, acks: cfg.Acks != nil}
	cfg.Address = addr
	cfg.MaxMessageSize = maxMessageSize
	for range conns {
		c, err := buffstreams.DialTCP(&cfg)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.conns = append(s.conns, c)
	}
	return s, nil
}

// Send writes one message per Write call. In batching mode it then flushes,
// so that the cell's clock covers the hand-over of every message to the
// kernel. TCPConn is safe for concurrent use: several goroutines may send
// on the same connection.
func (s *libClients) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c, p := s.conns[i], s.payload
	var n uint64
	if s.writers != nil {
		w := s.writers[i]
		for n < limit && !stop.Load() {
			if _, err := w.Write(p); err != nil {
				return n, err
			}
			n++
		}
		if err := w.Flush(); err != nil {
			return n, fmt.Errorf("flush: %w", err)
		}
	} else {
		for n < limit && !stop.Load() {
			if _, err := c.Write(p); err != nil {
				return n, err
			}
			n++
		}
	}
	if s.acks {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Sync(ctx); err != nil {
			return n, fmt.Errorf("sync: %w", err)
		}
		return n, nil
	}
	if s.batch {
		if err := c.Flush(); err != nil {
			return n, fmt.Errorf("flush: %w", err)
		}
	}
	return n, nil
}

func (s *libClients) Close() error {
	var errs []error
	for _, c := range s.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// syncTransport is the library in its default mode: Write returns once the
// kernel has the frame; concurrent Writes on one connection share system
// calls (group commit).
type syncTransport struct{}

func (syncTransport) Name() string { return "sync" }

// Aliases keeps the transport's old name working in -t.
func (syncTransport) Aliases() []string { return []string{"buffstreams"} }

func (syncTransport) SharedWriters() bool { return true }

func (syncTransport) Serve(int) (server, error) { return listenLib(nil) }

func (syncTransport) Dial(addr string, size, conns int) (clients, error) {
	return dialLib(addr, size, conns, buffstreams.TCPConnConfig{})
}

// batchTransport is the library in batching mode: Write copies the frame
// into a write buffer of bufSize bytes and a flusher writes many frames per
// system call. For large payloads the buffer holds at least 16 of them (1 MiB
// at 64 KiB, the raw ceiling's chunk at that size), since a payload of a
// quarter of the buffer or more is written on its own, uncopied. Its server
// is sync's: batching is the sender's choice.
type batchTransport struct {
	bufSize       int
	flushInterval time.Duration
}

func (batchTransport) Name() string { return "batch" }

func (batchTransport) Serve(int) (server, error) { return listenLib(nil) }

func (t batchTransport) Dial(addr string, size, conns int) (clients, error) {
	return dialLib(addr, size, conns, buffstreams.TCPConnConfig{
		WriteBufferSize: max(t.bufSize, 16*size),
		FlushInterval:   t.flushInterval,
	})
}

// bufWriterTransport is the library in its default mode, written through
// one BufferedWriter per connection: each Write frames the message into its
// buffer of bufSize bytes (at least 16 payloads, as batch's), without a lock,
// and a full buffer goes to the connection in one system call, as with
// bufio. The sender flushes after its last message. Its server is sync's.
type bufWriterTransport struct{ bufSize int }

func (bufWriterTransport) Name() string { return "bufwriter" }

func (bufWriterTransport) Serve(int) (server, error) { return listenLib(nil) }

func (t bufWriterTransport) Dial(addr string, size, conns int) (clients, error) {
	s, err := dialLib(addr, size, conns, buffstreams.TCPConnConfig{})
	if err != nil {
		return nil, err
	}
	for _, c := range s.conns {
		s.writers = append(s.writers, c.NewBufferedWriter(max(t.bufSize, 16*size)))
	}
	return s, nil
}

// ackTransport is the library with acknowledged delivery on both ends, in
// the default mode (bufSize 0: "sync+ack") or in batching mode
// ("batch+ack"). Its cells count what the listener's callback received, as
// the others do; the clients also wait, after their last message, until
// the listener has acknowledged every one. It runs only when -t names it.
type ackTransport struct {
	batch   bool
	bufSize int  // WriteBufferSize of batch+ack; the buffer size of bufwriter+ack
	writer  bool // the default mode, through a BufferedWriter per connection ("bufwriter+ack")
}

func (t ackTransport) Name() string {
	switch {
	case t.batch:
		return "batch+ack"
	case t.writer:
		return "bufwriter+ack"
	}
	return "sync+ack"
}

// OptIn keeps the transport out of the default set.
func (ackTransport) OptIn() bool { return true }

// SharedWriters: like sync, the default mode is safe to share; a
// BufferedWriter is not.
func (t ackTransport) SharedWriters() bool { return !t.batch && !t.writer }

func (ackTransport) Serve(int) (server, error) { return listenLib(&buffstreams.AckConfig{}) }

func (t ackTransport) Dial(addr string, size, conns int) (clients, error) {
	cfg := buffstreams.TCPConnConfig{Acks: &buffstreams.AckConfig{}}
	if t.batch {
		cfg.WriteBufferSize = max(t.bufSize, 16*size)
	}
	s, err := dialLib(addr, size, conns, cfg)
	if err != nil || !t.writer {
		return s, err
	}
	for _, c := range s.conns {
		s.writers = append(s.writers, c.NewBufferedWriter(max(t.bufSize, 16*size)))
	}
	return s, nil
}

// ---- plain TCP: the machinery shared by transports over a plain net.Conn ----
//
// A transport over plain net.Conn embeds a plainServer in its server, which
// owns the listener and the served connections and brings Addr and Close,
// and a plainClients in its clients; the transport brings only its serve
// loop (given to listen), its client write loop (Send, on conns[i]) and
// Received.

// plainServer is a server on 127.0.0.1 serving every accepted connection in
// a goroutine of its own.
type plainServer struct {
	ln net.Listener
	wg sync.WaitGroup // accept loop and serve loops

	mu     sync.Mutex
	served []net.Conn // guarded by mu
	closed bool       // guarded by mu
	err    error      // first server error; guarded by mu
}

// listen listens on 127.0.0.1:0 and runs serve on every accepted
// connection. serve returns nil when its client closed the connection
// cleanly; any other error is the server's first error unless the server
// was closed already. The connection is closed when serve returns.
func (s *plainServer) listen(serve func(net.Conn) error) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept(serve)
	return nil
}

func (s *plainServer) Addr() string { return s.ln.Addr().String() }

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

// Close closes the served connections and the listener, waits for the
// accept loop and every serve loop, and returns the server's first error.
func (s *plainServer) Close() error {
	s.mu.Lock()
	s.closed = true
	err := s.err
	for _, c := range s.served {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
	return err
}

// plainClients are client connections over plain TCP.
type plainClients struct {
	conns []net.Conn
}

// dial opens n connections to addr; on error it closes those it opened.
func (c *plainClients) dial(addr string, n int) error {
	for range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			c.Close()
			return err
		}
		c.conns = append(c.conns, conn)
	}
	return nil
}

func (c *plainClients) Close() error {
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
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

// paddedCounter is one served connection's counter, padded so that two
// connections' counters never share a cache line.
type paddedCounter struct {
	counter
	_ [48]byte
}

// connCounters holds a counter per served connection.
type connCounters struct {
	mu   sync.Mutex
	list []*paddedCounter // guarded by mu
}

// newCounter returns a counter for one more served connection.
func (cc *connCounters) newCounter() *counter {
	c := new(paddedCounter)
	cc.mu.Lock()
	cc.list = append(cc.list, c)
	cc.mu.Unlock()
	return &c.counter
}

// Received loads every connection's messages, then every connection's
// bytes (see counter).
func (cc *connCounters) Received() (msgs, bytes uint64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, c := range cc.list {
		msgs += c.msgs.Load()
	}
	for _, c := range cc.list {
		bytes += c.bytes.Load()
	}
	return msgs, bytes
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

// SharedWriters: a net.Conn Write is atomic (the connection's write lock
// is held until every byte is written), so writers may share a connection.
func (bs2Transport) SharedWriters() bool { return true }

// bs2Width is 2.0's header size for a MaxMessageSize of max:
// ceil((floor(log2(max))+1)/8)+1: 3 for 4096, 4 for 1 MiB.
func bs2Width(max int) int { return (bits.Len(uint(max))+7)/8 + 1 }

// bs2HeaderWidth is the header width of this transport.
var bs2HeaderWidth = bs2Width(maxMessageSize)

// bs2Header returns a new header of width bytes holding n, as 2.0's
// intToByteArray did.
func bs2Header(n, width int) []byte {
	h := make([]byte, width)
	binary.PutVarint(h, int64(n))
	return h
}

type bs2Server struct {
	plainServer
	connCounters
	width int
}

func (bs2Transport) Serve(int) (server, error) {
	s := &bs2Server{width: bs2HeaderWidth}
	if err := s.listen(s.serve); err != nil {
		return nil, err
	}
	return s, nil
}

// serve reads one message at a time: the header, then the payload.
func (s *bs2Server) serve(c net.Conn) error {
	cnt := s.newCounter()
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

type bs2Clients struct {
	plainClients
	payload []byte
	width   int
}

func (bs2Transport) Dial(addr string, size, conns int) (clients, error) {
	s := &bs2Clients{payload: payload(size), width: bs2HeaderWidth}
	if err := s.dial(addr, conns); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *bs2Clients) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c, p := s.conns[i], s.payload
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

// ---- raw: the ceiling ----
//
// Clients write pre-framed bytes (4-byte big-endian length + payload,
// repeated) in large chunks; the server reads into a large buffer and walks
// the frames in place, counting them. No framing library can do less work.

type rawTransport struct{}

func (rawTransport) Name() string { return "raw" }

// SharedWriters: every chunk holds whole frames and a net.Conn Write is
// atomic, so writers may share a connection.
func (rawTransport) SharedWriters() bool { return true }

// rawChunkSize is the size of the clients' writes: 256 KiB for small
// payloads, 1 MiB for large ones; always at least one frame.
func rawChunkSize(size int) int {
	c := 256 << 10
	if size >= 32<<10 {
		c = 1 << 20
	}
	return max(c, 4+size)
}

type rawServer struct {
	plainServer
	bufSize int     // the read buffer of each served connection
	counts  counter // every served connection's
}

func (rawTransport) Serve(size int) (server, error) {
	s := &rawServer{bufSize: rawChunkSize(size)}
	if err := s.listen(s.serve); err != nil {
		return nil, err
	}
	return s, nil
}

// serve reads into one buffer and counts the frames in it, moving only the
// incomplete frame at the end (if any) to the front before the next read.
func (s *rawServer) serve(c net.Conn) error {
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

func (s *rawServer) Received() (uint64, uint64) {
	return s.counts.load()
}

type rawClients struct {
	plainClients
	frame    int    // 4 + size
	chunk    []byte // perChunk whole frames
	perChunk uint64
}

func (rawTransport) Dial(addr string, size, conns int) (clients, error) {
	s := &rawClients{frame: 4 + size}
	s.perChunk = uint64(rawChunkSize(size) / s.frame)
	p := payload(size)
	s.chunk = make([]byte, 0, int(s.perChunk)*s.frame)
	for range s.perChunk {
		s.chunk = binary.BigEndian.AppendUint32(s.chunk, uint32(size))
		s.chunk = append(s.chunk, p...)
	}
	if err := s.dial(addr, conns); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *rawClients) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c := s.conns[i]
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

// ---- cork: one write per frame under TCP_CORK ----
//
// Each client sets TCP_CORK for the whole stream and writes every frame (a
// 4-byte big-endian length and the payload, built once) with its own Write,
// then clears the cork; the server is raw's. It is the floor of any Write
// that returns once the kernel holds the frame: one system call per message
// and nothing else, with the kernel filling segments. Linux only; it runs
// only when -t names it.

type corkTransport struct{}

func (corkTransport) Name() string { return "cork" }

// OptIn keeps the transport out of the default set.
func (corkTransport) OptIn() bool { return true }

func (corkTransport) Serve(size int) (server, error) { return rawTransport{}.Serve(size) }

type corkClients struct {
	plainClients
	frame []byte
}

func (corkTransport) Dial(addr string, size, conns int) (clients, error) {
	s := &corkClients{frame: binary.BigEndian.AppendUint32(nil, uint32(size))}
	s.frame = append(s.frame, payload(size)...)
	if err := s.dial(addr, conns); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *corkClients) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c := s.conns[i]
	if err := setCork(c, true); err != nil {
		return 0, err
	}
	var n uint64
	for n < limit && !stop.Load() {
		if _, err := c.Write(s.frame); err != nil {
			return n, err
		}
		n++
	}
	return n, setCork(c, false) // sends what the cork holds
}

// ---- bufio: the loop a Go developer writes by hand ----
//
// The client writes a 4-byte big-endian header and the payload for every
// message into a bufio.Writer of 64 KiB, and flushes at the end; the server
// reads through a bufio.Reader of 64 KiB: io.ReadFull of the header, then
// io.ReadFull of the payload into a reused buffer.

type bufioTransport struct{}

func (bufioTransport) Name() string { return "bufio" }

type bufioServer struct {
	plainServer
	connCounters
}

func (bufioTransport) Serve(int) (server, error) {
	s := &bufioServer{}
	if err := s.listen(s.serve); err != nil {
		return nil, err
	}
	return s, nil
}

type bufioClients struct {
	plainClients
	payload []byte
	writers []*bufioWriter
}

// bufioWriter is one client's buffered writer and header scratch, kept
// together so that writing the header does not allocate.
type bufioWriter struct {
	w   *bufio.Writer
	hdr [4]byte
}

func (bufioTransport) Dial(addr string, size, conns int) (clients, error) {
	s := &bufioClients{payload: payload(size)}
	if err := s.dial(addr, conns); err != nil {
		return nil, err
	}
	for _, c := range s.conns {
		s.writers = append(s.writers, &bufioWriter{w: bufio.NewWriterSize(c, bufioSize)})
	}
	return s, nil
}

// serve reads one frame at a time through a bufio.Reader. It publishes its
// counts when the reader's buffer is empty, that is before a read that may
// block, rather than once per message: the counter is the benchmark's
// instrument, not part of the loop being measured.
func (s *bufioServer) serve(c net.Conn) error {
	cnt := s.newCounter()
	r := bufio.NewReaderSize(c, bufioSize)
	var hdr [4]byte
	buf := make([]byte, maxMessageSize)
	var msgs, nbytes uint64
	for {
		if msgs > 0 && r.Buffered() == 0 {
			cnt.add(msgs, nbytes)
			msgs, nbytes = 0, 0
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("bufio server: header: %w", err)
		}
		l := binary.BigEndian.Uint32(hdr[:])
		if l > maxMessageSize {
			return fmt.Errorf("bufio server: length %d above %d", l, maxMessageSize)
		}
		if _, err := io.ReadFull(r, buf[:l]); err != nil {
			return fmt.Errorf("bufio server: payload of %d bytes: %w", l, err)
		}
		msgs++
		nbytes += uint64(l)
	}
}

func (s *bufioClients) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	bw, p := s.writers[i], s.payload
	var n uint64
	for n < limit && !stop.Load() {
		binary.BigEndian.PutUint32(bw.hdr[:], uint32(len(p)))
		if _, err := bw.w.Write(bw.hdr[:]); err != nil {
			return n, err
		}
		if _, err := bw.w.Write(p); err != nil {
			return n, err
		}
		n++
	}
	return n, bw.w.Flush()
}

// ---- protodelim: size-delimited protobuf over bufio ----
//
// The client marshals a test/message Note whose encoding is exactly the
// payload size with protodelim.MarshalTo into a bufio.Writer of 64 KiB; the
// server unmarshals it with protodelim.UnmarshalFrom from a bufio.Reader of
// 64 KiB into a reused Note. The size counted is the Note's encoding, as
// the payload of the other transports.

type protodelimTransport struct{}

func (protodelimTransport) Name() string { return "protodelim" }

type protodelimServer struct {
	plainServer
	connCounters
	size    int // of each Note's encoding
	comment int // of each Note's comment
}

func (protodelimTransport) Serve(size int) (server, error) {
	note, err := sizedNote(size)
	if err != nil {
		return nil, err
	}
	s := &protodelimServer{size: size, comment: len(note.Comment)}
	if err := s.listen(s.serve); err != nil {
		return nil, err
	}
	return s, nil
}

type protodelimClients struct {
	plainClients
	note    *message.Note
	writers []*bufio.Writer
}

func (protodelimTransport) Dial(addr string, size, conns int) (clients, error) {
	note, err := sizedNote(size)
	if err != nil {
		return nil, err
	}
	s := &protodelimClients{note: note}
	if err := s.dial(addr, conns); err != nil {
		return nil, err
	}
	for _, c := range s.conns {
		s.writers = append(s.writers, bufio.NewWriterSize(c, bufioSize))
	}
	return s, nil
}

// sizedNote returns a Note whose encoding is exactly size bytes: a name, a
// date and a comment of the length that makes up the rest, with the name
// shortened when a varint boundary makes the comment's length jump over it.
func sizedNote(size int) (*message.Note, error) {
	const name = "buffstreams bench"
	for _, date := range []int64{1764000000, 0} {
		for nl := len(name); nl >= 0; nl-- {
			n := &message.Note{Name: name[:nl], Date: date}
			rest := size - proto.Size(n)
			for l := rest - 2; l >= 0 && l >= rest-6; l-- { // tag, varint length, comment
				n.Comment = strings.Repeat("x", l)
				if proto.Size(n) == size {
					return n, nil
				}
			}
			n.Comment = ""
			if proto.Size(n) == size {
				return n, nil
			}
		}
	}
	return nil, fmt.Errorf("protodelim: no test/message Note encodes to exactly %d bytes", size)
}

// serve unmarshals one Note at a time, checking its comment, and publishes
// its counts when the reader's buffer is empty (see bufioServer.serve).
func (s *protodelimServer) serve(c net.Conn) error {
	cnt := s.newCounter()
	r := bufio.NewReaderSize(c, bufioSize)
	var note message.Note
	want := s.comment
	var msgs uint64
	for {
		if msgs > 0 && r.Buffered() == 0 {
			cnt.add(msgs, msgs*uint64(s.size))
			msgs = 0
		}
		if err := protodelim.UnmarshalFrom(r, &note); err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("protodelim server: %w", err)
		}
		if len(note.Comment) != want {
			return fmt.Errorf("protodelim server: comment of %d bytes, want %d", len(note.Comment), want)
		}
		msgs++
	}
}

func (s *protodelimClients) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	w, note := s.writers[i], s.note
	var n uint64
	for n < limit && !stop.Load() {
		if _, err := protodelim.MarshalTo(w, note); err != nil {
			return n, err
		}
		n++
	}
	return n, w.Flush()
}
