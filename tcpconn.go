package buffstreams

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// defaultDialTimeout bounds a dial when TCPConnConfig.DialTimeout is zero.
const defaultDialTimeout = 30 * time.Second

// errNotDialed is returned by Reopen on a connection accepted by a listener
// or wrapped by NewConn.
var errNotDialed = errors.New("buffstreams: only a dialed connection can be reopened")

// errServed is returned by Read and Messages on a connection a TCPListener
// serves: its read loop owns the reads and hands the messages to the
// callback.
var errServed = errors.New("buffstreams: a connection served by a TCPListener is read by its read loop, not by Read or Messages")

// errAckReads is returned by Read and Messages on a connection with
// acknowledged delivery: the listener's acknowledgements arrive on it.
var errAckReads = errors.New("buffstreams: a connection with acknowledged delivery reads acknowledgements, not messages")

// errClosed is returned by operations on a closed connection.
var errClosed = fmt.Errorf("buffstreams: connection is closed: %w", net.ErrClosed)

// errReopened is why the messages of a socket that Reopen closed fail, if
// its peer's TCP had not acknowledged them.
var errReopened = errors.New("buffstreams: Reopen closed the connection")

// TCPConn is one connection carrying framed messages. DialTCP returns a
// dialed one, NewConn wraps any net.Conn, and a TCPListener makes one for
// each connection it accepts.
//
// All methods are safe for concurrent use. Write adds the header to each
// message and never interleaves two messages. Read returns one whole
// message; it may run alongside Writes.
//
// What Write, Flush and Close promise in each write mode is stated once, in
// the package documentation under Batching; what becomes of a message that
// cannot be written, under Accounting. When a write or a read fails, the
// connection is closed, and a dialed connection dials again: on the next
// operation, or at once with a Retry policy. Once a Retry policy gives up,
// the connection has failed for good until Reopen: see Err and Done.
type TCPConn struct {
	wire   wire
	log    *slog.Logger
	opts   *connOptions
	dialed bool         // false for accepted and wrapped connections
	served bool         // accepted by a TCPListener, whose read loop reads it
	stats  connCounters // atomic

	// Lock order: rmu, then dmu, then mu, then a write engine's own locks,
	// which are innermost: an engine lets go of them before it finds the
	// socket or dials, and takes them under dmu (a dial's hello) or mu
	// (Close calls closing). A tally's lock (unacked.go) is taken with none
	// of those held, for one system call at most. No lock is held while a
	// callback or OnWriteError runs, except rmu when a Read finds the
	// socket failed and reports the messages its peer's TCP never
	// acknowledged.

	// closed is set by Close and cleared by Reopen, with mu held; it is
	// read without.
	closed atomic.Bool

	// failure is the error with which the Retry policy gave up: the
	// connection has failed for good. It is set with mu held, by the
	// reconnect that gave up, and cleared by Reopen; it is read without.
	failure atomic.Pointer[error]

	// mu guards nc, dialCtx, cancelDial, done, ended and reading, and
	// the changes of watch and tally.
	mu         sync.Mutex
	nc         net.Conn                  // nil after a failure, until the next dial; set with setNC
	live       atomic.Pointer[net.Conn]  // nc, for conn's path without mu; nil while nc is
	reading    atomic.Bool               // Read or Messages was called: no peer watch; set with mu held
	watch      atomic.Pointer[peerWatch] // the watch of nc, if any; see peerwatch.go
	tally      atomic.Pointer[tally]     // the count of nc's frames, if any; see unacked.go
	dialCtx    context.Context           // bounds dials; cancelled by Close
	cancelDial context.CancelFunc        // cancels dialCtx
	done       chan struct{}             // returned by Done; made by its first call
	ended      bool                      // done is closed (or closedChan)

	dmu sync.Mutex // serializes dials
	// at is the index, modulo the number of addresses, of the address the
	// next dial tries first.
	at atomic.Uint64

	eng engine // the write side, chosen once; see writer.go

	rmu sync.Mutex  // serializes reads
	rd  frameReader // guarded by rmu (or owned by the listener's read loop)
}

