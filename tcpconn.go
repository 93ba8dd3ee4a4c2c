package buffstreams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
)

// smallWrite is the largest payload Write copies next to its header; larger
// payloads go out in one vectored write (writev) with the header, uncopied.
const smallWrite = 16 << 10

// errNotDialed is returned by Reopen on a connection accepted by a listener.
var errNotDialed = errors.New("buffstreams: an accepted connection cannot be reopened")

// TCPConn is one connection carrying framed messages. DialTCP returns a
// dialed one; a TCPListener makes one for each connection it accepts.
//
// All methods are safe for concurrent use. Write adds the header to each
// message; concurrent Writes take turns, so each message goes out whole,
// never interleaved with another. Read returns one whole message; it may run
// alongside Writes, and concurrent Reads take turns.
//
// When a Write or Read fails (other than a Write refused with
// ErrMessageTooLarge), the connection is closed; the next Write or Read on a
// dialed connection dials the address again. Messages whose Write returned
// an error were not sent and are not counted as sent.
type TCPConn struct {
	wire   wire
	log    *slog.Logger
	addr   string             // the address dialed
	dialed bool               // false for a connection accepted by a listener
	stats  connCounters       // atomic
	hdr    [maxHeaderLen]byte // scratch for vectored writes; guarded by wmu

	// closed is set by Close and cleared by Reopen, with mu held; it is
	// read without.
	closed atomic.Bool

	// mu guards nc, dialCtx and cancelDial. nc is written with both wmu and
	// mu held, so holding either is enough to read it.
	mu         sync.Mutex
	nc         net.Conn           // nil after a failure, until the next dial
	dialCtx    context.Context    // bounds dials; cancelled by Close
	cancelDial context.CancelFunc // cancels dialCtx

	wmu  sync.Mutex  // serializes writes and dials
	wbuf []byte      // frame under construction; guarded by wmu
	iov  [2][]byte   // header and payload of a vectored write; guarded by wmu
	vec  net.Buffers // the view of iov that WriteTo consumes; guarded by wmu

	rmu sync.Mutex  // serializes reads
	rd  frameReader // guarded by rmu (or owned by the listener's read loop)
}

// connCounters are a connection's counters, updated atomically.
type connCounters struct {
	msgsOut, bytesOut, writeErrors atomic.Uint64
	msgsIn, bytesIn                atomic.Uint64
	reconnects                     atomic.Uint64
}

// ConnStats is a snapshot of a connection's counters.
type ConnStats struct {
	MessagesWritten uint64 // messages whose Write succeeded
	BytesWritten    uint64 // payload bytes of those messages, headers excluded
	WriteErrors     uint64 // Writes that returned an error; nothing of them counts as written
	MessagesRead    uint64 // messages read, by Read or by a listener's read loop
	BytesRead       uint64 // payload bytes of those messages
	Reconnects      uint64 // successful dials after a failure or by Reopen
}

// DialTCP dials cfg.Address and returns a connection that writes and reads
// framed messages. It is DialTCPContext with context.Background().
func DialTCP(cfg *TCPConnConfig) (*TCPConn, error) {
	return DialTCPContext(context.Background(), cfg)
}

// DialTCPContext is DialTCP with a context that bounds the dial. The context
// is not kept: later reconnects are not bound by it.
func DialTCPContext(ctx context.Context, cfg *TCPConnConfig) (*TCPConn, error) {
	if cfg == nil || cfg.Address == "" {
		return nil, fmt.Errorf("%w: TCPConnConfig.Address is required", ErrInvalidConfig)
	}
	w, err := newWire(cfg.MaxMessageSize, cfg.Framing)
	if err != nil {
		return nil, err
	}
	c := &TCPConn{
		wire:   w,
		log:    newLogger(cfg.EnableLogging, cfg.Logger).With("remote", cfg.Address),
		addr:   cfg.Address,
		dialed: true,
	}
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.nc = nc
	c.dialCtx, c.cancelDial = context.WithCancel(context.Background())
	c.rd = newFrameReader(nc, w)
	return c, nil
}

