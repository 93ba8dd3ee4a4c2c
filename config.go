package buffstreams

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"
)

// Version is the version of this module. A release is tagged "v" followed
// by it, so that go get github.com/buffstreams/buffstreams@v1.0.0 fetches
// this one. The major version is 1, not 3, because the module path is new:
// see "Install" in the README.
const Version = "1.0.0"

// DefaultMaxMessageSize is the MaxMessageSize used when a configuration
// leaves it zero.
const DefaultMaxMessageSize int = 4096

// ListenCallback receives each message read by a TCPListener, with the
// header removed. The slice is valid only until the callback returns (see
// the package documentation, Buffer lifetimes). The callbacks of one
// connection run one at a time, in the order
// the messages were written; callbacks of different connections run
// concurrently. A returned error is counted and logged and the connection
// keeps reading; a panic is recovered, logged with its stack, and closes that
// connection only.
type ListenCallback func([]byte) error

// ConnCallback is ListenCallback with the connection the message came from,
// so that the server can answer on it: conn.Write may be called from the
// callback, or from any other goroutine while the connection is open. The
// listener's read loop owns the reads: Read and Messages on conn return an
// error. The same rules as for ListenCallback apply to msg.
type ConnCallback func(conn *TCPConn, msg []byte) error

// TCPListenerConfig configures a TCPListener. The zero value of every field
// other than Callback selects its default.
type TCPListenerConfig struct {
	// MaxMessageSize is the largest payload a peer may send, in bytes. A
	// header declaring more closes that connection before any of the
	// payload is read. With the default framing it also fixes the header
	// width, so it must match the writers' setting. Zero means
	// DefaultMaxMessageSize (4096); at most MaxMessageSizeLimit. If the
	// framing cannot express it (Fixed1 stops at 255), the framing's limit
	// applies.
	MaxMessageSize int

	// EnableLogging turns on logging of errors (bad input, closed
	// connections, callback errors and panics) through Logger, or through
	// slog.Default() if Logger is nil. Default false.
	EnableLogging bool

	// Address is the local address to listen on, such as ":5031" or
	// "127.0.0.1:0" (see FormatAddress). Empty means any address and a port
	// chosen by the system.
	Address string

	// Callback is called with every message received. Either Callback or
	// ConnCallback is required; if both are set, ConnCallback is used.
	Callback ListenCallback

	// ConnCallback is called with every message received and the
	// connection it arrived on, for servers that reply.
	ConnCallback ConnCallback

	// Framing is the wire format. Nil means BuffStreamsFraming(MaxMessageSize),
	// the format of BuffStreams 2.0.
	Framing Framing

	// Logger receives the listener's logs. Setting it turns logging on even
	// if EnableLogging is false. Nil means slog.Default() when EnableLogging
	// is true.
	Logger *slog.Logger

	// TLSConfig, if set, makes the listener serve TLS: each accepted
	// connection completes a handshake (within HandshakeTimeout) before its
	// first message is read. It needs Certificates or GetCertificate; set
	// ClientAuth and ClientCAs for mutual TLS. Nil means plain TCP.
	TLSConfig *tls.Config

	// HandshakeTimeout bounds a TLS handshake. Zero means 10 seconds.
	HandshakeTimeout time.Duration

	// ReadTimeout is the longest time a frame may take to arrive once its
	// first byte has: a peer that sends part of a frame and stalls
	// (slowloris) is closed when it passes, and counted in
	// ListenerStats.Timeouts. Zero means no limit.
	ReadTimeout time.Duration

	// IdleTimeout closes a connection on which no byte arrives for this
	// long between frames. Zero means connections may stay idle forever, as
	// in BuffStreams 2.0.
	IdleTimeout time.Duration

	// WriteTimeout bounds each write on an accepted connection (replies
	// and Broadcast). Zero means no limit.
	WriteTimeout time.Duration

	// MaxConns is the most connections served at once. A connection
	// accepted beyond it is closed at once and counted in
	// ListenerStats.Refused. Zero means no limit.
	MaxConns int

	// KeepAlive is the TCP keep-alive period of accepted connections. Zero
	// means the net package's default (15 seconds); negative disables it.
	KeepAlive time.Duration

	// Network is the network to listen on: "tcp" (the default), "tcp4",
	// "tcp6" or "unix" (then Address is a socket path).
	Network string

	// OnConnEnd, if set, is called exactly once for every connection the
	// listener accepts, when it ends, with the reason; even a connection
	// refused at once (MaxConns) or one whose TLS handshake fails is
	// reported. Test err with errors.Is:
	//
	//   - nil: the peer closed the connection between messages;
	//   - ErrMessageTooLarge, ErrMalformedHeader, or io.ErrUnexpectedEOF
	//     (the peer closed inside a frame): bad input;
	//   - ErrWrongProtocol: bad input that shows the peer speaks TLS,
	//     HTTP, SSH or another framing (the error also wraps the failure
	//     it explains);
	//   - ErrCallbackPanic: the callback panicked;
	//   - ErrTooManyConnections: MaxConns connections were open;
	//   - ErrTLSHandshake: the TLS handshake failed or timed out (the
	//     crypto/tls error is wrapped too);
	//   - os.ErrDeadlineExceeded: ReadTimeout or IdleTimeout passed (the
	//     error is a net.Error whose Timeout method returns true);
	//   - net.ErrClosed: Close or Shutdown closed it, or conn.Close was
	//     called;
	//   - anything else: the read failed, as a reset by the peer does.
	//
	// It runs on the connection's own goroutine (on the accepting one for
	// a refused connection, which it must not hold up) after the read loop
	// has stopped and conn has been closed, before the connection leaves
	// Conns and ListenerStats.Active: when Close or Shutdown returns, every
	// call has returned. conn's Stats remain readable, and so does its
	// RemoteAddr unless a failed write had dropped the socket; writes
	// fail. A panic in it is recovered and logged. Nil means
	// connection ends are only counted in ListenerStats and logged.
	OnConnEnd func(conn *TCPConn, err error)

	// Acks, if set, turns on acknowledged delivery: every connection must
	// open with the hello of a TCPConn whose Acks is set too, and the
	// listener acknowledges what its callback has had (see the package
	// documentation, Acknowledged delivery). Nil means off, and the wire
	// format of BuffStreams 2.0.
	Acks *AckConfig
}