// connOptions are the checked, effective settings of a connection.
type connOptions struct {
	network, addr string
	addrs         []string                                    // addr, then TCPConnConfig.Addresses
	resolve       func(ctx context.Context) ([]string, error) // replaces addrs when set
	tls           *tls.Config
	dialTimeout   time.Duration
	writeTimeout  time.Duration
	stall         time.Duration // StallTimeout in effect; zero when off
	readTimeout   time.Duration
	keepAlive     time.Duration
	dialFn        func(ctx context.Context, network, address string) (net.Conn, error)
	retry         *retry
	onWriteError  func([]byte, error)
	bufSize       int // batching mode when > 0
	flushInterval time.Duration
	slow          SlowConsumerPolicy
	ack           *ackOptions // acknowledged delivery when set
}

// connCounters are a connection's counters, updated atomically.
type connCounters struct {
	msgsOut, bytesOut, msgsFailed atomic.Uint64
	msgsIn, bytesIn               atomic.Uint64
	reconnects, dialFailures      atomic.Uint64
	acked, peerCloses, silent     atomic.Uint64
	unacked, unackedBytes         atomic.Uint64 // also in msgsOut and bytesOut, and unacked in msgsFailed
}

// ConnStats is a snapshot of a connection's counters.
type ConnStats struct {
	MessagesWritten uint64 // messages whose whole frame reached the kernel, less those counted in Unacknowledged
	BytesWritten    uint64 // payload bytes of those messages, headers excluded
	WriteErrors     uint64 // messages that could not be written, each passed to OnWriteError; Unacknowledged included
	MessagesRead    uint64 // messages read, by Read, Messages or a listener's read loop
	BytesRead       uint64 // payload bytes of those messages
	Reconnects      uint64 // successful dials after a failure or by Reopen
	DialFailures    uint64 // failed dials after the first connection
	MessagesAcked   uint64 // messages the listener acknowledged (acknowledged delivery only)
	PeerCloses      uint64 // times the peer was found to have closed or reset a dialed connection nobody reads (see ErrPeerClosed)
	SilentPeers     uint64 // connections closed because the listener sent nothing for HeartbeatTimeout (acknowledged delivery only; see ErrPeerSilent)
	Unacknowledged  uint64 // messages whose frames had reached the kernel but were never acknowledged by the peer's TCP (see ErrUnacknowledged)
}

// DialTCP dials cfg.Address and returns a connection that writes and reads
// framed messages. It is DialTCPContext with context.Background().
func DialTCP(cfg *TCPConnConfig) (*TCPConn, error) {
	return DialTCPContext(context.Background(), cfg)
}

// DialTCPContext is DialTCP with a context that bounds the first dial, and
// the Retry policy's retries of it (unless FirstDialOnce). The context is
// not kept: later reconnects are bounded by DialTimeout and the Retry
// policy.
func DialTCPContext(ctx context.Context, cfg *TCPConnConfig) (*TCPConn, error) {
	if cfg == nil || cfg.Address == "" && len(cfg.Addresses) == 0 && cfg.Resolve == nil {
		return nil, fmt.Errorf("%w: TCPConnConfig.Address is required", ErrInvalidConfig)
	}
	c, err := newConn(cfg)
	if err != nil {
		return nil, err
	}
	c.dialed = true
	// dialCtx is set before the dial starts the engine's goroutines, and
	// nc is made current before its own start (attached), so that they
	// find both.
	c.dialCtx, c.cancelDial = context.WithCancel(context.Background())
	nc, err := c.firstDial(ctx)
	if err != nil {
		c.cancelDial()
		return nil, err
	}
	c.mu.Lock()
	c.adopt(nc)
	c.mu.Unlock()
	c.rd = newFrameReader(nc, c.wire)
	c.eng.attached(nc)
	return c, nil
}

// NewConn wraps an established connection of any kind (a Unix domain
// socket, a TLS connection, one end of net.Pipe) to write and read framed
// messages on it with the settings of cfg; cfg.Address, cfg.Network,
// cfg.DialContext and cfg.TLSConfig are not used, and cfg may be nil. The
// result cannot dial again: after a failure its operations return errors
// matching net.ErrClosed. Closing it closes nc.
func NewConn(nc net.Conn, cfg *TCPConnConfig) (*TCPConn, error) {
	if cfg == nil {
		cfg = &TCPConnConfig{}
	}
	if cfg.Acks != nil {
		return nil, fmt.Errorf("%w: acknowledged delivery needs DialTCP, which can dial again and say hello", ErrInvalidConfig)
	}
	c, err := newConn(cfg)
	if err != nil {
		return nil, err
	}
	c.adopt(nc)
	c.rd = newFrameReader(nc, c.wire)
	return c, nil
}

