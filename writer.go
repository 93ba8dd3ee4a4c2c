package buffstreams

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds what the three write engines share: the exported write
// methods, which check each message and hand it to the connection's engine;
// the engine interface; and the sender, which writes a run of frames to the
// socket and, as the Retry policy allows, reconnects and resumes at the
// first frame not written whole.
//
// A connection's engine is chosen once, by newConn: syncEngine
// (writer_sync.go) in the default mode, batchEngine (writer_batch.go) when
// WriteBufferSize > 0, and ackEngine (writer_ack.go, with its replay
// window in window.go), in either mode, with Acks. The guarantees they
// keep are stated once, in the package documentation under Batching and
// Accounting.

// largeWrite is the payload size from which a message is written from the
// caller's slice, in a vectored write with its header, instead of being
// copied.
const largeWrite = 16 << 10

// drainTimeout bounds Close's final flush when WriteTimeout is zero.
const drainTimeout = 10 * time.Second

// drainWait returns how long Close's final flush may take with the given
// WriteTimeout.
func drainWait(writeTimeout time.Duration) time.Duration {
	if writeTimeout == 0 {
		return drainTimeout
	}
	return writeTimeout
}

// keepBuffer is the capacity above which a buffer that grew under a burst
// of concurrent Writes is dropped after use rather than kept.
const keepBuffer = 1 << 20

// An engine carries a connection's messages to its socket. Every message
// handed to write or writeBatch has passed admit, and the engine accounts
// for each exactly once: in ConnStats.MessagesWritten once the kernel has
// its whole frame, or through TCPConn.failed.
type engine interface {
	// write sends one message.
	write(msg []byte) error
	// writeBatch sends msgs in order and returns how many were written
	// (in batching mode, accepted), with the first error met.
	writeBatch(msgs [][]byte) (int, error)
	// writeRun sends the frames of run, which lie at spans, as writeBatch
	// would send their payloads, and returns how many were written. It
	// does not keep run once it returns.
	writeRun(run []byte, spans []span) (int, error)
	// flush waits until every message accepted before it is written or
	// failed, and returns the latest failure meanwhile.
	flush() error
	// closing is called by Close with TCPConn.mu held, before the
	// connection is marked closed; drain after, without locks, to write
	// what is buffered before the socket is closed.
	closing()
	drain()
	// reopening is called by Reopen once the connection is no longer
	// closed, before it dials, whether or not that dial succeeds.
	reopening()
	// reopened is called after Reopen dialed a new socket.
	reopened()
	// attached is called once a socket the dial returned is the
	// connection's current one, or has been closed because Close came
	// first. An engine starts the socket's goroutines only then, so that
	// a failure they see finds the socket current and forgets it.
	attached(nc net.Conn)
}

// newEngine returns the engine the connection's settings ask for.
func newEngine(c *TCPConn) engine {
	if c.opts.ack != nil {
		return newAckEngine(c) // writer_ack.go
	}
	if c.opts.bufSize > 0 {
		return newBatchEngine(c)
	}
	return newSyncEngine(c)
}

// Write sends data as one message, adding the header. A message longer than
// MaxMessageSize is refused with ErrMessageTooLarge before anything is
// sent, and one the framing cannot carry (a delimiter inside a delimited
// message) with ErrDelimiterInPayload.
//
// What Write promises when it returns, in each write mode, is stated in the
// package documentation under Batching; a message it cannot send is
// reported as described under Accounting. On error Write returns 0. Once
// the Retry policy has given up, Write fails at once with its error (see
// Err).
func (c *TCPConn) Write(data []byte) (int, error) {
	if err := c.admit(data); err != nil {
		c.failed(data, err)
		return 0, err
	}
	if err := c.terminal(); err != nil {
		c.failed(data, err)
		return 0, err
	}
	if err := c.eng.write(data); err != nil {
		return 0, err
	}
	return len(data), nil
}

