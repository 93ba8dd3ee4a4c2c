package buffstreams

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
	"unicode/utf8"
)

// This file owns the acknowledgement protocol: its settings, the bytes of
// the hello, the answer and the records that follow, and their encoders and
// decoders. The sender's side is writer_ack.go, the listener's side
// tcplistener_ack.go. docs/wire.md, under "The acknowledgement protocol",
// draws the same bytes for implementers in other languages.

// AckConfig turns on acknowledged delivery when set on both a TCPConnConfig
// and a TCPListenerConfig (see the package documentation, Acknowledged
// delivery). Some fields concern only the dialing side, others only the
// listening side; each says which. The zero value of every field selects
// its default.
type AckConfig struct {
	// Window (dialer) is the most bytes a connection keeps for the
	// messages the listener has not acknowledged, to write them again after
	// a reconnect: their frames and 16 bytes of bookkeeping each. A Write
	// that does not fit follows the SlowConsumer policy; an empty window
	// takes one message of any size. The frames lie in one buffer, used
	// round and round, that grows as needed: up to this size (or that one
	// message's), and up to twice this size while frames the listener has
	// acknowledged are still being written from it (a long write to a full
	// socket). While a write from the old buffer is under way, growing
	// holds both. The bookkeeping may take up to about twice its share.
	// Zero means 4 MiB.
	//
	// The window also bounds the bytes in flight: for full speed it must
	// hold a round trip's worth of the stream (4 MiB lasts about 34 ms at
	// 1 Gbit/s). A smaller window keeps its memory in the processor's
	// caches: on loopback with 16 connections in one process, 256 KiB spent
	// less CPU per message than the default (docs/performance.md).
	Window int

	// AckEvery (listener) is the most messages delivered to the callback
	// before the listener acknowledges them. Zero means 1024.
	AckEvery int

	// AckBytes (listener) is the most payload bytes delivered to the
	// callback before the listener acknowledges them. Zero means 256 KiB.
	AckBytes int

	// MaxSessions (listener) bounds the sessions the listener remembers.
	// When it is reached, a new session evicts the one whose connection
	// ended longest ago; if every session has a connection (or a read loop
	// still in its callback), the new one is refused. Zero means 10000.
	MaxSessions int

	// SessionTTL (listener) is how long the listener remembers a session
	// after its connection ended. A sender that comes back later is served
	// as a new session: what it replays is delivered again. Zero means 10
	// minutes.
	SessionTTL time.Duration

	// Store (listener), if set, keeps session positions beyond the
	// listener's memory, for exactly-once delivery across a restart. Nil
	// means positions live only in the listener's memory, so a restart
	// gives at-least-once delivery.
	Store SessionStore

	// HeartbeatTimeout (dialer) is how long the sender waits to hear from
	// the listener before it declares the connection dead with
	// ErrPeerSilent: it closes the socket, counts it in
	// ConnStats.SilentPeers, dials again under its Retry policy and writes
	// again what was not acknowledged. The hello passes it to the listener,
	// which sends a heartbeat record whenever it has written nothing for a
	// third of it (acknowledgements count, so a busy connection carries no
	// extra bytes) and, on Linux, sets TCP_USER_TIMEOUT to it on the
	// socket. At least 100 ms; zero means 5 seconds, negative turns
	// heartbeats off (a listener gone without a FIN or a reset then stalls
	// the sender for as long as TCP takes to notice: minutes with data in
	// flight, for ever without).
	HeartbeatTimeout time.Duration
}

// A SessionID names a sender's session: 16 random bytes chosen by DialTCP
// and kept across the reconnects of one TCPConn.
type SessionID [16]byte

// String returns the session ID in hexadecimal.
func (id SessionID) String() string { return hex.EncodeToString(id[:]) }

// A SessionStore keeps, for each session, the sequence number of the last
// message the listener delivered to its callback, so that a listener that
// restarts resumes every session where the previous one stopped.
//
// Save is called by a connection's read loop, after the callbacks of the
// messages up to delivered have returned and before they are acknowledged;
// while it runs the connection reads nothing more. If Save returns an
// error, nothing is acknowledged and the connection is closed. Load is
// called when a session the listener does not remember says hello; ok false
// means the session is new. For exactly-once delivery across a restart,
// make what the callbacks did and the saved position durable together.
// The methods are called from many goroutines at once, for different
// sessions.
type SessionStore interface {
	Load(id SessionID) (delivered uint64, ok bool, err error)
	Save(id SessionID, delivered uint64) error
}