// newConn checks cfg and returns an unconnected TCPConn.
func newConn(cfg *TCPConnConfig) (*TCPConn, error) {
	w, err := newWire(cfg.MaxMessageSize, cfg.Framing)
	if err != nil {
		return nil, err
	}
	r, err := newRetry(cfg.Retry)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.WriteBufferSize < 0, cfg.FlushInterval < 0, cfg.DialTimeout < 0, cfg.WriteTimeout < 0, cfg.ReadTimeout < 0:
		return nil, fmt.Errorf("%w: negative size or duration in TCPConnConfig", ErrInvalidConfig)
	case cfg.SlowConsumer < SlowConsumerBlock || cfg.SlowConsumer > SlowConsumerClose:
		return nil, fmt.Errorf("%w: unknown %v", ErrInvalidConfig, cfg.SlowConsumer)
	}
	a, err := newAckOptions(cfg.Acks, w)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, a := range append([]string{cfg.Address}, cfg.Addresses...) {
		if a != "" {
			addrs = append(addrs, a)
		}
	}
	o := &connOptions{
		network:       orDefault(cfg.Network, "tcp"),
		addr:          cfg.Address,
		addrs:         addrs,
		resolve:       cfg.Resolve,
		tls:           cfg.TLSConfig,
		dialTimeout:   orDefault(cfg.DialTimeout, defaultDialTimeout),
		writeTimeout:  cfg.WriteTimeout,
		stall:         stallTimeout(cfg.StallTimeout),
		readTimeout:   cfg.ReadTimeout,
		keepAlive:     cfg.KeepAlive,
		dialFn:        cfg.DialContext,
		retry:         r,
		onWriteError:  cfg.OnWriteError,
		bufSize:       cfg.WriteBufferSize,
		flushInterval: cfg.FlushInterval,
		slow:          cfg.SlowConsumer,
		ack:           a,
	}
	log := newLogger(cfg.EnableLogging, cfg.Logger)
	if cfg.Address != "" {
		log = log.With("remote", cfg.Address)
	}
	c := &TCPConn{wire: w, log: log, opts: o}
	c.eng = newEngine(c)
	return c, nil
}

// newAcceptedConn wraps a connection accepted by a listener.
func newAcceptedConn(nc net.Conn, w wire, log *slog.Logger, o *connOptions) *TCPConn {
	c := &TCPConn{wire: w, log: log, opts: o, served: true}
	c.setNC(nc)
	c.eng = newEngine(c)
	c.rd = newFrameReader(nc, w)
	return c
}