// newAcceptedConn wraps a connection accepted by a listener.
func newAcceptedConn(nc net.Conn, w wire, log *slog.Logger) *TCPConn {
	c := &TCPConn{wire: w, log: log, nc: nc}
	c.rd = newFrameReader(nc, w)
	return c
}

func (c *TCPConn) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("buffstreams: dial %s: %w", c.addr, err)
	}
	return nc, nil
}

// Write sends data as one message, adding the header. It returns len(data)
// once the whole frame has been handed to the kernel; on error it returns 0,
// and the message was not sent (or only part of it was, which the peer
// cannot mistake for a message, as the connection is closed). A message
// longer than MaxMessageSize is refused with ErrMessageTooLarge before
// anything is sent. If the previous Write failed, Write first dials the
// address again.
func (c *TCPConn) Write(data []byte) (int, error) {
	if len(data) > c.wire.max {
		c.stats.writeErrors.Add(1)
		return 0, tooLarge(uint64(len(data)), c.wire.max)
	}
	c.wmu.Lock()
	nc, err := c.connLocked()
	if err == nil {
		if err = c.writeFrame(nc, data); err != nil {
			err = c.failLocked(nc, err)
		}
	}
	c.wmu.Unlock()
	if err != nil {
		c.stats.writeErrors.Add(1)
		return 0, err
	}
	c.stats.msgsOut.Add(1)
	c.stats.bytesOut.Add(uint64(len(data)))
	return len(data), nil
}

// writeFrame writes the header and data to nc in one write call (one system
// call unless the socket buffer fills), copying small payloads next to the
// header and sending large ones as the second buffer of a vectored write.
// c.wmu is held.
func (c *TCPConn) writeFrame(nc net.Conn, data []byte) error {
	if len(data) <= smallWrite {
		if c.wbuf == nil {
			c.wbuf = make([]byte, 0, maxHeaderLen+min(c.wire.max, smallWrite))
		}
		h := c.wire.framing.putHeader(c.wbuf[:maxHeaderLen], len(data))
		_, err := nc.Write(append(c.wbuf[:h], data...))
		return wrapWrite(err)
	}
	h := c.wire.framing.putHeader(c.hdr[:], len(data))
	c.iov = [2][]byte{c.hdr[:h], data}
	c.vec = c.iov[:]
	_, err := c.vec.WriteTo(nc) // consumes c.vec
	c.iov = [2][]byte{}         // keep no reference to the caller's data
	return wrapWrite(err)
}

func wrapWrite(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("buffstreams: write: %w", err)
}

// errClosed is returned by operations on a closed connection.
var errClosed = fmt.Errorf("buffstreams: connection is closed: %w", net.ErrClosed)

// connLocked returns the live connection, dialing again if a failure closed
// it. c.wmu is held.
func (c *TCPConn) connLocked() (net.Conn, error) {
	if c.closed.Load() {
		return nil, errClosed
	}
	if nc := c.nc; nc != nil {
		return nc, nil
	}
	if !c.dialed {
		return nil, errClosed
	}
	c.mu.Lock()
	ctx := c.dialCtx
	c.mu.Unlock()
	nc, err := c.dialOrClosed(ctx)
	if err != nil {
		if err != errClosed {
			c.log.Warn("buffstreams: reconnect failed", "err", err)
		}
		return nil, err
	}
	c.stats.reconnects.Add(1)
	c.log.Info("buffstreams: reconnected")
	return nc, nil
}

// dialOrClosed dials and makes the new connection current, unless Close is
// called meanwhile, in which case it returns errClosed. c.wmu is held.
func (c *TCPConn) dialOrClosed(ctx context.Context) (net.Conn, error) {
	nc, err := c.dial(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		if nc != nil {
			nc.Close()
		}
		return nil, errClosed
	}
	if err != nil {
		return nil, err
	}
	c.nc = nc
	return nc, nil
}

