package buffstreams

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Lock order on the listener side (this file, tcplistener_ack.go,
// heartbeat.go and manager.go), the one place it is written:
//
//  1. TCPListener.mu, then a served connection's locks. Close and Shutdown
//     hold TCPListener.mu while they close connections (TCPConn.Close takes
//     TCPConn.mu, then, with it released, the corker lock of the
//     connection's write engine) and read their sockets (TCPConn.current
//     takes TCPConn.mu). The connection's own locks follow the order of
//     tcpconn.go. No lock is held when TCPListener.mu is taken: endConn
//     takes it after TCPConn.Close has returned, and the callback and
//     OnConnEnd, which may call Broadcast or Conns, run with no lock held.
//  2. ackSessions.mu is taken alone. attach lets it go before it calls
//     SessionStore.Load, closes the session's previous connection or waits
//     for that connection's read loop.
//  3. recordWriter.mu is taken alone, by the read loop and the heartbeat
//     timer; under it are only the writes of records on the socket.
//  4. Manager.mu is taken alone: it is held only to read or change the
//     Manager's maps, never across a call into a listener or a connection.
//
// Without a lock: closing, draining and the counters are atomic; a
// session's owner and delivered position are atomic, the position
// published by the read loop with each acknowledgement and when it ends,
// before detach lets a newer connection of the session read it; a
// connection's frameReader belongs to its read loop alone.

// Accept back-off after a temporary error (such as running out of file
// descriptors), as net/http does: 5 ms, doubling up to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// defaultHandshakeTimeout bounds a TLS handshake when HandshakeTimeout is
// zero.
const defaultHandshakeTimeout = 10 * time.Second

// drainPause is how long a read loop waits for more bytes during Shutdown
// before it decides that the peer has sent everything it had.
const drainPause = 50 * time.Millisecond

// TCPListener accepts TCP connections and reads framed messages from each,
// handing every payload to the configured callback. Each accepted connection
// is served by one goroutine, which reads through a reused buffer, so many
// small messages arrive per system call and none is copied.
//
// All methods are safe for concurrent use. The callback must not call Close:
// Close waits for callbacks to return.
type TCPListener struct {
	wire         wire
	log          *slog.Logger
	connCallback ConnCallback   // the ConnCallback; nil if callback is used
	callback     ListenCallback // the Callback, called when connCallback is nil
	onEnd        func(*TCPConn, error)
	ln           net.Listener
	opts         listenerOptions
	connOpts     *connOptions  // settings of accepted connections
	done         chan struct{} // closed by Close
	closing      atomic.Bool   // set by Close; read loops check it between messages
	draining     atomic.Bool   // set by Shutdown; read loops stop at the first pause
	stats        listenerCounters
	wg           sync.WaitGroup // the accept loop and every read loop

	backoffMin, backoffMax time.Duration // Accept back-off bounds

	acks *ackSessions // acknowledged delivery when set; see tcplistener_ack.go

	mu      sync.Mutex
	conns   map[*TCPConn]struct{} // guarded by mu
	started bool                  // guarded by mu
	closed  bool                  // guarded by mu
}

// listenerOptions are the checked settings of a listener.
type listenerOptions struct {
	tls              *tls.Config
	handshakeTimeout time.Duration
	readTimeout      time.Duration
	idleTimeout      time.Duration
	maxConns         int
}

type listenerCounters struct {
	accepted, messages, bytes        atomic.Uint64
	callbackErrors, panics, badInput atomic.Uint64
	acceptErrors, refused, timeouts  atomic.Uint64
	tlsErrors, wrongProtocol         atomic.Uint64
	active                           atomic.Int64
}

// ListenerStats is a snapshot of a listener's counters. A connection's end
// is counted (in Panics, BadInput, Refused, Timeouts or TLSErrors) after it
// has left Active and its OnConnEnd call has returned.
type ListenerStats struct {
	Accepted       uint64 // connections accepted
	Active         int64  // connections open now
	Messages       uint64 // messages handed to the callback
	Bytes          uint64 // payload bytes of those messages
	CallbackErrors uint64 // callbacks that returned an error
	Panics         uint64 // callbacks that panicked (each closed its connection)
	BadInput       uint64 // connections closed for a malformed, oversized or truncated frame
	WrongProtocol  uint64 // of those, connections whose peer was recognised as speaking TLS, HTTP or another framing
	AcceptErrors   uint64 // temporary Accept errors, each followed by a back-off
	Refused        uint64 // connections closed at once because MaxConns were open
	Timeouts       uint64 // connections closed by ReadTimeout or IdleTimeout
	TLSErrors      uint64 // connections whose TLS handshake failed
}

// ListenTCP binds cfg.Address and returns a listener that is not yet
// accepting: call StartListening or StartListeningAsync. It is
// ListenTCPContext with context.Background().
func ListenTCP(cfg TCPListenerConfig) (*TCPListener, error) {
	return ListenTCPContext(context.Background(), cfg)
}

// ListenTCPContext is ListenTCP with a context that bounds binding the
// address. The context is not kept.
func ListenTCPContext(ctx context.Context, cfg TCPListenerConfig) (*TCPListener, error) {
	if err := checkListenerConfig(&cfg); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{KeepAlive: cfg.KeepAlive}
	ln, err := lc.Listen(ctx, orDefault(cfg.Network, "tcp"), cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("buffstreams: listen: %w", err)
	}
	l, err := newListener(ln, cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return l, nil
}

// NewListener returns a listener that serves the connections accepted from
// ln, of any kind (a Unix domain socket listener, a TLS listener, an
// in-memory one in tests), with the settings of cfg; cfg.Address,
// cfg.Network and cfg.KeepAlive are not used. Like ListenTCP's, it is not
// yet accepting: call StartListening or StartListeningAsync. Closing it
// closes ln.
func NewListener(ln net.Listener, cfg TCPListenerConfig) (*TCPListener, error) {
	if ln == nil {
		return nil, fmt.Errorf("%w: nil net.Listener", ErrInvalidConfig)
	}
	if err := checkListenerConfig(&cfg); err != nil {
		return nil, err
	}
	return newListener(ln, cfg)
}

func checkListenerConfig(cfg *TCPListenerConfig) error {
	switch {
	case cfg.Callback == nil && cfg.ConnCallback == nil:
		return fmt.Errorf("%w: TCPListenerConfig.Callback or ConnCallback is required", ErrInvalidConfig)
	case cfg.HandshakeTimeout < 0, cfg.ReadTimeout < 0, cfg.IdleTimeout < 0, cfg.WriteTimeout < 0, cfg.MaxConns < 0:
		return fmt.Errorf("%w: negative duration or MaxConns in TCPListenerConfig", ErrInvalidConfig)
	}
	return nil
}

// newListener serves connections accepted from ln, with a checked
// configuration.
func newListener(ln net.Listener, cfg TCPListenerConfig) (*TCPListener, error) {
	w, err := newWire(cfg.MaxMessageSize, cfg.Framing)
	if err != nil {
		return nil, err
	}
	a, err := newAckOptions(cfg.Acks, w)
	if err != nil {
		return nil, err
	}
	return &TCPListener{
		acks:         newAckSessions(a),
		wire:         w,
		log:          newLogger(cfg.EnableLogging, cfg.Logger),
		connCallback: cfg.ConnCallback,
		callback:     cfg.Callback,
		onEnd:        cfg.OnConnEnd,
		ln:           ln,
		opts: listenerOptions{
			tls:              cfg.TLSConfig,
			handshakeTimeout: orDefault(cfg.HandshakeTimeout, defaultHandshakeTimeout),
			readTimeout:      cfg.ReadTimeout,
			idleTimeout:      cfg.IdleTimeout,
			maxConns:         cfg.MaxConns,
		},
		connOpts: &connOptions{writeTimeout: cfg.WriteTimeout},
		done:     make(chan struct{}),
		conns:    make(map[*TCPConn]struct{}),

		backoffMin: acceptBackoffMin,
		backoffMax: acceptBackoffMax,
	}, nil
}

// Addr returns the address the listener is bound to, with the port the
// system chose if the configuration asked for port 0.
func (l *TCPListener) Addr() net.Addr { return l.ln.Addr() }

// StartListening accepts connections until the listener is closed, and then
// returns nil. It returns an error at once if the listener is already
// accepting or closed, and later if Accept fails for good (temporary
// failures, such as running out of file descriptors, are retried after a
// back-off).
func (l *TCPListener) StartListening() error {
	if err := l.begin(); err != nil {
		return err
	}
	defer l.wg.Done()
	return l.acceptLoop()
}

// StartListeningAsync starts accepting connections in a new goroutine and
// returns at once: nil if accepting started, or the reason it could not
// (already accepting, or closed). A later failure of Accept is logged.
func (l *TCPListener) StartListeningAsync() error {
	if err := l.begin(); err != nil {
		return err
	}
	go func() {
		defer l.wg.Done()
		if err := l.acceptLoop(); err != nil {
			l.log.Error("buffstreams: listener stopped accepting", "addr", l.Addr(), "err", err)
		}
	}()
	return nil
}

// begin marks the listener as accepting and counts the accept loop.
func (l *TCPListener) begin() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return fmt.Errorf("buffstreams: listener is closed: %w", net.ErrClosed)
	case l.started:
		return ErrAlreadyListening
	}
	l.started = true
	l.wg.Add(1)
	return nil
}

