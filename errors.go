package buffstreams

import "errors"

// Errors returned by this package. Test for them with [errors.Is]; most are
// wrapped with details such as the offending length. Operations on a closed
// listener or connection return errors that match [net.ErrClosed].
var (
	// ErrMessageTooLarge is returned by Write when a payload exceeds the
	// connection's MaxMessageSize (nothing is sent), and is the cause of
	// closing a connection whose peer declared a length above it.
	ErrMessageTooLarge = errors.New("buffstreams: message exceeds the maximum size")

	// ErrMalformedHeader is the cause of closing a connection whose peer sent
	// a header the framing cannot accept: a negative length, non-zero
	// padding, a varint that does not end or is overlong, or a length
	// smaller than the header it counts (Fixed4Inclusive).
	ErrMalformedHeader = errors.New("buffstreams: malformed frame header")

	// ErrInvalidConfig is returned by ListenTCP, DialTCP and ParseFraming
	// when a setting is impossible, such as a negative MaxMessageSize.
	ErrInvalidConfig = errors.New("buffstreams: invalid configuration")

	// ErrAlreadyOpened is returned by the Manager when a listener or writer
	// for an address is opened a second time.
	ErrAlreadyOpened = errors.New("buffstreams: address is already opened")

	// ErrNotOpened is returned by the Manager when an address is used that
	// was never opened, or was closed.
	ErrNotOpened = errors.New("buffstreams: address is not opened")

	// ErrAlreadyListening is returned by StartListening and
	// StartListeningAsync when the listener is already accepting.
	ErrAlreadyListening = errors.New("buffstreams: listener is already accepting")

	// ErrCallbackPanic is the cause of closing a connection whose callback
	// panicked, passed to OnConnEnd with the panic value in its text. The
	// panic value and stack are logged.
	ErrCallbackPanic = errors.New("buffstreams: callback panicked")

	// ErrWriteTimeout is returned (wrapped together with
	// os.ErrDeadlineExceeded, so it is also a net.Error whose Timeout is
	// true) when a write does not complete within WriteTimeout, typically
	// because the peer stopped reading. The connection is closed.
	ErrWriteTimeout = errors.New("buffstreams: write timed out")

	// ErrSlowConsumer is returned by Write when the bytes it may hold are
	// used up because the peer is not keeping up, and the SlowConsumer
	// policy says not to wait (SlowConsumerError or SlowConsumerClose): in
	// batching mode, when the write buffer is full; with acknowledged
	// delivery, in either mode, when the window of unacknowledged messages
	// is.
	ErrSlowConsumer = errors.New("buffstreams: write buffer full: peer is not keeping up")

	// ErrReconnectFailed is returned when a connection could not be dialed
	// again within the Retry policy's limits, and then by every Write,
	// WriteBatch and Flush until Reopen (see TCPConn.Err); also by DialTCP
	// when the policy gives up on the first dial (unless FirstDialOnce). It
	// wraps the last dial error.
	ErrReconnectFailed = errors.New("buffstreams: reconnect failed")

	// ErrTooManyConnections is the reason a listener closes a connection
	// accepted beyond its MaxConns, passed to OnConnEnd. It is counted in
	// ListenerStats.Refused.
	ErrTooManyConnections = errors.New("buffstreams: too many connections")

	// ErrWrongProtocol is the cause of closing a connection whose first
	// bytes show that the peer speaks another protocol, such as TLS or
	// HTTP, or another framing, passed to OnConnEnd. The error text names
	// what was recognised, and the error also wraps the failure it explains
	// (ErrMessageTooLarge, ErrMalformedHeader, io.ErrUnexpectedEOF or a
	// timeout).
	ErrWrongProtocol = errors.New("buffstreams: peer speaks another protocol")

	// ErrTLSHandshake is the cause of closing an accepted connection whose
	// TLS handshake failed or did not finish within HandshakeTimeout,
	// passed to OnConnEnd. The error also wraps the crypto/tls error (or
	// context.DeadlineExceeded), so errors.As finds, for example, a
	// tls.AlertError or a tls.RecordHeaderError. It is counted in
	// ListenerStats.TLSErrors.
	ErrTLSHandshake = errors.New("buffstreams: TLS handshake failed")

	// ErrDelimiterInPayload is returned by Write when a delimited framing cannot
	// carry the payload, because the delimiter occurs in it or would be read
	// earlier than where it is written (nothing is sent).
	ErrDelimiterInPayload = errors.New("buffstreams: payload contains the delimiter")

	// ErrAckMismatch is returned by DialTCP, and by reconnects, when the
	// listener of acknowledged delivery uses another framing, another
	// MaxMessageSize or another protocol version. The text names which.
	ErrAckMismatch = errors.New("buffstreams: acknowledged delivery: the peers' settings differ")

	// ErrPeerClosed is returned by the first Write, WriteBatch or Flush
	// of a dialed connection after its peer closed or reset the socket (a
	// peer that shut down only its sending side counts), and
	// by Close, when nobody reads the connection (see TCPConn): messages
	// written shortly before may not have reached the peer's application;
	// on Linux those its TCP never acknowledged are reported with
	// ErrUnacknowledged. The message of that Write is not written
	// into the dead socket. With a Retry policy the connection dials again
	// and writes it instead of failing, and ConnStats.PeerCloses counts the
	// event. When the peer had sent bytes that name another protocol (a TLS
	// server answering a plain client), the error also wraps
	// ErrWrongProtocol and says which, and when they are the refusal of a
	// listener with acknowledged delivery, ErrAcksOff; a Retry policy then
	// gives up at once, with ErrReconnectFailed wrapping the error, since
	// every new connection would end the same way.
	ErrPeerClosed = errors.New("buffstreams: the peer closed the connection")

	// ErrAcksOff is returned by DialTCP, and by reconnects, when one end
	// has acknowledged delivery on (AckConfig) and the other does not.
	ErrAcksOff = errors.New("buffstreams: acknowledged delivery is on at one end only")

	// ErrTLSMismatch is returned by DialTCP, and by reconnects, with
	// acknowledged delivery on, when TLS is on at one end only.
	ErrTLSMismatch = errors.New("buffstreams: TLS is on at one end only")

	// ErrAckRefused is returned by DialTCP, and by reconnects, when the
	// listener of acknowledged delivery refuses the session: its session
	// table is full, its SessionStore failed, or it is shutting down.
	ErrAckRefused = errors.New("buffstreams: the listener refused the session")

	// ErrAckProtocol is the cause of closing a connection whose peer broke
	// the acknowledgement protocol: a garbled hello or answer, an
	// acknowledgement of a message never sent, or one going backwards.
	ErrAckProtocol = errors.New("buffstreams: the peer broke the acknowledgement protocol")

	// ErrPeerSilent is returned when the peer went silent: its host, or
	// the network to it, went away without a FIN or a reset, or it stopped
	// reading. With acknowledged delivery, the listener sent nothing, not
	// even a heartbeat, for AckConfig.HeartbeatTimeout: the sender closes
	// that connection, counts it in ConnStats.SilentPeers, dials again
	// under its Retry policy (the next address first, with several) and
	// writes again what was not acknowledged; when the policy sees no
	// progress, OnWriteError receives ErrReconnectFailed wrapping it. In
	// plain mode, data that the peer's TCP did not acknowledge for
	// StallTimeout (or, where that cannot be watched, a write that made no
	// progress for that long): the Write that found it returns it, or the
	// next one and Close when the connection was idle, and it is the reason
	// OnWriteError receives for that Write's message. The error also wraps
	// the system's error (ETIMEDOUT, an ICMP error such as EHOSTUNREACH) or
	// os.ErrDeadlineExceeded, so it is a net.Error whose Timeout is true.
	ErrPeerSilent = errors.New("buffstreams: the peer went silent")

	// ErrPeerRefused is returned, wrapped with ErrPeerClosed, when a
	// listener without acknowledged delivery closed a plain connection
	// after telling it why: its bytes could not be read as frames, because
	// the two ends disagree on the framing or on MaxMessageSize (with the
	// default framing, the header width follows it), or the peer sent
	// something else. The error's text carries the listener's words, such
	// as which MaxMessageSize each side has. A Retry policy gives up at
	// once: every new connection would be refused the same way.
	ErrPeerRefused = errors.New("buffstreams: the listener refused the connection")

	// ErrUnacknowledged is the error OnWriteError receives, with a nil
	// message, for each message that had been counted as written (the
	// kernel had its whole frame) but whose frame the peer's TCP had not
	// acknowledged when the connection failed or was closed: the message
	// did not arrive. The error also wraps why the connection ended. Close
	// returns an error matching it when it had to give up on such messages.
	// Linux only; see the package documentation, Accounting.
	ErrUnacknowledged = errors.New("buffstreams: the peer's TCP never acknowledged the message")

	// ErrRejected is the error OnWriteError receives, with acknowledged
	// delivery, for a message whose listener callback returned an error.
	// The text carries the callback's error text.
	ErrRejected = errors.New("buffstreams: the peer's callback returned an error")
)