// Defaults of AckConfig.
const (
	defaultAckWindow   = 4 << 20
	defaultAckEvery    = 1024
	defaultAckBytes    = 256 << 10
	defaultMaxSessions = 10000
	defaultSessionTTL  = 10 * time.Minute

	defaultHeartbeatTimeout = 5 * time.Second
	minHeartbeatTimeout     = 100 * time.Millisecond
)

// ackOptions are the checked, effective settings of acknowledged delivery.
type ackOptions struct {
	window      int
	every       int
	bytes       int
	maxSessions int
	ttl         time.Duration
	store       SessionStore
	heartbeat   time.Duration // the dialer's HeartbeatTimeout; 0 when off
}

func newAckOptions(a *AckConfig, w wire) (*ackOptions, error) {
	if a == nil {
		return nil, nil
	}
	if a.Window < 0 || a.AckEvery < 0 || a.AckBytes < 0 || a.MaxSessions < 0 || a.SessionTTL < 0 {
		return nil, fmt.Errorf("%w: negative setting in AckConfig", ErrInvalidConfig)
	}
	if n := len(w.framing.String()); n > maxFramingName {
		return nil, fmt.Errorf("%w: acknowledged delivery needs a framing name of at most %d bytes, not %d", ErrInvalidConfig, maxFramingName, n)
	}
	hb := orDefault(a.HeartbeatTimeout, defaultHeartbeatTimeout)
	switch {
	case hb < 0:
		hb = 0
	case hb < minHeartbeatTimeout:
		return nil, fmt.Errorf("%w: HeartbeatTimeout %v is below the minimum of %v", ErrInvalidConfig, hb, minHeartbeatTimeout)
	case hb > maxHeartbeatTimeout:
		return nil, fmt.Errorf("%w: HeartbeatTimeout %v is above the maximum of 2^31-1 ms", ErrInvalidConfig, hb)
	}
	return &ackOptions{
		window:      orDefault(a.Window, defaultAckWindow),
		every:       orDefault(a.AckEvery, defaultAckEvery),
		bytes:       orDefault(a.AckBytes, defaultAckBytes),
		maxSessions: orDefault(a.MaxSessions, defaultMaxSessions),
		ttl:         orDefault(a.SessionTTL, defaultSessionTTL),
		store:       a.Store,
		heartbeat:   hb,
	}, nil
}

// The protocol's constants. Every number on the wire is big-endian.
const (
	ackVersion = 2

	// Message types: the hello (dialer to listener), the answers, and the
	// records the listener sends after accepting.
	typeHello     = 0x01
	typeAccept    = 0x02
	typeRefuse    = 0x03
	typeAck       = 0x10
	typeRejected  = 0x11
	typeGoaway    = 0x12
	typeHeartbeat = 0x13

	helloFixed     = 44   // the hello up to the framing name
	answerFixed    = 10   // magic, version, type
	maxFramingName = 1024 // longest framing name in a hello
	maxReasonText  = 1024 // longest text in a refusal or a rejected record
	ackRecordLen   = 9    // type and sequence number

	// The heartbeat timeout a hello may carry, in milliseconds: 0 for none,
	// or from the least the dialer accepts to the most TCP_USER_TIMEOUT
	// takes.
	maxHeartbeatTimeout = math.MaxInt32 * time.Millisecond
)

// ackMagic opens the hello and every answer. No frame of the BuffStreams,
// Uvarint, Fixed4, Fixed4LE, Fixed4Inclusive, Fixed8 or Fixed8LE framings
// can begin with it (the first is a negative or unterminated varint, the
// others lengths of 2^31 or more), so a listener of those framings without
// acknowledgements fails on the first frame; Fixed1, Fixed2, Fixed2LE,
// Fixed3 (with a MaxMessageSize of 2^24-1) and delimited framings can read
// it as the start of a frame, and such a listener recognises it before
// delivering anything. As a TLS record header it has the type 0xff, which
// TLS peers reject as "first record does not look like a TLS handshake".
var ackMagic = [8]byte{0xff, 0xff, 0xff, 0xff, 'B', 'S', 'A', 'K'}

// Refusal reasons, sent in a refuse answer.
const (
	reasonVersion  = 1  // another protocol version
	reasonFraming  = 2  // another framing
	reasonMax      = 3  // another MaxMessageSize
	reasonNoHello  = 4  // the dialer sent frames, not a hello: Acks is off there
	reasonAcksOff  = 5  // the listener does not have Acks on
	reasonTLS      = 6  // the listener serves TLS, the dialer does not
	reasonNoTLS    = 7  // the dialer speaks TLS, the listener does not
	reasonBusy     = 8  // the session table is full, or the session is busy
	reasonStore    = 9  // the SessionStore failed
	reasonShutdown = 10 // the listener is shutting down
	reasonBadHello = 11 // the hello is malformed
)