// acceptLoop accepts until the listener closes or Accept fails for good.
// The caller has counted it in l.wg.
func (l *TCPListener) acceptLoop() error {
	var delay time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done: // closed by Close or Shutdown
				return nil
			default:
			}
			if !isTemporary(err) {
				return fmt.Errorf("buffstreams: accept: %w", err)
			}
			l.stats.acceptErrors.Add(1)
			delay = min(max(2*delay, l.backoffMin), l.backoffMax)
			l.log.Warn("buffstreams: accept failed; retrying", "addr", l.Addr(), "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return nil
			}
			continue
		}
		delay = 0
		l.track(nc)
	}
}

// isTemporary reports whether an Accept error may go away by itself.
func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// track registers an accepted connection and starts its read loop, or ends
// it at once if the listener was closed meanwhile or MaxConns are open.
func (l *TCPListener) track(nc net.Conn) {
	log := l.log
	if ra := nc.RemoteAddr(); ra != nil && log.Enabled(context.Background(), slog.LevelError) {
		log = log.With("remote", ra.String())
	}
	var refused error
	l.mu.Lock()
	switch {
	case l.closed:
		refused = errListenerClosed
	case l.opts.maxConns > 0 && len(l.conns) >= l.opts.maxConns:
		refused = fmt.Errorf("%w: MaxConns (%d) connections are open", ErrTooManyConnections, l.opts.maxConns)
	}
	if refused != nil {
		l.mu.Unlock()
		l.endConn(newAcceptedConn(nc, l.wire, log, l.connOpts), refused, false)
		return
	}
	if l.opts.tls != nil {
		nc = tls.Server(nc, l.opts.tls)
	}
	c := newAcceptedConn(nc, l.wire, log, l.connOpts)
	if l.acks != nil {
		c.eng = ackServedEngine{c}
	}
	l.conns[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	l.stats.accepted.Add(1)
	l.stats.active.Add(1)
	go l.serve(c, nc)
}

// serve runs a connection: the TLS handshake, the hello of acknowledged
// delivery when the listener has Acks on, and then the read loop, until the
// connection fails or the listener closes. nc is the connection c was made
// with: serve uses it rather than c.nc, which a failed write (a reply, or
// Broadcast) sets to nil under c.mu at any time. Every way out sets cause,
// which endConn then reports.
func (l *TCPListener) serve(c *TCPConn, nc net.Conn) {
	var cause error
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("buffstreams: callback panicked; closing the connection",
				"err", ErrCallbackPanic, "panic", v, "stack", string(debug.Stack()))
			cause = fmt.Errorf("%w: %v", ErrCallbackPanic, v)
		}
		l.endConn(c, cause, true)
		l.wg.Done()
	}()
	if cause = l.handshake(nc); cause != nil {
		return
	}
	var a *ackReader
	if l.acks != nil {
		if a, cause = l.startAcks(c, nc); cause != nil { // tcplistener_ack.go
			return
		}
		defer a.letGo() // before endConn, and also after a callback's panic
	}
	cause = l.readLoop(c, nc, a)
	if a == nil {
		l.refuseBadInput(nc, &c.rd, cause)
	}
}