// WriteBatch sends msgs in order as separate messages, sharing system
// calls, and returns how many were written (in batching mode, accepted).
// Messages refused by the checks of Write are passed to OnWriteError and
// skipped; the others are written. The error is the first one met. Once
// the Retry policy has given up, WriteBatch fails every message at once with
// its error (see Err).
func (c *TCPConn) WriteBatch(msgs [][]byte) (int, error) {
	if err := c.terminal(); err != nil {
		for _, m := range msgs {
			c.failed(m, err)
		}
		return 0, err
	}
	var firstErr error
	valid := msgs
	for i, m := range msgs {
		if err := c.admit(m); err != nil {
			c.failed(m, err)
			if firstErr == nil {
				firstErr = err
			}
			if len(valid) == len(msgs) {
				valid = append([][]byte(nil), msgs[:i]...)
			}
			continue
		}
		if len(valid) != len(msgs) {
			valid = append(valid, m)
		}
	}
	if len(valid) == 0 {
		return 0, firstErr
	}
	n, err := c.eng.writeBatch(valid)
	if firstErr == nil {
		firstErr = err
	}
	return n, firstErr
}

// Flush waits for the messages accepted before it to be written or to
// fail; see the package documentation, Batching. In the default mode it
// sends what the kernel holds back under the cork, at once or, if a Write
// is under way, when it returns, and returns nil. Once the Retry policy has given up, Flush returns
// its error (see Err), after the messages still buffered have failed with
// it, which they do at once, without dialing.
func (c *TCPConn) Flush() error {
	err := c.eng.flush()
	if t := c.terminal(); t != nil {
		return t
	}
	return err
}