// refusalError returns the dialer's error for a refusal.
func refusalError(reason byte, text string) error {
	var base error
	switch reason {
	case reasonVersion, reasonFraming, reasonMax:
		base = ErrAckMismatch
	case reasonAcksOff, reasonNoHello:
		base = ErrAcksOff
	case reasonTLS, reasonNoTLS:
		base = ErrTLSMismatch
	default:
		base = ErrAckRefused
	}
	return fmt.Errorf("%w: the listener refused the hello: %s", base, text)
}

// errNoAnswer is a hello's failure when the listener closed the connection
// without a word: a listener without acks that does not know the hello
// (BuffStreams 2.0, say) does that, and so does one at its MaxConns, which
// may take the connection later.
var errNoAnswer = errors.New("the listener closed the connection without answering the hello")

// permanent reports whether a failed hello will fail again however often it
// is tried, so that reconnecting stops at once.
func permanent(err error) bool {
	if errors.Is(err, errNoAnswer) {
		return false
	}
	return errors.Is(err, ErrAckMismatch) || errors.Is(err, ErrAcksOff) || errors.Is(err, ErrTLSMismatch)
}

// newSessionID returns a random session ID.
func newSessionID() SessionID {
	var id SessionID
	rand.Read(id[:])
	return id
}

// hello is the dialer's opening.
type hello struct {
	version   byte
	id        SessionID
	first     uint64 // the first message the sender still holds
	max       uint32
	heartbeat uint32 // the dialer's HeartbeatTimeout in milliseconds; 0 for none
	framing   string
}

// appendHello appends the encoded hello to dst.
func appendHello(dst []byte, h hello) []byte {
	dst = append(dst, ackMagic[:]...)
	dst = append(dst, h.version, typeHello)
	dst = append(dst, h.id[:]...)
	dst = binary.BigEndian.AppendUint64(dst, h.first)
	dst = binary.BigEndian.AppendUint32(dst, h.max)
	dst = binary.BigEndian.AppendUint32(dst, h.heartbeat)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(h.framing)))
	return append(dst, h.framing...)
}

// parseHello decodes a hello. It returns size 0 if p is too short to hold
// it, and how many bytes it needs in all otherwise; err is set as soon as p
// shows that it is not a valid hello, with the refusal reason to answer.
func parseHello(p []byte) (h hello, size int, reason byte, err error) {
	if n := min(len(p), len(ackMagic)); !bytes.Equal(p[:n], ackMagic[:n]) {
		return h, 0, reasonNoHello, fmt.Errorf("%w: the connection does not open with the hello of acknowledged delivery", ErrAckProtocol)
	}
	// The version and the type are checked as soon as they arrive: a hello
	// of another version may be shorter than ours.
	if len(p) < 10 {
		return h, 0, 0, nil
	}
	h.version = p[8]
	if h.version != ackVersion {
		return h, 0, reasonVersion, fmt.Errorf("%w: protocol version %d, this side speaks %d", ErrAckMismatch, h.version, ackVersion)
	}
	if p[9] != typeHello {
		return h, 0, reasonBadHello, fmt.Errorf("%w: message type %#x where a hello was expected", ErrAckProtocol, p[9])
	}
	if len(p) < helloFixed {
		return h, 0, 0, nil
	}
	copy(h.id[:], p[10:26])
	h.first = binary.BigEndian.Uint64(p[26:34])
	h.max = binary.BigEndian.Uint32(p[34:38])
	h.heartbeat = binary.BigEndian.Uint32(p[38:42])
	n := int(binary.BigEndian.Uint16(p[42:44]))
	switch {
	case h.first == 0 || h.first > 1<<62:
		return h, 0, reasonBadHello, fmt.Errorf("%w: first sequence number %d out of range", ErrAckProtocol, h.first)
	case h.heartbeat != 0 && (h.heartbeat < uint32(minHeartbeatTimeout/time.Millisecond) || h.heartbeat > uint32(maxHeartbeatTimeout/time.Millisecond)):
		return h, 0, reasonBadHello, fmt.Errorf("%w: heartbeat timeout of %d ms, outside 100 ms to 2^31-1 ms", ErrAckProtocol, h.heartbeat)
	case n == 0 || n > maxFramingName:
		return h, 0, reasonBadHello, fmt.Errorf("%w: framing name of %d bytes", ErrAckProtocol, n)
	case len(p) < helloFixed+n:
		return h, helloFixed + n, 0, nil
	}
	h.framing = string(p[helloFixed : helloFixed+n])
	return h, helloFixed + n, 0, nil
}

