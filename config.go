package buffstreams

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
)

// Version is the version of this package.
const Version = "3.0.0"

// DefaultMaxMessageSize is the MaxMessageSize used when a configuration
// leaves it zero.
const DefaultMaxMessageSize int = 4096

// ListenCallback receives each message read by a TCPListener, with the
// header removed. The slice aliases the connection's read buffer: it is valid
// only until the callback returns, so copy it (or unmarshal it, which copies)
// to keep it. The callbacks of one connection run one at a time, in the order
// the messages were written; callbacks of different connections run
// concurrently. A returned error is counted and logged and the connection
// keeps reading; a panic is recovered, logged with its stack, and closes that
// connection only.
type ListenCallback func([]byte) error

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

	// Callback is called with every message received. Required.
	Callback ListenCallback

	// Framing is the wire format. Nil means BuffStreamsFraming(MaxMessageSize),
	// the format of BuffStreams 2.0.
	Framing Framing

	// Logger receives the listener's logs. Setting it turns logging on even
	// if EnableLogging is false. Nil means slog.Default() when EnableLogging
	// is true.
	Logger *slog.Logger
}

// TCPConnConfig configures a TCPConn. The zero value of every field selects
// its default, except Address, which DialTCP requires.
type TCPConnConfig struct {
	// MaxMessageSize is the largest payload Write accepts and Read returns,
	// in bytes. With the default framing it also fixes the header width, so
	// it must match the listener's setting. Zero means DefaultMaxMessageSize
	// (4096); at most MaxMessageSizeLimit. If the framing cannot express it
	// (Fixed1 stops at 255), the framing's limit applies.
	MaxMessageSize int

	// Address is the remote address to dial, such as "127.0.0.1:5031".
	Address string

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