// TCPConnConfig configures a TCPConn. The zero value of every field selects
// its default, except Address, which DialTCP requires unless Addresses or
// Resolve names the listeners.
type TCPConnConfig struct {
	// MaxMessageSize is the largest payload Write accepts and Read returns,
	// in bytes. With the default framing it also fixes the header width, so
	// it must match the listener's setting. Zero means DefaultMaxMessageSize
	// (4096); at most MaxMessageSizeLimit. If the framing cannot express it
	// (Fixed1 stops at 255), the framing's limit applies.
	MaxMessageSize int

	// Address is the remote address to dial, such as "127.0.0.1:5031".
	Address string

	// Addresses are more listeners to fail over to, tried in order after
	// Address (which may then be empty). A dial tries each address once,
	// starting with the one that answered last, and takes the first that
	// answers. The connection moves on to the next address when a dial
	// fails, when its listener goes silent (ErrPeerSilent), or when the
	// listener says it is shutting down (goaway). With acknowledged
	// delivery the window is written again to whichever listener answers:
	// across listeners that do not share a SessionStore that is
	// at-least-once delivery (see the package documentation, Acknowledged
	// delivery). Nil means Address alone.
	Addresses []string

	// Resolve, if set, returns the addresses to dial, in order of
	// preference; it is called before each round of dials and replaces
	// Address and Addresses. It must return at least one address, or an
	// error, which fails that round. Nil means Address and Addresses.
	Resolve func(ctx context.Context) ([]string, error)

	// EnableLogging turns on logging of connection failures and reconnects
	// through Logger, or through slog.Default() if Logger is nil. Default
	// false.
	EnableLogging bool

	// Framing is the wire format. Nil means BuffStreamsFraming(MaxMessageSize),
	// the format of BuffStreams 2.0.
	Framing Framing

	// Logger receives the connection's logs. Setting it turns logging on
	// even if EnableLogging is false. Nil means slog.Default() when
	// EnableLogging is true.
	Logger *slog.Logger

	// WriteBufferSize turns on batching mode when positive: Write copies
	// the frame into a buffer of this many bytes, and a flusher writes many
	// frames per system call; see the package documentation, Batching, for
	// what Write, Flush and Close then promise. Zero means the default
	// mode, in which Write returns once the kernel has the frame.
	WriteBufferSize int

	// FlushInterval, in batching mode, lets the flusher wait up to this
	// long for more messages before writing a buffer that is not yet half
	// full, trading latency for larger writes. Zero means the flusher writes
	// as soon as Writes pause, so a lone message goes out at once; while
	// they keep coming, the Write that fills the buffer writes it (under
	// SlowConsumerBlock), and a message waits at most 50 µs.
	FlushInterval time.Duration

	// SlowConsumer says what Write does in batching mode when the write
	// buffer is full (see the package documentation, Batching). Zero means
	// SlowConsumerBlock.
	SlowConsumer SlowConsumerPolicy

	// OnWriteError, if set, is called once for every message that could
	// not be written, with the reason; msg is valid only during the call,
	// and nil for a message the kernel had taken whose frame the peer's
	// TCP never acknowledged (ErrUnacknowledged). See the package
	// documentation, Accounting, for when it is called and what err can
	// be. Nil means failures are only counted.
	OnWriteError func(msg []byte, err error)

	// Retry, if set, makes DialTCP retry the first dial (unless
	// FirstDialOnce), and the connection dial again after a failure, with
	// exponential back-off and jitter, within the policy's limits, and
	// write again the messages that had not reached the kernel. Nil means
	// one dial attempt, by DialTCP and then per operation after a failure,
	// as in BuffStreams 2.0. When the policy gives up, the connection has
	// failed for good until Reopen (see RetryPolicy and TCPConn.Err).
	Retry *RetryPolicy

	// TLSConfig, if set, makes the connection use TLS. If its ServerName is
	// empty, the host part of Address is used. Nil means plain TCP.
	TLSConfig *tls.Config

	// DialTimeout bounds each dial, TLS handshake included. Zero means 30
	// seconds.
	DialTimeout time.Duration

	// WriteTimeout bounds each write system call; a write that does not
	// complete in time fails with ErrWriteTimeout and closes the
	// connection. Zero means no limit.
	WriteTimeout time.Duration

	// StallTimeout bounds how long a connection in plain mode (Acks nil)
	// keeps writing into a peer that takes nothing: on a TCP socket on
	// Linux, how long written bytes may stay unacknowledged by the peer's
	// TCP (the socket's TCP_USER_TIMEOUT); elsewhere, and on other sockets,
	// how long one write may make no progress. Past it the connection fails
	// with ErrPeerSilent, rather than after the system's own limit (about
	// 15 minutes on Linux). A peer that goes on reading, however slowly, is
	// not cut off; one that stops reading for longer than this is. On
	// Linux an idle connection is watched by keep-alive instead, and fails
	// with ErrPeerSilent about twice KeepAlive, or StallTimeout if longer,
	// after its peer went silent. Zero means 30 seconds; a negative value
	// turns the bound off.
	StallTimeout time.Duration

	// ReadTimeout bounds each Read. Zero means no limit.
	ReadTimeout time.Duration

	// KeepAlive is the TCP keep-alive period. Zero means the net package's
	// default (15 seconds); negative disables it.
	KeepAlive time.Duration

	// Network is the network to dial: "tcp" (the default), "tcp4", "tcp6"
	// or "unix".
	Network string

	// DialContext, if set, replaces the dialer (for proxies, in-memory
	// connections in tests, or custom socket options). Network and Address
	// are passed to it; TLSConfig still applies to what it returns.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)

	// Acks, if set, turns on acknowledged delivery with a listener whose
	// Acks is set too: messages are kept until the listener acknowledges
	// them, and written again after a reconnect (see the package
	// documentation, Acknowledged delivery). DialTCP only; NewConn refuses
	// it. Nil means off, and the wire format of BuffStreams 2.0.
	Acks *AckConfig
}