// refuseBadInput tells a dialer without acknowledged delivery, whose bytes
// could not be read as frames, why its connection is closed, in the
// refusal of the acknowledgement protocol (docs/wire.md): a dialer of this
// package reads it and names the mismatch in its own errors (see
// ErrPeerRefused). A BuffStreams 2.0 dialer never reads, and never sees
// it, nor does a peer of another protocol (HTTP, TLS, SSH), which gets no
// answer in ours. The write is bounded, and nothing is read after it.
func (l *TCPListener) refuseBadInput(nc net.Conn, rd *frameReader, cause error) {
	if errors.Is(cause, errAcksWanted) { // refused already, with its own reason
		return
	}
	if rd.r == 0 && recogniseProtocol(rd.buf[:rd.w]) != "" {
		return
	}
	reason := byte(reasonFraming)
	switch {
	case errors.Is(cause, ErrMessageTooLarge):
		reason = reasonMax
	case errors.Is(cause, ErrWrongProtocol), errors.Is(cause, ErrMalformedHeader):
	default:
		return
	}
	nc.SetWriteDeadline(time.Now().Add(min(orDefault(l.connOpts.writeTimeout, refuseWait), refuseWait)))
	if _, err := nc.Write(appendRefuse(nil, reason, cause.Error())); err == nil {
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
}

// refuseWait bounds the write of a refusal to a dialer without
// acknowledged delivery.
const refuseWait = time.Second

// readLoop is a connection's one read loop, with or without acknowledged
// delivery: it hands every complete frame in the buffer to the callback,
// then reads again, until the connection fails or the listener closes, and
// returns why it stopped. Without acknowledged delivery a is nil; with it,
// a (tcplistener_ack.go) is told of each message after its callback and of
// each point where everything that arrived has been delivered, and says
// goaway during Shutdown. The errors are named the same way in both modes.
//
// Per message the loop does no more than a plain read loop must: the only
// additions for acknowledged delivery are two tests of a nil pointer.
func (l *TCPListener) readLoop(c *TCPConn, nc net.Conn, a *ackReader) error {
	rd, connCallback, callback := &c.rd, l.connCallback, l.callback
	timed := l.opts.readTimeout > 0 || l.opts.idleTimeout > 0
	replies, _ := c.eng.(*syncEngine) // nil with acknowledged delivery
	// The peer has shown that it speaks our protocol: by a frame, or by the
	// hello of acknowledged delivery. Until then, what it sent may be the
	// hello of a dialer with Acks on, or another protocol to name.
	spoke := a != nil
	var partialSince time.Time // when the frame in progress began to arrive
	var msgs, nbytes uint64    // delivered since the last count
	defer func() { l.countDelivered(c, msgs, nbytes) }()
	for {
		p, ok, err := rd.frame()
		if ok {
			if l.closing.Load() || a != nil && a.superseded() {
				return errListenerClosed // Close, or a newer connection of the session
			}
			if !spoke {
				if err := l.helloWithoutAcks(nc, rd); err != nil {
					return err
				}
				spoke = true
			}
			partialSince = time.Time{} // the next frame's ReadTimeout starts afresh
			var cerr error
			if connCallback != nil {
				cerr = connCallback(c, p)
			} else {
				cerr = callback(p)
			}
			msgs++
			nbytes += uint64(len(p))
			if a != nil {
				if err := a.afterMessage(len(p), cerr); err != nil {
					return err
				}
			} else if cerr != nil {
				l.stats.callbackErrors.Add(1)
				c.log.Error("buffstreams: callback returned an error", "err", cerr)
			}
			continue
		}
		// Everything that arrived is delivered: count it, acknowledge it,
		// and read more.
		l.countDelivered(c, msgs, nbytes)
		msgs, nbytes = 0, 0
		if !spoke {
			if err := l.helloWithoutAcks(nc, rd); err != nil {
				return err
			}
		}
		if err != nil {
			return l.sniffFirst(rd, spoke, err)
		}
		if a != nil {
			if l.draining.Load() {
				return a.goaway()
			}
			if err := a.caughtUp(); err != nil {
				return err
			}
		} else if replies != nil {
			// Replies to the requests just delivered may be held under the
			// cork (cork.go): they leave now, not when the cork's timer
			// runs. One atomic load when nothing is held.
			replies.flush()
		}
		partial := rd.buffered() > 0
		switch {
		case l.draining.Load():
			nc.SetReadDeadline(time.Now().Add(drainPause))
		case timed:
			partialSince = l.setReadDeadline(nc, partial, partialSince)
		}
		if err := rd.fill(); err != nil {
			switch {
			case l.draining.Load() && errors.Is(err, os.ErrDeadlineExceeded):
				if a != nil {
					return a.goaway()
				}
				return errListenerClosed // the peer paused during Shutdown
			case errors.Is(err, os.ErrDeadlineExceeded):
				return l.sniffFirst(rd, spoke, l.timedOut(partial, err))
			default:
				return l.sniffFirst(rd, spoke, err) // a first frame cut short
			}
		}
	}
}

// errListenerClosed is the cause of the end of connections closed by the
// listener's Close or Shutdown.
var errListenerClosed = fmt.Errorf("buffstreams: listener closed: %w", net.ErrClosed)

// timedOut names the timeout that a read's deadline error enforced: the
// frame in progress (partial) took longer than ReadTimeout, or no frame
// began within IdleTimeout. The error still wraps os.ErrDeadlineExceeded
// and is a net.Error whose Timeout is true.
func (l *TCPListener) timedOut(partial bool, err error) error {
	if partial {
		return fmt.Errorf("buffstreams: frame not complete within ReadTimeout (%v): %w", l.opts.readTimeout, err)
	}
	return fmt.Errorf("buffstreams: no frame within IdleTimeout (%v): %w", l.opts.idleTimeout, err)
}

// sniffFirst returns err naming the protocol the peer speaks when the
// connection fails before the peer has spoken ours (by a frame, or by the
// hello of acknowledged delivery) and the bytes received so far show what
// the peer speaks instead.
//
// A bad header after the first frame, with the BuffStreams framing, gets a
// hint instead: a dialer with a larger MaxMessageSize writes wider headers,
// whose first frames read as plausible ones, so the mix-up shows only later.
func (l *TCPListener) sniffFirst(rd *frameReader, spoke bool, err error) error {
	if spoke || rd.r != 0 || rd.w == 0 {
		return l.hintMaxMessageSize(err)
	}
	return sniff(rd.buf[:rd.w], l.wire, err)
}

// hintMaxMessageSize adds to err, a bad header of the BuffStreams framing,
// that both ends must set the same MaxMessageSize.
func (l *TCPListener) hintMaxMessageSize(err error) error {
	f, ok := l.wire.framing.(zigzagFraming)
	if !ok || errors.Is(err, ErrWrongProtocol) || !errors.Is(err, ErrMalformedHeader) && !errors.Is(err, ErrMessageTooLarge) {
		return err
	}
	return fmt.Errorf("%w; with the buffstreams framing both ends must set the same MaxMessageSize: this listener's is %d, with %d-byte headers, and a dialer's other setting shows as bad headers", err, l.wire.max, f.width)
}

// handshake completes the TLS handshake of a connection, if the listener
// serves TLS, and returns why it failed, wrapping ErrTLSHandshake.
func (l *TCPListener) handshake(nc net.Conn) error {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		l.refuseTLSHello(err) // tcplistener_ack.go
		return fmt.Errorf("%w: %w", ErrTLSHandshake, err)
	}
	return nil
}