// failLocked closes nc after err and forgets it, so that the next operation
// dials again, and returns the error to report. c.wmu is held.
func (c *TCPConn) failLocked(nc net.Conn, err error) error {
	nc.Close()
	c.mu.Lock()
	if c.nc == nc {
		c.nc = nil
	}
	c.mu.Unlock()
	switch {
	case c.closed.Load():
		return errClosed
	case errors.Is(err, net.ErrClosed):
		// Reopen or a failed call on another goroutine closed the socket
		// under this call; the TCPConn itself is open.
		return fmt.Errorf("buffstreams: the connection was closed by another call and will be dialed again: %v", err)
	case !isClosedErr(err):
		c.log.Warn("buffstreams: connection failed", "err", err)
	}
	return err
}

// Read reads the next message into b and returns its length. Unlike an
// io.Reader it never returns part of a message: if b is shorter than the
// message, Read returns io.ErrShortBuffer and keeps the message for the next
// Read, so do not wrap a TCPConn in a bufio.Reader or io.Copy from it. Read
// returns io.EOF when the peer closed the connection between messages, and an
// error wrapping ErrMessageTooLarge, ErrMalformedHeader or io.ErrUnexpectedEOF
// (closing the connection) when it sent something else. After an error, the
// next Read or Write dials again.
func (c *TCPConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return 0, errClosed
	}
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil {
		c.wmu.Lock()
		var err error
		nc, err = c.connLocked()
		c.wmu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	if c.rd.src != nc {
		c.rd.reset(nc)
	}
	p, err := c.rd.next()
	if err != nil {
		nc.Close() // unblocks a Write on nc, which holds c.wmu
		c.wmu.Lock()
		err = c.failLocked(nc, err)
		c.wmu.Unlock()
		return 0, err
	}
	if len(b) < len(p) {
		c.rd.unread()
		return 0, io.ErrShortBuffer
	}
	c.stats.msgsIn.Add(1)
	c.stats.bytesIn.Add(uint64(len(p)))
	return copy(b, p), nil
}

// Reopen closes the current connection, if any, and dials the address again.
// It works whatever state the connection is in: after a failed Write, and
// after Close, which it undoes. A Close during Reopen wins: Reopen then
// returns an error matching net.ErrClosed. Reopen is for dialed connections
// only.
func (c *TCPConn) Reopen() error {
	if !c.dialed {
		return errNotDialed
	}
	c.mu.Lock()
	old := c.nc
	c.mu.Unlock()
	if old != nil {
		old.Close() // unblocks a Write stuck on a peer that stopped reading
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.nc != nil { // old, or one a Write dialed since
		c.nc.Close()
		c.nc = nil
	}
	c.closed.Store(false)
	if c.cancelDial != nil {
		c.cancelDial()
	}
	c.dialCtx, c.cancelDial = context.WithCancel(context.Background())
	ctx := c.dialCtx
	c.mu.Unlock()
	if _, err := c.dialOrClosed(ctx); err != nil {
		return err
	}
	c.stats.reconnects.Add(1)
	return nil
}

// Close closes the connection. Writes and Reads in progress, and a dial in
// progress, return errors; later ones return errors matching net.ErrClosed
// until Reopen is called. Closing a closed connection does nothing and
// returns nil.
func (c *TCPConn) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	c.closed.Store(true)
	if c.cancelDial != nil {
		c.cancelDial()
	}
	nc := c.nc
	c.mu.Unlock()
	if nc == nil {
		return nil
	}
	if err := nc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// LocalAddr returns the local address of the current connection, or nil if
// it is down.
func (c *TCPConn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc == nil {
		return nil
	}
	return c.nc.LocalAddr()
}

// RemoteAddr returns the remote address of the current connection, or nil if
// it is down.
func (c *TCPConn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc == nil {
		return nil
	}
	return c.nc.RemoteAddr()
}

// MaxMessageSize returns the effective limit on payload length.
func (c *TCPConn) MaxMessageSize() int { return c.wire.max }

// Stats returns a snapshot of the connection's counters. It does not block.
func (c *TCPConn) Stats() ConnStats {
	return ConnStats{
		MessagesWritten: c.stats.msgsOut.Load(),
		BytesWritten:    c.stats.bytesOut.Load(),
		WriteErrors:     c.stats.writeErrors.Load(),
		MessagesRead:    c.stats.msgsIn.Load(),
		BytesRead:       c.stats.bytesIn.Load(),
		Reconnects:      c.stats.reconnects.Load(),
	}
}
