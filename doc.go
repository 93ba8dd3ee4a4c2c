// Package buffstreams streams length-prefixed messages, usually serialized
// Protocol Buffers, over TCP.
//
// A [TCPListener] accepts connections and, for each, reads frames (a length
// header followed by a payload), strips the header and hands each payload to
// a [ListenCallback], or to a [ConnCallback] that can answer on the
// connection. A [TCPConn] dials an address and frames every Write; after a
// failure it dials again, on the next Write or, with a [RetryPolicy], at
// once with back-off. A [Manager] keeps listeners and connections by
// address. [NewConn] and [NewListener] put any net.Conn or net.Listener (Unix
// sockets, TLS, net.Pipe) under the same API. The API is that of BuffStreams 2.0:
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
// # Writing: one system call per Write, or batching
//
// By default Write returns when the kernel has the frame, as in BuffStreams
// 2.0, and concurrent Writes on one connection share system calls (group
// commit). With TCPConnConfig.WriteBufferSize set, Write only copies the
// frame into a buffer that a flusher writes many frames at a time; Flush
// waits for it, Close drains it, and SlowConsumer decides what a full buffer
// does. Either way every message ends exactly once in
// ConnStats.MessagesWritten or in the OnWriteError hook.
//
// # Security and failures
//
// TLSConfig on either side turns on TLS, mutual TLS included. Dial, read,
// write, idle and handshake timeouts, TCP keep-alive and a cap on connections
// bound what a peer can hold. A connection whose first bytes are a TLS
// ClientHello, an HTTP request or another framing is closed with an error
// wrapping [ErrWrongProtocol] that says so. [TCPListener.Shutdown] delivers
// what connections have sent before closing them; Close is immediate.
//
// # Reading without a callback
//
// [TCPConn.Read] copies one whole message; [TCPConn.Messages] iterates over
// messages in place, each valid until the next iteration.
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
// calls the callback; the listener adds one goroutine that accepts, and a
// TCPConn in batching mode one flusher. An idle TCP or Unix socket
// connection gives its read buffer back to a pool, so it costs its
// goroutine and socket only. Close
// waits for them all: when it returns, none is running.
package buffstreams