// setReadDeadline sets the deadline of the next read from ReadTimeout, when
// a frame is in progress, or IdleTimeout, between frames, and returns when
// the frame in progress began to arrive.
func (l *TCPListener) setReadDeadline(nc net.Conn, partial bool, since time.Time) time.Time {
	now := time.Now()
	var d time.Time
	switch {
	case partial && l.opts.readTimeout > 0:
		if since.IsZero() {
			since = now
		}
		d = since.Add(l.opts.readTimeout)
	case partial:
		since = time.Time{}
	case l.opts.idleTimeout > 0:
		since = time.Time{}
		d = now.Add(l.opts.idleTimeout)
	default:
		since = time.Time{}
	}
	nc.SetReadDeadline(d)
	return since
}

// countDelivered adds a batch of delivered messages to the counters, once
// per read rather than once per message.
func (l *TCPListener) countDelivered(c *TCPConn, msgs, nbytes uint64) {
	if msgs == 0 {
		return
	}
	// Bytes first: Stats loads messages first, so a snapshot never shows a
	// message without its bytes.
	l.stats.bytes.Add(nbytes)
	l.stats.messages.Add(msgs)
	c.stats.bytesIn.Add(nbytes)
	c.stats.msgsIn.Add(msgs)
}

// endConn is the one place where a connection's end is recorded: it
// classifies the cause and logs it, closes the connection, calls OnConnEnd, forgets
// the connection if it was tracked, and then counts the cause, so that a
// count seen in Stats means that the connection has left Active, its hook
// has returned and its line has been logged. cause is what stopped the read
// loop, or the reason the connection was refused at accept time.
func (l *TCPListener) endConn(c *TCPConn, cause error, tracked bool) {
	n1, n2, err := l.classifyEnd(c, cause)
	c.Close()
	if l.onEnd != nil {
		l.callOnEnd(c, err)
	}
	// The counters of the end come before Active falls, so that a reader
	// of Stats who sees the connection gone also sees why it ended.
	for _, n := range [...]*atomic.Uint64{n1, n2} {
		if n != nil {
			n.Add(1)
		}
	}
	if tracked {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		l.stats.active.Add(-1)
	}
}

