// Package buffstreams streams length-prefixed messages, usually serialized
// Protocol Buffers, over TCP.
//
// A [TCPListener] accepts connections and, for each, reads frames (a length
// header followed by a payload), strips the header and hands each payload to
// a [ListenCallback]. A [TCPConn] dials an address and frames every Write;
// after a failure it dials again on the next Write. A [Manager] keeps
// listeners and connections by address. The API is that of BuffStreams 2.0:
// code written against it compiles after changing the import path, and the
// default framing is byte-compatible with it.
//
// # Wire formats
//
// A [Framing] says how a payload's length is written. The default,
// [BuffStreamsFraming], is BuffStreams 2.0's: a header whose width follows
// from MaxMessageSize, holding a zig-zag varint, so both ends must agree on
// MaxMessageSize. [Uvarint] is protobuf's size-delimited format, spoken by
// writeDelimitedTo in Java, WriteDelimitedTo in C#, encodeDelimited in
// protobufjs and Go's protodelim. [Fixed1], [Fixed2], [Fixed3], [Fixed4] and
// [Fixed8] are big-endian lengths of that many bytes, as Netty's
// LengthFieldPrepender and tokio's LengthDelimitedCodec write. New systems
// should use Uvarint or Fixed4.
//
// # Limits and bad input
//
// Every declared length is checked against MaxMessageSize as soon as its
// header is read, before any of the payload, and the read buffer never grows
// beyond the largest frame MaxMessageSize allows. A peer that declares too
// much, sends a malformed header or disconnects inside a frame has its
// connection closed, with an error wrapping [ErrMessageTooLarge],
// [ErrMalformedHeader] or [io.ErrUnexpectedEOF]; the listener logs it (if
// logging is on), counts it in [ListenerStats], and keeps serving every other
// connection. A Write longer than MaxMessageSize returns ErrMessageTooLarge
// and sends nothing.
//
// # Concurrency
//
// TCPListener, TCPConn and Manager are safe for concurrent use. Concurrent
// Writes on one TCPConn never interleave: each message goes out whole. The
// callbacks of one connection run one at a time, in the order the messages
// were written; callbacks of different connections run concurrently. The
// slice passed to a callback aliases the connection's read buffer and is
// valid only until the callback returns.
//
// Each accepted connection costs one goroutine, which reads, parses and
// calls the callback; the listener adds one goroutine that accepts. Close
// waits for them: when it returns, none is running.
package buffstreams