// appendAccept appends an accept answer to dst.
func appendAccept(dst []byte, delivered uint64) []byte {
	dst = append(dst, ackMagic[:]...)
	dst = append(dst, ackVersion, typeAccept)
	return binary.BigEndian.AppendUint64(dst, delivered)
}

// appendRefuse appends a refuse answer to dst. The text is cut to
// maxReasonText bytes.
func appendRefuse(dst []byte, reason byte, text string) []byte {
	text = clip(text)
	dst = append(dst, ackMagic[:]...)
	dst = append(dst, ackVersion, typeRefuse, reason)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(text)))
	return append(dst, text...)
}

// appendRecord appends an ack, goaway or heartbeat record to dst.
func appendRecord(dst []byte, typ byte, seq uint64) []byte {
	dst = append(dst, typ)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// appendRejected appends the record saying that the callback of message
// seq returned an error with the given text.
func appendRejected(dst []byte, seq uint64, text string) []byte {
	text = clip(text)
	dst = appendRecord(dst, typeRejected, seq)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(text)))
	return append(dst, text...)
}

// clip cuts s to at most maxReasonText bytes, at a rune boundary.
func clip(s string) string {
	if len(s) <= maxReasonText {
		return s
	}
	s = s[:maxReasonText]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// readAnswer reads the listener's answer to a hello from r and returns the
// last sequence number delivered, or the error that names what went wrong.
func readAnswer(r io.Reader) (uint64, error) {
	var b [answerFixed + 8]byte
	n, err := io.ReadFull(r, b[:answerFixed])
	if err != nil {
		return 0, answerReadError(b[:n], err)
	}
	if !bytes.Equal(b[:8], ackMagic[:]) {
		return 0, answerReadError(b[:n], nil)
	}
	if b[8] != ackVersion {
		return 0, fmt.Errorf("%w: the listener answered with protocol version %d, this side speaks %d", ErrAckMismatch, b[8], ackVersion)
	}
	switch b[9] {
	case typeAccept:
		if _, err := io.ReadFull(r, b[answerFixed:answerFixed+8]); err != nil {
			return 0, fmt.Errorf("%w: the accept answer was cut short: %w", ErrAckProtocol, err)
		}
		return binary.BigEndian.Uint64(b[answerFixed:]), nil
	case typeRefuse:
		var h [3]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return 0, fmt.Errorf("%w: the refusal was cut short: %w", ErrAckRefused, err)
		}
		m := int(binary.BigEndian.Uint16(h[1:]))
		if m > maxReasonText {
			return 0, fmt.Errorf("%w: refusal text of %d bytes", ErrAckProtocol, m)
		}
		text := make([]byte, m)
		if _, err := io.ReadFull(r, text); err != nil {
			return 0, fmt.Errorf("%w: the refusal was cut short: %w", ErrAckRefused, err)
		}
		return 0, refusalError(h[0], string(text))
	}
	return 0, fmt.Errorf("%w: answer of type %#x", ErrAckProtocol, b[9])
}

// answerReadError names what the listener sent, or did, instead of an
// answer: p holds the bytes that arrived, err the read error, if any.
func answerReadError(p []byte, err error) error {
	switch {
	case len(p) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return fmt.Errorf("%w: %w; it does not have Acks on, or refused the connection (MaxConns)", ErrAcksOff, errNoAnswer)
	case len(p) >= 3 && p[0] >= 0x14 && p[0] <= 0x17 && p[1] == 0x03:
		return fmt.Errorf("%w: the listener answered with TLS (first bytes % x); set TLSConfig on the dialer", ErrTLSMismatch, p)
	case len(p) > 0 && !bytes.HasPrefix(ackMagic[:], p[:min(len(p), len(ackMagic))]):
		return fmt.Errorf("%w: the listener answered the hello with % x, not an answer", ErrAckProtocol, p)
	case err != nil:
		return fmt.Errorf("buffstreams: reading the answer to the hello: %w", err)
	}
	return fmt.Errorf("%w: the listener answered the hello with % x", ErrAckProtocol, p)
}

// tlsDialError names a TLS handshake that failed because the listener
// answered in plain text with the protocol's magic: it does not serve TLS.
func tlsDialError(addr string, err error) error {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && bytes.Equal(rh.RecordHeader[:], ackMagic[:5]) {
		return fmt.Errorf("%w: the listener at %s does not serve TLS; remove TLSConfig on the dialer or set it on the listener: %w", ErrTLSMismatch, addr, err)
	}
	return fmt.Errorf("buffstreams: TLS handshake with %s: %w", addr, err)
}