// classifyEnd logs cause and returns the counters, if any, that count it,
// and the error OnConnEnd reports for it.
func (l *TCPListener) classifyEnd(c *TCPConn, cause error) (n1, n2 *atomic.Uint64, err error) {
	switch {
	case errors.Is(cause, ErrCallbackPanic):
		// Logged, with the stack, where it was recovered.
		return &l.stats.panics, nil, cause
	case errors.Is(cause, ErrTooManyConnections):
		c.log.Warn("buffstreams: refusing connection", "err", cause)
		return &l.stats.refused, nil, cause
	case errors.Is(cause, ErrWrongProtocol):
		c.log.Warn("buffstreams: closing connection after bad input", "err", cause)
		return &l.stats.badInput, &l.stats.wrongProtocol, cause
	case errors.Is(cause, ErrMessageTooLarge), errors.Is(cause, ErrMalformedHeader), errors.Is(cause, ErrAckProtocol):
		c.log.Warn("buffstreams: closing connection after bad input", "err", cause)
		return &l.stats.badInput, nil, cause
	case cause == errListenerClosed, l.closing.Load():
		// Whatever the read saw, Close (or Shutdown, or Close during
		// Shutdown) made it.
		return nil, nil, errListenerClosed
	case c.closed.Load():
		return nil, nil, errClosed // conn.Close, from a callback or elsewhere
	case errors.Is(cause, ErrTLSHandshake):
		c.log.Warn("buffstreams: closing connection", "err", cause)
		return &l.stats.tlsErrors, nil, cause
	case errors.Is(cause, io.EOF):
		c.log.Debug("buffstreams: peer closed the connection")
		return nil, nil, nil
	case errors.Is(cause, io.ErrUnexpectedEOF):
		c.log.Warn("buffstreams: closing connection after bad input", "err", cause)
		return &l.stats.badInput, nil, cause
	case errors.Is(cause, os.ErrDeadlineExceeded):
		c.log.Warn("buffstreams: closing connection after a read timeout", "err", cause)
		return &l.stats.timeouts, nil, cause
	}
	c.log.Warn("buffstreams: connection failed", "err", cause)
	return nil, nil, cause
}