// dial makes one connection: it tries each address once, starting with
// the one the connection is on (see moveOn), and returns the first
// connection made, or every address's error.
func (c *TCPConn) dial(ctx context.Context) (net.Conn, error) {
	addrs := c.opts.addrs
	if r := c.opts.resolve; r != nil {
		var err error
		if addrs, err = r(ctx); err != nil {
			return nil, fmt.Errorf("buffstreams: resolving the addresses to dial: %w", err)
		}
		if len(addrs) == 0 {
			return nil, errors.New("buffstreams: resolving the addresses to dial: Resolve returned none")
		}
	}
	start := int(c.at.Load() % uint64(len(addrs)))
	var failed, lasting []error
	for i := range addrs {
		k := (start + i) % len(addrs)
		nc, err := c.dialAddr(ctx, addrs[k])
		if err == nil {
			c.at.Store(uint64(k))
			return nc, nil
		}
		if len(addrs) == 1 {
			return nil, err
		}
		if permanent(err) {
			lasting = append(lasting, err)
		} else {
			failed = append(failed, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	c.at.Store(uint64(start + 1))
	if len(failed) == 0 {
		// Every listener refused for good: so does the dial.
		return nil, fmt.Errorf("buffstreams: no address answered: %w", errors.Join(lasting...))
	}
	// One listener may answer later: the dial can be tried again.
	return nil, fmt.Errorf("buffstreams: no address answered: %w%s", errors.Join(failed...), joinText(lasting))
}

// joinText returns the texts of errs, each on a line of its own, for an
// error that mentions errs without wrapping them.
func joinText(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("\n")
		b.WriteString(e.Error())
	}
	return b.String()
}

// moveOn makes the next dial start at the address after the one the
// connection was on: its listener went silent or is shutting down.
func (c *TCPConn) moveOn() { c.at.Add(1) }

// dialAddr makes one connection to addr, TLS handshake and hello
// included, within DialTimeout.
func (c *TCPConn) dialAddr(ctx context.Context, addr string) (net.Conn, error) {
	o := c.opts
	ctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	if o.dialFn != nil {
		nc, err = o.dialFn(ctx, o.network, addr)
	} else {
		d := net.Dialer{KeepAlive: o.keepAlive}
		nc, err = d.DialContext(ctx, o.network, addr)
	}
	if err != nil {
		if strings.Contains(err.Error(), addr) { // net's errors name it
			return nil, fmt.Errorf("buffstreams: %w", err)
		}
		return nil, fmt.Errorf("buffstreams: dial %s: %w", addr, err)
	}
	if o.tls != nil {
		cfg := o.tls
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, tlsDialError(addr, err)
		}
		nc = tc
	}
	if e, ok := c.eng.(*ackEngine); ok {
		if err := e.hello(ctx, nc); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return nc, nil
}

// firstDial makes DialTCPContext's connection: as many dials as the Retry
// policy allows within ctx, or one without a policy or with FirstDialOnce.
func (c *TCPConn) firstDial(ctx context.Context) (net.Conn, error) {
	r := c.opts.retry
	if r == nil || !r.first {
		return c.dial(ctx)
	}
	return r.redial(ctx, func(attempt int) (net.Conn, error) {
		nc, err := c.dial(ctx)
		if err != nil {
			c.log.Warn("buffstreams: dial failed", "attempt", attempt, "err", err)
		}
		return nc, err
	}, func(err error) bool {
		return permanent(err) || ctx.Err() != nil
	}, func(err error) error {
		return fmt.Errorf("buffstreams: dial %s: %w; the last attempt: %w", c.opts.addr, ctx.Err(), err)
	})
}

// conn returns the live connection, dialing again if a failure closed it.
func (c *TCPConn) conn() (net.Conn, error) {
	if p := c.live.Load(); p != nil && !c.closed.Load() {
		return *p, nil // the path of every write: no lock
	}
	c.mu.Lock()
	nc, closed := c.nc, c.closed.Load()
	c.mu.Unlock()
	switch {
	case closed:
		return nil, errClosed
	case nc != nil:
		return nc, nil
	case !c.dialed:
		return nil, errClosed
	}
	if p := c.failure.Load(); p != nil {
		return nil, *p
	}
	return c.reconnect()
}

// reconnect dials until it succeeds or the Retry policy gives up; without a
// policy it dials once. When the policy gives up, the connection has failed
// for good (see giveUp), and later calls return that error without dialing.
func (c *TCPConn) reconnect() (net.Conn, error) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.mu.Lock()
	nc, ctx := c.nc, c.dialCtx
	c.mu.Unlock()
	if nc != nil { // another goroutine dialed meanwhile
		return nc, nil
	}
	if p := c.failure.Load(); p != nil { // another goroutine gave up meanwhile
		return nil, *p
	}
	r := c.opts.retry
	nc, err := r.redial(ctx, func(attempt int) (net.Conn, error) {
		nc, err := c.dialOrClosed(ctx)
		switch {
		case err == nil:
			c.stats.reconnects.Add(1)
			c.log.Info("buffstreams: reconnected", "attempt", attempt)
		case err != errClosed:
			c.stats.dialFailures.Add(1)
			c.log.Warn("buffstreams: reconnect failed", "attempt", attempt, "err", err)
		}
		return nc, err
	}, func(err error) bool {
		return err == errClosed || permanent(err)
	}, func(error) error {
		return errClosed
	})
	if r != nil && errors.Is(err, ErrReconnectFailed) {
		return nil, c.giveUp(err)
	}
	return nc, err
}

// giveUp puts the connection in its failed state with err, the error with
// which the Retry policy gave up, and returns err; or errClosed if Close was
// called meanwhile.
func (c *TCPConn) giveUp(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return errClosed
	}
	c.failure.Store(&err)
	c.endDone()
	c.log.Error("buffstreams: the connection failed for good", "err", err)
	return err
}