// writeEach writes msgs one at a time with write, for engines whose Write
// already shares system calls, and returns how many were written, with the
// first error met.
func writeEach(write func([]byte) error, msgs [][]byte) (int, error) {
	n := 0
	var first error
	for _, m := range msgs {
		if err := write(m); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	return n, first
}

// admit checks that msg can be sent at all.
func (c *TCPConn) admit(msg []byte) error {
	if len(msg) > c.wire.max {
		return tooLarge(uint64(len(msg)), c.wire.max)
	}
	return c.wire.framing.check(msg)
}

// failed counts a message that could not be written and passes it to
// OnWriteError.
func (c *TCPConn) failed(msg []byte, err error) {
	c.stats.msgsFailed.Add(1)
	if h := c.opts.onWriteError; h != nil {
		h(msg, err)
	}
}

// wrote counts messages whose frames reached the kernel whole.
func (c *TCPConn) wrote(msgs int, payload uint64) {
	c.stats.msgsOut.Add(uint64(msgs))
	c.stats.bytesOut.Add(payload)
}

// lockBehind takes mu, the lock of an engine's buffer, for a goroutine
// that is not a Write (a flusher, a pump, a reader of acknowledgements),
// without queueing on it. A goroutine blocked in Lock makes every Unlock of
// a busy writer wake it, and the contended lock's cache line then bounces
// between the two on every message; instead this tries the lock and yields
// between tries, and only blocks after many.
func lockBehind(mu *sync.Mutex) {
	for range 100 {
		if mu.TryLock() {
			return
		}
		runtime.Gosched()
	}
	mu.Lock()
}

// A span is where one frame lies in a run of frames: its payload starts at
// at and the frame ends at end. Engines record a span as they append each
// frame, so that what a partial write delivered is read from the spans,
// never by parsing the engine's own output.
type span struct{ at, end int }

// appendFrame appends the frame of msg to dst and records its span, with
// offsets from the start of dst.
func appendFrame(f Framing, dst []byte, spans []span, msg []byte) ([]byte, []span) {
	dst, at := frameTo(f, dst, msg)
	return dst, append(spans, span{at, len(dst)})
}

// frameTo appends the frame of msg to dst and returns it with the offset,
// in dst, at which the payload starts.
func frameTo(f Framing, dst []byte, msg []byte) ([]byte, int) {
	n := len(dst)
	dst = append(dst, make([]byte, maxHeaderLen)...)
	h := f.putHeader(dst[n:], len(msg))
	dst = append(dst[:n+h], msg...)
	return append(dst, f.trailer()...), n + h
}

// whole returns how many of the frames of spans end within the first n
// bytes of their stream.
func whole(spans []span, n int) int {
	return sort.Search(len(spans), func(i int) bool { return spans[i].end > n })
}

// A sender writes runs of frames to the connection's socket. It is used by
// one goroutine at a time: whichever owns the socket for writing.
type sender struct {
	c   *TCPConn
	hdr [maxHeaderLen]byte // the header of a large message
	iov [4][]byte
	vec net.Buffers

	// draining is set while Close writes what is buffered, and drainUntil
	// is the deadline of that final flush: it is written before draining
	// is set and read only after draining is seen set.
	draining   atomic.Bool
	drainUntil time.Time

	// cork, when set, corks the socket while frames stream (cork.go).
	cork *corker

	// The write deadline that bounds a stall where the kernel does not
	// (see boundedWrite), and the socket it was set on.
	guard   time.Time
	guardNC net.Conn
}

// transmit writes segs, in order, as one stream of frames, whose spans
// (relative to the start of the stream) are given; the last span ends the
// stream. It reconnects and carries on from the first frame not written
// whole as the Retry policy allows, and returns how many bytes of the
// stream reached the kernel as whole frames, with the error that stopped
// it, if any.
func (s *sender) transmit(segs [][]byte, spans []span) (int, error) {
	c := s.c
	total := spans[len(spans)-1].end
	off, attempts := 0, 0
	var began time.Time
	for {
		nc, err := s.socket()
		if err != nil {
			return off, err
		}
		n := 0
		if err = c.peerGone(nc, !s.draining.Load()); err == nil {
			n, err = s.writeTo(nc, segs, spans, off)
			if err == nil {
				return total, nil
			}
			if !s.draining.Load() {
				c.writeFailed(nc) // its error reports the peer's end, if that was it
			}
			err = c.writeError(nc, err)
		}
		if k := whole(spans, off+n); k > 0 {
			off = spans[k-1].end
		}
		err = c.fail(nc, err)
		r := c.opts.retry
		if r == nil || c.closed.Load() || s.draining.Load() {
			return off, err
		}
		if errors.Is(err, ErrPeerClosed) && (errors.Is(err, ErrWrongProtocol) || errors.Is(err, ErrPeerRefused) || permanent(err)) {
			// The peer answered in another protocol, or refused a dialer
			// without Acks: dialing again would lose a message on every
			// connection.
			return off, c.giveUp(fmt.Errorf("%w: the peer cannot take these messages: %w", ErrReconnectFailed, err))
		}
		attempts++
		if attempts == 1 {
			began = time.Now()
		}
		if attempts >= r.attempts || time.Since(began) > r.maxWait {
			return off, err
		}
	}
}

// socket returns the connection to write on, dialing again if a failure
// closed it. While Close drains the buffer, the connection is closed for
// everyone else, but the final flush writes on the socket Close has not
// closed yet.
func (s *sender) socket() (net.Conn, error) {
	nc, err := s.c.conn()
	if err == nil || !s.draining.Load() {
		return nc, err
	}
	if nc = s.c.current(); nc == nil {
		return nil, errClosed
	}
	return nc, nil
}

// writeTo writes the stream of segs, whose frames lie at spans, from byte
// off on, within the deadline of the final flush or WriteTimeout, and
// returns how many bytes of it it wrote. On a socket whose unacknowledged
// frames are counted it writes through the tally; where neither the kernel
// nor those deadlines bound a stall, through boundedWrite.
func (s *sender) writeTo(nc net.Conn, segs [][]byte, spans []span, off int) (int, error) {
	var until time.Time
	if s.draining.Load() {
		until = s.drainUntil
	} else if t := s.c.opts.writeTimeout; t > 0 {
		until = time.Now().Add(t)
	}
	if k := s.cork; k != nil {
		k.before(nc)
		defer k.after()
	}
	t := s.c.tallyOf(nc)
	if stall := s.c.opts.stall; stall > 0 && (t == nil || !t.kernel) && (until.IsZero() || time.Until(until) > stall) {
		return s.boundedWrite(nc, segs, off, until)
	}
	if t != nil && t.rc != nil {
		// Only a dialed socket may be written on its descriptor (see
		// tally), and Close's final flush goes through the poller: its
		// deadline may have passed already.
		return t.write(segs, spans, off, until, s.c.dialed && !s.draining.Load())
	}
	if !until.IsZero() {
		nc.SetWriteDeadline(until)
	}
	return s.writeSegs(nc, segs, off)
}

// writeSegs writes the stream of segs from byte off on, and returns how many
// bytes of it it wrote.
func (s *sender) writeSegs(nc net.Conn, segs [][]byte, off int) (int, error) {
	if len(segs) == 1 {
		return nc.Write(segs[0][off:])
	}
	s.vec = s.iov[:0]
	for _, b := range segs {
		if off >= len(b) {
			off -= len(b)
			continue
		}
		s.vec = append(s.vec, b[off:])
		off = 0
	}
	n, err := s.vec.WriteTo(nc)
	s.iov = [4][]byte{}
	return int(n), err
}