// callOnEnd calls OnConnEnd, recovering a panic in it.
func (l *TCPListener) callOnEnd(c *TCPConn, err error) {
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("buffstreams: OnConnEnd panicked", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	l.onEnd(c, err)
}

// Close stops accepting, closes every accepted connection and waits for
// their read loops to end: when it returns, none of the listener's
// goroutines is running and the callback will not be called again. A
// callback in progress is waited for; messages already read but not yet
// handed to the callback are dropped (Shutdown delivers them); Close during
// Shutdown closes at once what Shutdown is still draining. Calling Close
// again does nothing.
func (l *TCPListener) Close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.done)
		l.ln.Close()
	}
	l.closeConns()
	l.mu.Unlock()
	l.wg.Wait()
}

// closeConns closes every connection, once: after Close, or when Close is
// called or the context ends during Shutdown. l.mu is held.
func (l *TCPListener) closeConns() {
	if l.closing.Load() {
		return
	}
	l.closing.Store(true)
	for c := range l.conns {
		c.Close()
	}
}

// Shutdown stops accepting, then lets every connection hand to the callback
// the frames it has received, and closes it once its peer pauses (sends
// nothing for 50 milliseconds) or closes. It returns nil when every
// connection is done. If ctx ends first, Shutdown closes what is left as
// Close does and returns ctx.Err(). Either way, when it returns none of the
// listener's goroutines is running.
func (l *TCPListener) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.done)
		l.draining.Store(true)
		l.ln.Close()
		for c := range l.conns {
			if nc := c.current(); nc != nil {
				nc.SetReadDeadline(time.Now().Add(drainPause)) // wakes a read loop waiting for bytes
			}
		}
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		l.closeConns()
		l.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Broadcast writes msg to every connection the listener is serving, except