// closedChan is the channel Done returns for a connection that failed or
// was closed before Done was first called.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// endDone closes the channel Done returns. c.mu is held.
func (c *TCPConn) endDone() {
	if c.ended {
		return
	}
	c.ended = true
	if c.done == nil {
		c.done = closedChan
	} else {
		close(c.done)
	}
}

// Err returns nil while the connection is usable, which includes while it
// is down between a failure and the next dial. Once its Retry policy has
// given up, Err returns the error it gave up with, which matches
// ErrReconnectFailed and wraps the last dial error; Write, WriteBatch and
// Flush then return that error at once, without dialing. After Close, Err
// returns an error matching net.ErrClosed. Reopen makes Err nil again.
func (c *TCPConn) Err() error {
	if c.closed.Load() {
		return errClosed
	}
	return c.terminal()
}

// Done returns a channel that is closed when the connection becomes
// unusable: when its Retry policy gives up, or when it is closed; Err then
// says which. Until then, successive calls return the same channel. Reopen
// makes the connection usable again: later calls to Done return a new
// channel, and the old one stays closed. The channel of a connection
// without a Retry policy is closed only by Close.
func (c *TCPConn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

// terminal returns the error with which the Retry policy gave up, or nil.
func (c *TCPConn) terminal() error {
	if p := c.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// dialOrClosed dials and makes the new connection current, unless Close is
// called meanwhile, in which case it closes it and returns errClosed.
// Either way the engine then learns of the socket (attached). c.dmu is
// held.
func (c *TCPConn) dialOrClosed(ctx context.Context) (net.Conn, error) {
	nc, err := c.dial(ctx)
	c.mu.Lock()
	switch {
	case c.closed.Load():
		err = errClosed
		if nc != nil {
			nc.Close()
		}
	case err == nil:
		c.adopt(nc)
	}
	c.mu.Unlock()
	if nc != nil {
		c.eng.attached(nc)
	}
	if err != nil {
		return nil, err
	}
	return nc, nil
}

// setNC makes nc the connection's socket, or forgets it if nc is nil.
// c.mu is held, or c is not yet shared.
func (c *TCPConn) setNC(nc net.Conn) {
	c.nc = nc
	if nc == nil {
		c.live.Store(nil)
	} else {
		c.live.Store(&nc)
	}
}

// fail closes nc after err and forgets it, so that the next operation dials
// again, and returns the error to report: errClosed if the connection was
// closed before the failure (Close sets closed before it closes the socket,
// so the failure may be its doing), and err otherwise, even if the
// connection is closed meanwhile, as a listener's read loop does as soon as
// nc.Close wakes it.
func (c *TCPConn) fail(nc net.Conn, err error) error {
	closed := c.closed.Load()
	c.drop(nc, err)
	c.mu.Lock()
	if c.nc == nc {
		c.setNC(nil)
	}
	c.mu.Unlock()
	switch {
	case closed:
		return errClosed
	case errors.Is(err, errGoaway):
		c.moveOn()
	case errors.Is(err, ErrPeerSilent):
		c.moveOn()
		c.log.Warn("buffstreams: connection failed", "err", err)
	case errors.Is(err, net.ErrClosed):
		// Reopen or a failed call on another goroutine closed the socket
		// under this call; the TCPConn itself is open.
		return fmt.Errorf("buffstreams: the connection was closed by another call: %v", err)
	case !isClosedErr(err):
		c.log.Warn("buffstreams: connection failed", "err", err)
	}
	return err
}

// Read reads the next message into b and returns its length. Unlike an
// io.Reader it never returns part of a message: if b is shorter than the
// message, Read returns io.ErrShortBuffer and keeps the message for the next
// Read, so do not wrap a TCPConn in a bufio.Reader or io.Copy from it. A b
// of MaxMessageSize() bytes takes any message (see the package
// documentation, Buffer lifetimes). Read
// returns io.EOF when the peer closed the connection between messages, and an
// error wrapping ErrMessageTooLarge, ErrMalformedHeader or io.ErrUnexpectedEOF
// (closing the connection) when it sent something else. After an error, the
// next Read or Write on a dialed connection dials again. On a connection a
// listener serves, Read returns an error at once: its read loop owns the
// reads.
func (c *TCPConn) Read(b []byte) (int, error) {
	if c.served {
		return 0, errServed
	}
	if c.opts.ack != nil {
		return 0, errAckReads
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	p, err := c.nextMessage()
	if err != nil {
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

// Messages returns an iterator over the messages read from the connection,
// for reading without a callback:
//
//	for msg, err := range conn.Messages() {
//		if err != nil {
//			return err // io.EOF when the peer closed between messages
//		}
//		handle(msg) // msg is valid until the loop body returns
//	}
//
// Each msg aliases the connection's read buffer (see the package
// documentation, Buffer lifetimes). The iteration ends after the first
// error, which it yields (io.EOF included); breaking out of the loop ends it
// too. While it runs, Read calls wait. The ReadTimeout applies to each
// message. On a connection a listener serves, it yields an error at once,
// as Read returns one.
func (c *TCPConn) Messages() iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		if c.served {
			yield(nil, errServed)
			return
		}
		if c.opts.ack != nil {
			yield(nil, errAckReads)
			return
		}
		c.rmu.Lock()
		defer c.rmu.Unlock()
		for {
			p, err := c.nextMessage()
			if err != nil {
				yield(nil, err)
				return
			}
			c.stats.msgsIn.Add(1)
			c.stats.bytesIn.Add(uint64(len(p)))
			if !yield(p, nil) {
				return
			}
		}
	}
}

// nextMessage reads the next message, dialing again if needed. c.rmu is held.
func (c *TCPConn) nextMessage() ([]byte, error) {
	if e, ok := c.eng.(*syncEngine); ok {
		e.flush() // a request held under the cork leaves before we wait for its reply
	}
	c.stopWatch()
	nc, err := c.conn()
	if err != nil {
		return nil, err
	}
	if c.rd.src != nc {
		c.rd.reset(nc)
	}
	if t := c.opts.readTimeout; t > 0 {
		nc.SetReadDeadline(time.Now().Add(t))
	}
	p, err := c.rd.next()
	if err != nil {
		return nil, c.fail(nc, silence(err))
	}
	return p, nil
}

// Reopen closes the current connection, if any, and dials the address again.
// It works whatever state the connection is in: after a failed Write, after
// its Retry policy gave up, and after Close; it undoes the last two, so that
// Err returns nil and Done a new channel, even if its own dial fails (the
// next operation then dials again, as after any failure). Reopen dials once,
// whatever the Retry policy. Messages still buffered in batching mode are
// written on the new connection. A Close during Reopen wins: Reopen then
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
		if e, ok := c.eng.(*syncEngine); ok {
			e.flush() // what the cork holds leaves before the socket is dropped
		}
		c.drop(old, errReopened) // unblocks a write stuck on a peer that stopped reading
	}
	c.dmu.Lock()
	c.mu.Lock()
	stale := c.nc // old, or one dialed since
	c.setNC(nil)
	c.mu.Unlock()
	var frames int
	var payload uint64
	if stale != nil {
		frames, payload, _ = c.shut(stale)
	}
	err := c.redialed()
	c.dmu.Unlock()
	c.unacked(frames, payload, errReopened) // without dmu: OnWriteError may write
	if err != nil {
		return err
	}
	c.stats.reconnects.Add(1)
	c.eng.reopened()
	return nil
}

// redialed puts the connection back in its state before any failure or
// Close, and dials. c.dmu is held.
func (c *TCPConn) redialed() error {
	c.mu.Lock()
	c.watch.Store(nil) // the old socket's end is Reopen's doing, or moot
	c.closed.Store(false)
	c.failure.Store(nil)
	if c.ended {
		c.done, c.ended = nil, false
	}
	if c.cancelDial != nil {
		c.cancelDial()
	}
	c.dialCtx, c.cancelDial = context.WithCancel(context.Background())
	ctx := c.dialCtx
	c.mu.Unlock()
	c.eng.reopening()
	_, err := c.dialOrClosed(ctx)
	return err
}

// Close closes the connection. In batching mode it first writes what is
// buffered (see the package documentation, Batching). On Linux over plain
// TCP it then waits, within WriteTimeout (10 seconds if zero) and
// StallTimeout, for the peer's TCP to acknowledge what is written, and
// reports what it did not as failed (see the package documentation,
// Accounting). Writes and Reads in progress, and a dial in progress, then
// return errors; later ones return errors matching net.ErrClosed until
// Reopen is called. Close returns an error matching ErrPeerClosed or
// ErrPeerSilent if the peer of a dialed connection nobody reads had closed,
// reset or gone silent and no write reported that, and otherwise one
// matching ErrUnacknowledged if messages failed so. Closing a closed
// connection does nothing and returns nil.
func (c *TCPConn) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	until := time.Now().Add(c.closeWait())
	c.eng.closing() // before closed: a flusher must not fail what it can still write
	c.closed.Store(true)
	c.endDone()
	if c.cancelDial != nil {
		c.cancelDial()
	}
	c.mu.Unlock()
	c.eng.drain()
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	w := c.watch.Load()
	if w != nil && w.stop.Load() {
		w = nil // a Read watches the connection and learns of the peer's end itself
	}
	gone := c.untoldPeerEnd(w)
	var err, lost error
	if nc != nil {
		why := gone
		if t := c.tallyOf(nc); t != nil && why == nil {
			// Give the peer's TCP until the deadline to acknowledge what
			// is written, as a lingering close would.
			why = t.acked(until)
		}
		if w != nil && gone == nil {
			// Look once more, then stop the watch before the socket is
			// closed: what the peer does once the close has begun
			// answers it (a TLS peer answers close_notify with its own
			// alert and its FIN, which could arrive before the socket is
			// closed) and is no news.
			gone = c.untoldPeerEnd(w)
			w.stop.Store(true)
		}
		if why == nil {
			why = gone
		}
		if why == nil {
			why = errAckWait // bytes written while it waited
		}
		lost, err = c.drop(nc, why)
	}
	if w != nil && gone == nil {
		// The watch ends with the socket. A look it began before it was
		// stopped may have found the peer gone meanwhile.
		<-w.done
		if p := w.gone.Load(); p != nil && !w.told.Load() {
			gone = *p
		}
	}
	switch {
	case err != nil && !errors.Is(err, net.ErrClosed):
		return err
	case gone != nil:
		return gone
	}
	return lost
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

// ConnectionState returns the TLS state of the current connection, and
// false if it is not a TLS connection or is down.
func (c *TCPConn) ConnectionState() (tls.ConnectionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tc, ok := c.nc.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// MaxMessageSize returns the effective limit on payload length.
func (c *TCPConn) MaxMessageSize() int { return c.wire.max }

// Stats returns a snapshot of the connection's counters. It does not block.
func (c *TCPConn) Stats() ConnStats {
	// Unacknowledged messages are counted when their socket ends, after
	// they were counted as written, except that a socket may end between a
	// write and its counting: hence the floor at zero.
	unacked, unackedBytes := c.stats.unacked.Load(), c.stats.unackedBytes.Load()
	written, bytes := c.stats.msgsOut.Load(), c.stats.bytesOut.Load()
	return ConnStats{
		MessagesWritten: written - min(unacked, written),
		BytesWritten:    bytes - min(unackedBytes, bytes),
		WriteErrors:     c.stats.msgsFailed.Load(),
		MessagesRead:    c.stats.msgsIn.Load(),
		BytesRead:       c.stats.bytesIn.Load(),
		Reconnects:      c.stats.reconnects.Load(),
		DialFailures:    c.stats.dialFailures.Load(),
		MessagesAcked:   c.stats.acked.Load(),
		PeerCloses:      c.stats.peerCloses.Load(),
		SilentPeers:     c.stats.silent.Load(),
		Unacknowledged:  unacked,
	}
}

// current returns the live connection without dialing, or nil.
func (c *TCPConn) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc
}