// SlowConsumerPolicy says what Write does in batching mode when the write
// buffer is full because the peer, or the network, does not take bytes as
// fast as they are written. The package documentation, under Batching,
// says what each policy does to the message and to the connection.
type SlowConsumerPolicy int

const (
	// SlowConsumerBlock makes Write wait for room, up to WriteTimeout if it
	// is set.
	SlowConsumerBlock SlowConsumerPolicy = iota
	// SlowConsumerError makes Write return ErrSlowConsumer and keep the
	// connection.
	SlowConsumerError
	// SlowConsumerClose makes Write close the connection and fail what it
	// had buffered with ErrSlowConsumer.
	SlowConsumerClose
)

// String returns the policy's name.
func (p SlowConsumerPolicy) String() string {
	switch p {
	case SlowConsumerBlock:
		return "block"
	case SlowConsumerError:
		return "error"
	case SlowConsumerClose:
		return "close"
	}
	return fmt.Sprintf("SlowConsumerPolicy(%d)", int(p))
}

// FormatAddress joins a host and a port into an address for Address fields.
// IPv6 hosts are bracketed: FormatAddress("::1", "5031") is "[::1]:5031" and
// FormatAddress("", "5031") is ":5031".
func FormatAddress(address, port string) string {
	if len(address) > 1 && address[0] == '[' && address[len(address)-1] == ']' {
		address = address[1 : len(address)-1]
	}
	return net.JoinHostPort(address, port)
}

// wire holds the effective framing settings shared by both configurations.
type wire struct {
	framing Framing
	max     int // effective MaxMessageSize: never above framing.maxLen()
}

func newWire(maxMessageSize int, f Framing) (wire, error) {
	switch {
	case maxMessageSize < 0:
		return wire{}, fmt.Errorf("%w: negative MaxMessageSize %d", ErrInvalidConfig, maxMessageSize)
	case maxMessageSize > MaxMessageSizeLimit:
		return wire{}, fmt.Errorf("%w: MaxMessageSize %d is above the limit of %d", ErrInvalidConfig, maxMessageSize, MaxMessageSizeLimit)
	case maxMessageSize == 0:
		maxMessageSize = DefaultMaxMessageSize
	}
	if f == nil {
		f = BuffStreamsFraming(maxMessageSize)
	}
	return wire{framing: f, max: min(maxMessageSize, f.maxLen())}, nil
}

var discardLogger = slog.New(slog.DiscardHandler)

// newLogger returns the logger selected by a configuration; it discards
// everything when logging is off, so call sites need no checks.
func newLogger(enabled bool, l *slog.Logger) *slog.Logger {
	switch {
	case l != nil:
		return l
	case enabled:
		return slog.Default()
	}
	return discardLogger
}

// isClosedErr reports whether err only says that the connection ended: the
// peer closed it at a frame boundary, or we closed it.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