// the one given (nil for none), one after the other, and returns how many
// got it. Each write is bounded by WriteTimeout; a connection whose write
// fails is closed, and the failures are joined in the error.
func (l *TCPListener) Broadcast(msg []byte, except *TCPConn) (int, error) {
	l.mu.Lock()
	conns := make([]*TCPConn, 0, len(l.conns))
	for c := range l.conns {
		if c != except {
			conns = append(conns, c)
		}
	}
	l.mu.Unlock()
	var errs []error
	n := 0
	for _, c := range conns {
		if _, err := c.Write(msg); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Conns returns the number of connections being served.
func (l *TCPListener) Conns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Stats returns a snapshot of the listener's counters. It does not block the
// read loops: they publish their counts once per read system call.
func (l *TCPListener) Stats() ListenerStats {
	// The causes of ends first, then Active, then Accepted: each is added
	// before the next is loaded (see endConn and track), so a snapshot never
	// shows an ended connection as active, nor more active than accepted.
	st := ListenerStats{
		Panics:        l.stats.panics.Load(),
		BadInput:      l.stats.badInput.Load(),
		WrongProtocol: l.stats.wrongProtocol.Load(),
		Refused:       l.stats.refused.Load(),
		Timeouts:      l.stats.timeouts.Load(),
		TLSErrors:     l.stats.tlsErrors.Load(),
	}
	st.Active = l.stats.active.Load()
	st.Accepted = l.stats.accepted.Load()
	st.Messages = l.stats.messages.Load()
	st.Bytes = l.stats.bytes.Load()
	st.CallbackErrors = l.stats.callbackErrors.Load()
	st.AcceptErrors = l.stats.acceptErrors.Load()
	return st
}
