package buffstreams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Accept back-off after a temporary error (such as running out of file
// descriptors), as net/http does: 5 ms, doubling up to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// TCPListener accepts TCP connections and reads framed messages from each,
// handing every payload to the configured callback. Each accepted connection
// is served by one goroutine, which reads through a reused buffer, so many
// small messages arrive per system call and none is copied.
//
// All methods are safe for concurrent use. The callback must not call Close:
// Close waits for callbacks to return.
type TCPListener struct {
	wire     wire
	log      *slog.Logger
	logging  bool
	callback ListenCallback
	ln       net.Listener
	done     chan struct{} // closed by Close
	closing  atomic.Bool   // set by Close; read loops check it between messages
	stats    listenerCounters
	wg       sync.WaitGroup // the accept loop and every read loop

	backoffMin, backoffMax time.Duration // Accept back-off bounds

	mu      sync.Mutex
	conns   map[*TCPConn]struct{} // guarded by mu
	started bool                  // guarded by mu
	closed  bool                  // guarded by mu
}

type listenerCounters struct {
	accepted, messages, bytes        atomic.Uint64
	callbackErrors, panics, badInput atomic.Uint64
	acceptErrors                     atomic.Uint64
	active                           atomic.Int64
}

// ListenerStats is a snapshot of a listener's counters.
type ListenerStats struct {
	Accepted       uint64 // connections accepted
	Active         int64  // connections open now
	Messages       uint64 // messages handed to the callback
	Bytes          uint64 // payload bytes of those messages
	CallbackErrors uint64 // callbacks that returned an error
	Panics         uint64 // callbacks that panicked (each closed its connection)
	BadInput       uint64 // connections closed for a malformed, oversized or truncated frame
	AcceptErrors   uint64 // temporary Accept errors, each followed by a back-off
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
	if cfg.Callback == nil {
		return nil, fmt.Errorf("%w: TCPListenerConfig.Callback is required", ErrInvalidConfig)
	}
	w, err := newWire(cfg.MaxMessageSize, cfg.Framing)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("buffstreams: listen: %w", err)
	}
	return newListener(ln, w, cfg), nil
}

// newListener serves connections accepted from ln, with a checked
// configuration.
func newListener(ln net.Listener, w wire, cfg TCPListenerConfig) *TCPListener {
	return &TCPListener{
		wire:     w,
		log:      newLogger(cfg.EnableLogging, cfg.Logger),
		logging:  cfg.EnableLogging || cfg.Logger != nil,
		callback: cfg.Callback,
		ln:       ln,
		done:     make(chan struct{}),
		conns:    make(map[*TCPConn]struct{}),

		backoffMin: acceptBackoffMin,
		backoffMax: acceptBackoffMax,
	}
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
			if l.closing.Load() {
				return nil
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

// track registers an accepted connection and starts its read loop, or closes
// it if the listener was closed meanwhile.
func (l *TCPListener) track(nc net.Conn) {
	log := l.log
	if ra := nc.RemoteAddr(); l.logging && ra != nil {
		log = log.With("remote", ra.String())
	}
	c := newAcceptedConn(nc, l.wire, log)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		nc.Close()
		return
	}
	l.conns[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	l.stats.accepted.Add(1)
	l.stats.active.Add(1)
	go l.serve(c)
}

// serve is a connection's read loop: it hands every complete frame in the
// buffer to the callback, then reads again, until the connection fails or
// the listener closes.
func (l *TCPListener) serve(c *TCPConn) {
	var msgs, nbytes uint64
	defer func() {
		if v := recover(); v != nil {
			l.stats.panics.Add(1)
			c.log.Error("buffstreams: callback panicked; closing the connection",
				"err", ErrCallbackPanic, "panic", v, "stack", string(debug.Stack()))
		}
		l.count(c, msgs, nbytes)
		l.untrack(c)
		l.wg.Done()
	}()
	rd, cb := &c.rd, l.callback
	for {
		p, ok, err := rd.frame()
		if ok {
			if l.closing.Load() {
				return
			}
			if err := cb(p); err != nil {
				l.stats.callbackErrors.Add(1)
				c.log.Error("buffstreams: callback returned an error", "err", err)
			}
			msgs++
			nbytes += uint64(len(p))
			continue
		}
		l.count(c, msgs, nbytes)
		msgs, nbytes = 0, 0
		if err == nil {
			err = rd.fill()
		}
		if err != nil {
			l.ended(c, err)
			return
		}
	}
}

// count adds a batch of delivered messages to the counters, once per read
// rather than once per message.
func (l *TCPListener) count(c *TCPConn, msgs, nbytes uint64) {
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

// ended records why a read loop stopped.
func (l *TCPListener) ended(c *TCPConn, err error) {
	switch {
	case l.closing.Load() || c.closed.Load():
	case errors.Is(err, io.EOF):
		c.log.Debug("buffstreams: peer closed the connection")
	case errors.Is(err, ErrMessageTooLarge), errors.Is(err, ErrMalformedHeader), errors.Is(err, io.ErrUnexpectedEOF):
		l.stats.badInput.Add(1)
		c.log.Warn("buffstreams: closing connection after bad input", "err", err)
	default:
		c.log.Warn("buffstreams: connection failed", "err", err)
	}
}

// untrack closes a connection whose read loop has ended and forgets it.
func (l *TCPListener) untrack(c *TCPConn) {
	c.Close()
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.stats.active.Add(-1)
}

// Close stops accepting, closes every accepted connection and waits for
// their read loops to end: when it returns, none of the listener's
// goroutines is running and the callback will not be called again. A
// callback in progress is waited for; messages already read but not yet
// handed to the callback are dropped. Calling Close again does nothing.
func (l *TCPListener) Close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		l.closing.Store(true)
		close(l.done)
		l.ln.Close()
		for c := range l.conns {
			c.Close()
		}
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// Stats returns a snapshot of the listener's counters. It does not block the
// read loops: they publish their counts once per read system call.
func (l *TCPListener) Stats() ListenerStats {
	return ListenerStats{
		Accepted:       l.stats.accepted.Load(),
		Active:         l.stats.active.Load(),
		Messages:       l.stats.messages.Load(),
		Bytes:          l.stats.bytes.Load(),
		CallbackErrors: l.stats.callbackErrors.Load(),
		Panics:         l.stats.panics.Load(),
		BadInput:       l.stats.badInput.Load(),
		AcceptErrors:   l.stats.acceptErrors.Load(),
	}
}
