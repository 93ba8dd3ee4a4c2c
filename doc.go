// Package buffstreams streams length-prefixed messages, usually serialized
// Protocol Buffers, over TCP. Its API and its default wire format are those
// of BuffStreams 2.0: code written against 2.0 compiles after changing the
// import path, and talks to 2.0 services.
//
// # Where to start
//
//   - To receive: [ListenTCP] with a [TCPListenerConfig] returns a
//     [TCPListener]. [TCPListener.StartListening], or StartListeningAsync,
//     hands every message to the configuration's [ListenCallback], or to a
//     [ConnCallback] that can reply on the connection.
//     [TCPListener.Shutdown] delivers what has arrived and stops; Close
//     stops at once.
//   - To send: [DialTCP] with a [TCPConnConfig] returns a [TCPConn].
//     [TCPConn.Write] sends one message; [TCPConn.Read] and
//     [TCPConn.Messages] read what the peer sends back. A goroutine that
//     streams many messages writes them through a [BufferedWriter]
//     ([TCPConn.NewBufferedWriter]), a buffer of its own (see Batching).
//   - By address: a [Manager] keeps listeners and connections by address,
//     as BuffStreams 2.0's did.
//   - Over any connection: [NewConn] and [NewListener] put a net.Conn or a
//     net.Listener (a Unix socket, TLS, net.Pipe) under the same API.
//   - The wire format: a [Framing]. The default is [BuffStreamsFraming];
//     new systems should use [Uvarint], protobuf's size-delimited format.
//     [ParseFraming] picks one by name.
//   - Failures: a [RetryPolicy] reconnects with back-off;
//     TCPConnConfig.OnWriteError receives every message that could not be
//     sent (see Accounting); TCPListenerConfig.OnConnEnd says why each
//     accepted connection ended; the Err variables are the errors to test
//     for with errors.Is.
//   - Delivery you can count on: an [AckConfig] on both configurations, and
//     [TCPConn.Sync] (see Acknowledged delivery).
//   - Counters: [TCPListener.Stats] and [TCPConn.Stats].
//
// The zero value of every configuration field selects a default, which
// the field's documentation states. In the repository, the README walks
// through the choices a new user makes, docs/wire.md specifies every
// framing and the acknowledgement protocol byte by byte, and
// docs/guarantees.md states what is promised about ordering, delivery, bad
// input, memory and time.
//
// # Concurrency
//
// TCPListener, TCPConn and Manager are safe for concurrent use; a
// [BufferedWriter] is not, and each goroutine needs its own. Concurrent
// Writes on one TCPConn never interleave: each message goes out whole. The
// callbacks of one connection run one at a time, in the order the messages
// were written; callbacks of different connections run concurrently.
//
// Each accepted connection costs one goroutine, which reads, parses and
// calls the callback; the listener adds one goroutine that accepts, and a
// TCPConn in batching mode one flusher. An idle TCP or Unix socket
// connection gives its read buffer back to a pool, so it costs its
// goroutine and socket only. Close waits for them all: when it returns,
// none is running.
//
// # Batching
//
// What Write, Flush and Close promise depends on the write mode, which
// TCPConnConfig.WriteBufferSize selects. In both modes concurrent Writes on
// one connection never interleave: each frame goes out whole, in the order
// the Writes take their turn.
//
// In the default mode (WriteBufferSize zero), Write returns len(data) once
// the whole frame has been handed to the kernel, as in BuffStreams 2.0.
// Concurrent Writes share system calls (group commit): while one goroutine
// writes, the frames of the others are gathered, and the next of them
// writes them all at once; each Write still returns only when its own frame
// has been written. A Write that fails returns 0 and the error; its frame
// was not sent, or only part of it was, which the peer discards. Close has
// nothing buffered to write; it waits for the peer's TCP to acknowledge
// what is written, as described under Accounting.
//
// While Writes follow each other closely (two starting less than 8 µs apart
// begin a stream, which goes on while each starts less than 5 µs after the
// previous one returned), the default mode corks the socket on
// Linux (TCP_CORK): each frame is still in the kernel when its Write
// returns, but the kernel packs the frames into full TCP segments instead of
// sending one segment per frame, which is what makes a stream of small
// messages cheap for both ends. A Write after a pause takes the cork off
// and leaves at once, and so does a Write after a Read, after Flush or, on
// a connection a listener serves, after its read loop caught up, however
// soon it follows: a request whose reply came back quickly, or a reply to
// a lone request, is not part of a stream. The cork
// also comes off when the connection has been quiet for 50 µs (checked by a
// timer, which may run up to about a millisecond late when the process is
// otherwise idle), on Flush, before a Read or Messages waits, on Close, and,
// on a connection a listener serves, whenever its read loop has delivered
// everything that arrived, so that replies written from ConnCallback leave
// once the requests before them are handled. The last frame of a burst
// therefore waits at most that long in the kernel; call Flush after a burst
// whose last frame must leave at once. Other systems send one segment per
// Write, as Go does by default.
//
// In batching mode (WriteBufferSize > 0), Write copies the frame into the
// write buffer and returns len(data). A flusher goroutine writes the
// buffer, many frames per system call, as soon as Writes pause, so a
// message written alone goes out at once. While Writes keep coming, the
// one that finds the buffer full writes it itself (under the default
// SlowConsumerBlock; under the other policies the flusher does), and the
// flusher writes what the buffer holds within 50 µs. With FlushInterval
// set, the flusher first waits up to that long for a buffer less than half
// full to fill. A message of 16 KiB or a quarter of WriteBufferSize,
// whichever is larger, or longer, is not copied: Write writes it from the
// caller's slice, after everything buffered before it, and returns once the
// kernel has it or the write has failed. A buffered message that fails
// after its Write returned is reported to OnWriteError only (see
// Accounting).
//
// The buffer is full when a frame does not fit in what is left of
// WriteBufferSize; an empty buffer takes any frame Write copies, so the
// buffer holds at most WriteBufferSize bytes, or one frame if that is
// larger. What Write does then is the SlowConsumer policy's choice:
//
//   - [SlowConsumerBlock] (the default) waits for room, up to WriteTimeout
//     if it is set, then returns an error wrapping [ErrWriteTimeout]
//     without buffering the message;
//   - [SlowConsumerError] returns an error wrapping [ErrSlowConsumer]
//     instead of waiting for the socket, and keeps the connection and what
//     it has buffered;
//   - [SlowConsumerClose] closes the connection, passes every buffered
//     message and this one to OnWriteError with an error wrapping
//     ErrSlowConsumer, and returns that error; the next Write dials again.
//
// A [BufferedWriter] is the way for one goroutine to stream many small
// messages in either mode: it frames them into a buffer of its own, as
// bufio.Writer does, without a lock or an atomic operation per message,
// and hands the buffer to the connection when it is full and on
// [BufferedWriter.Flush], which without Acks returns, in both modes, once
// the kernel has every frame (see BufferedWriter.Flush for Acks). Its
// messages are the connection's, and counted, only from then on; until
// then they are the BufferedWriter's, and only its Flush sends them.
//
// Flush waits until every message accepted before it has been handed to
// the kernel or has failed. It returns nil if no message failed while it
// waited, and otherwise the latest failure; a failure that happened before
// Flush was called is reported to OnWriteError, not by Flush.
//
// In batching mode, Close first writes what is buffered, within
// WriteTimeout (10 seconds if it is zero) and without retrying, then closes
// the socket; the messages it cannot write are passed to OnWriteError.
// Writes that wait for room, and every later Write, fail with an error
// matching [net.ErrClosed].
//
// # Accounting
//
// Every message given to a connection's Write or WriteBatch, directly or
// through a Manager, or handed to it by a BufferedWriter, ends exactly once
// in one of two places:
//
//   - in ConnStats.MessagesWritten (its payload in BytesWritten), once the
//     kernel has its whole frame, unless it is later found unacknowledged
//     (below);
//   - or in TCPConnConfig.OnWriteError, with the reason, and then in
//     ConnStats.WriteErrors.
//
// A Write that returns an error has already passed its message to
// OnWriteError. The reason matches one of [ErrMessageTooLarge] or
// [ErrDelimiterInPayload] (refused before anything was sent),
// [ErrSlowConsumer], [ErrWriteTimeout], [ErrPeerClosed], [ErrPeerSilent],
// [ErrUnacknowledged] (below), [ErrReconnectFailed] (the Retry policy gave
// up), [net.ErrClosed] (the connection was closed first), or is the network
// error itself. OnWriteError is called without locks held,
// from the goroutine that found the failure: the Write itself, another
// Write, the flusher, Close, Reopen, or a Read that found the socket failed.
// It must not block for long.
//
// When a write fails, the connection is closed. With a [RetryPolicy] it
// dials again at once, with back-off, and writes again the frames that had
// not reached the kernel whole; without one, those frames fail and the
// next operation dials again. When the policy gives up, the connection has
// failed for good: what is buffered fails at once with [ErrReconnectFailed],
// and so does every later Write, WriteBatch and Flush, without dialing,
// until [TCPConn.Reopen]. [TCPConn.Err] and [TCPConn.Done] report it. The
// policy covers DialTCP's first dial too, so that a client may start before
// its server, unless RetryPolicy.FirstDialOnce. A frame cut short on the old connection is
// discarded by the peer, which cannot mistake it for a message, so no
// message arrives twice.
//
// A message counts as written once the kernel has its frame, not once the
// peer's application has read it. On Linux, for a connection over plain TCP
// in plain mode, the kernel says how much of what was written the peer's
// TCP has acknowledged, and the connection keeps a record of where its
// recent frames end. When its socket fails, or is closed by Close, Reopen
// or SlowConsumerClose, every message whose frame the peer's TCP had not
// acknowledged is taken back from MessagesWritten, counted in WriteErrors
// and ConnStats.Unacknowledged, and passed to OnWriteError with a nil
// message (the connection no longer holds its bytes) and an error matching
// [ErrUnacknowledged] and why the socket ended; the socket is reset, so that
// those frames are not delivered after all. A reset cannot take back a
// frame the kernel already sent, which may sit in the peer's receive queue
// with its acknowledgement on the way: while the connection lives, only the
// frames the kernel had not yet sent whole are taken back, and a frame sent
// whole counts as written. Close first waits for the
// acknowledgements, within WriteTimeout (10 seconds if zero) and
// StallTimeout, and returns an error matching ErrUnacknowledged if it had
// to give up on some. What this cannot know: bytes the peer's kernel
// acknowledged and its process never read, because it crashed or its host
// lost power with them in its receive buffer, count as written; and a
// partition can swallow acknowledgements, so that a few messages reported
// failed did arrive. Elsewhere, and under TLS, whose records frames cannot
// be matched to, the count is not available, and what sat in the kernels'
// buffers when a peer died is lost without an error on this side.
//
// A peer that goes silent, with no FIN nor reset, fails the connection with
// [ErrPeerSilent] once written bytes have stayed unacknowledged for
// TCPConnConfig.StallTimeout (30 seconds by default), in plain mode. On
// Linux the kernel keeps that bound (TCP_USER_TIMEOUT); elsewhere a write
// deadline does, which only sees writes that block (see StallTimeout). A
// peer that keeps reading, however slowly, is not cut off.
//
// A dialed connection that nobody reads watches its socket for the peer's
// end, at no cost per message. Once the peer has closed or reset it, the
// next write fails with [ErrPeerClosed] instead of going into the dead
// socket (with a Retry policy it is written on a new connection instead),
// Close returns ErrPeerClosed if no write did, and ConnStats.PeerCloses
// counts it. The first Read or Messages ends the watch. docs/guarantees.md
// says which connections are watched and what the watch costs; a watched
// connection is not garbage-collected before Close.
//
// # Acknowledged delivery
//
// With an [AckConfig] on both the TCPConnConfig and the TCPListenerConfig,
// the listener tells the sender which messages its callback has had, and
// the sender keeps every message until then, to write it again after a
// reconnect. While the listener process lives, every message reaches the
// callback exactly once, in order, across any number of cut connections;
// across a listener restart, at least once, or exactly once with a
// [SessionStore]. A connection given several listeners
// (TCPConnConfig.Addresses or Resolve) writes its window again to whichever
// answers after a failover: that is at-least-once delivery, the duplicates
// being messages the lost listener delivered but had not acknowledged, at
// most a window's worth; listeners that share a SessionStore and commit
// their callbacks' effects with Save deliver exactly once.
// docs/guarantees.md states the promises in full, and docs/wire.md the
// protocol.
//
// Write keeps its meaning in each write mode, and Flush still waits for the
// kernel only; [TCPConn.Sync] waits until everything written before it is
// acknowledged. Every message ends exactly once in ConnStats.MessagesAcked
// or in OnWriteError: the latter receives exactly the messages never
// acknowledged, once the Retry policy gave up, the window's SlowConsumer
// policy refused them, or Close stopped waiting (up to WriteTimeout, 10
// seconds if zero). A message whose callback returned an error counts as
// delivered, is not sent again, and reaches OnWriteError with an error
// wrapping [ErrRejected] and the callback's error text. A full window
// (AckConfig.Window bytes unacknowledged) makes Write follow the
// SlowConsumer policy, in both modes. In batching mode the window is the
// write buffer: with SlowConsumerBlock, the Write that finds
// WriteBufferSize bytes (or half the window, if less) not yet written
// writes them itself, and a pump goroutine writes what is left once Writes
// pause, within 50 µs while they keep coming, or at once for a Flush, a
// Sync or Close; under the other policies the pump writes everything.
// FlushInterval has no effect.
//
// A listener that goes silent without a FIN or a reset (a host lost, a
// partition) is declared dead after AckConfig.HeartbeatTimeout, 5 seconds
// by default, with [ErrPeerSilent], and the connection dials again and
// writes again what was not acknowledged; docs/wire.md, under Heartbeats,
// says how.
//
// Read and Messages return an error on a dialed connection with
// acknowledgements, and Write on a connection a listener serves with them:
// the way back carries the acknowledgements. Settings that differ fail
// DialTCP, and reconnects, at once, with [ErrAckMismatch], [ErrAcksOff] or
// [ErrTLSMismatch].
//
// # Buffer lifetimes
//
// A slice the package hands to your code aliases one of its buffers and is
// valid only for a while; copy it (with bytes.Clone, or by unmarshaling it,
// which copies) to keep it:
//
//   - the message passed to a [ListenCallback] or [ConnCallback] is valid
//     until the callback returns;
//   - a message yielded by [TCPConn.Messages] is valid until the loop body
//     returns;
//   - the message passed to OnWriteError is valid only during the call.
//
// A slice you hand to the package is not kept: after Write, WriteBatch,
// Broadcast or Manager.Write returns, in either write mode, you may reuse
// it. [TCPConn.Read] copies one whole message into b, so b must hold
// [TCPConn.MaxMessageSize] bytes to take any message; a message longer than
// b makes Read return [io.ErrShortBuffer] and stays for the next Read.
//
// # Limits and bad input
//
// Every declared length is checked against MaxMessageSize as soon as its
// header is read, before any of the payload, and the read buffer never grows
// beyond the largest frame MaxMessageSize allows. A peer that declares too
// much, sends a malformed header or disconnects inside a frame has its
// connection closed, with an error wrapping [ErrMessageTooLarge],
// [ErrMalformedHeader] or [io.ErrUnexpectedEOF]; one whose first bytes show
// another protocol (TLS, HTTP, SSH, another framing), with an error wrapping
// [ErrWrongProtocol] that names it. The listener counts it in
// [ListenerStats] and keeps serving every other connection. A Write longer
// than MaxMessageSize returns ErrMessageTooLarge and sends nothing.
// TLSConfig on either side turns on TLS, mutual TLS included; dial, read,
// write, idle, stall and handshake timeouts, TCP keep-alive and MaxConns
// bound what a peer can hold.
package buffstreams
