package buffstreams

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the write side of a TCPConn: group commit in the default
// mode, the write buffer and its flusher in batching mode, and the
// accounting that passes every message that could not be written to
// OnWriteError exactly once.
//
// One goroutine at a time owns the socket for writing (w.owned). In the
// default mode it is a Write: the one that found nobody writing writes its
// own frame, and Writes that arrive meanwhile append their frames to
// w.pend and wait; when the owner is done it hands ownership to the first of
// them, which writes every frame gathered so far in one system call. In
// batching mode the owner is the flusher goroutine, or a Write of a large
// message.

// largeWrite is the payload size from which a message is written from the
// caller's slice, in a vectored write with its header, instead of being
// copied.
const largeWrite = 16 << 10

// drainTimeout bounds Close's final flush when WriteTimeout is zero.
const drainTimeout = 10 * time.Second

// keepBuffer is the capacity above which a write buffer that grew under a
// burst of concurrent Writes is dropped after use rather than kept.
const keepBuffer = 1 << 20

type writer struct {
	c      *TCPConn
	large  int          // payloads of this size or more are not copied
	active atomic.Int32 // default-mode Writes in progress

	mu      sync.Mutex
	cond    sync.Cond // signalled when ownership is released; L is &mu
	owned   bool      // a goroutine is writing; guarded by mu
	pend    []byte    // frames waiting to be written; guarded by mu
	npend   int       // messages in pend; guarded by mu
	pbytes  uint64    // payload bytes in pend; guarded by mu
	spare   []byte    // the buffer pend was swapped with; guarded by mu
	waiters []*waiter // default mode: Writes whose frames are in pend; guarded by mu
	spareW  []*waiter // guarded by mu

	// Batching mode, all guarded by mu.
	seq, done  uint64        // messages accepted; messages written or failed
	fails      uint64        // messages failed
	failErr    error         // the latest failure
	flushers   int           // Flush calls waiting
	running    bool          // the flusher goroutine exists
	kick       chan struct{} // wakes the flusher; capacity 1
	exited     chan struct{} // closed when the flusher returns
	draining   atomic.Bool   // Close is writing what is left
	drainUntil time.Time     // deadline of that final flush; set by beginDrain before draining, read after it

	// Owned by the goroutine that owns the socket.
	one  []byte
	hdr  [maxHeaderLen]byte
	segs [4][]byte
	iov  [4][]byte
	vec  net.Buffers
}

// A waiter is a Write, in the default mode, whose frames another goroutine
// writes.
type waiter struct {
	ch         chan bool // receives true to take over writing, false when done
	start, end int       // its frames in the batch
	sent       int       // bytes of its frames that reached the kernel whole
	err        error
	hdr        [maxHeaderLen]byte // scratch
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan bool, 1)} }}

func (w *writer) init(c *TCPConn) {
	w.c = c
	w.cond.L = &w.mu
	w.large = largeWrite
	if b := c.opts.bufSize; b > 0 {
		w.large = max(largeWrite, b/4)
		w.kick = make(chan struct{}, 1)
	}
}

// Write sends data as one message, adding the header. A message longer than
// MaxMessageSize is refused with ErrMessageTooLarge before anything is
// sent, and one the framing cannot carry (a delimiter inside a delimited
// message) with ErrDelimiterInPayload.
//
// In the default mode Write returns len(data) once the whole frame has been
// handed to the kernel. If the previous operation failed, it first dials
// again. On error it returns 0 and the message was not sent (or only part
// of it was, which the peer discards).
//
// In batching mode Write returns len(data) once the frame is in the write
// buffer (or, for a large message, written), and the data may be reused at
// once. A later failure to write it is reported to OnWriteError, and by
// Flush.
func (c *TCPConn) Write(data []byte) (int, error) {
	if err := c.admit(data); err != nil {
		c.w.failed(data, err)
		return 0, err
	}
	var err error
	if c.opts.bufSize > 0 {
		if len(data) >= c.w.large {
			err = c.w.writeLarge(data)
		} else {
			err = c.w.enqueue(data)
		}
		if err != nil {
			c.w.failed(data, err)
		}
	} else {
		sent, e := c.w.writeShared(data, nil)
		if sent == 0 {
			err = e
		}
	}
	if err != nil {
		return 0, err
	}
	return len(data), nil
}

// WriteBatch sends msgs in order as separate messages, sharing system
// calls, and returns how many were written (in batching mode, accepted).
// Messages refused by the checks of Write are passed to OnWriteError and
// skipped; the others are written. The error is the first one met.
func (c *TCPConn) WriteBatch(msgs [][]byte) (int, error) {
	var firstErr error
	note := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	valid := msgs
	for i, m := range msgs {
		if err := c.admit(m); err != nil {
			c.w.failed(m, err)
			note(err)
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
	if c.opts.bufSize == 0 {
		n, err := c.w.writeShared(nil, valid)
		if err != nil {
			note(err)
		}
		return n, firstErr
	}
	n := 0
	for _, m := range valid {
		var err error
		if len(m) >= c.w.large {
			err = c.w.writeLarge(m)
		} else {
			err = c.w.enqueue(m)
		}
		if err != nil {
			c.w.failed(m, err)
			note(err)
			continue
		}
		n++
	}
	return n, firstErr
}

// Flush waits until every message accepted before it in batching mode has
// been written to the kernel or failed. It returns nil if no message failed
// while it waited, and otherwise the latest failure (every failed message
// is also passed to OnWriteError). In the default mode it returns nil at
// once: Write has nothing buffered when it returns.
func (c *TCPConn) Flush() error {
	w := &c.w
	if c.opts.bufSize == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	target, fails := w.seq, w.fails
	w.flushers++
	w.wake()
	for w.done < target && (w.running || w.owned) {
		w.cond.Wait()
	}
	w.flushers--
	if w.fails != fails {
		return w.failErr
	}
	if w.done < target { // closed with messages left; cannot happen after drain
		return errClosed
	}
	return nil
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
func (w *writer) failed(msg []byte, err error) {
	w.c.stats.msgsFailed.Add(1)
	if h := w.c.opts.onWriteError; h != nil {
		h(msg, err)
	}
}

// frameLen returns the size of the frame of an n-byte payload, using
// scratch (maxHeaderLen bytes) to build its header.
func (w *writer) frameLen(n int, scratch []byte) int {
	f := w.c.wire.framing
	return f.putHeader(scratch, n) + n + len(f.trailer())
}

// appendFrame appends the frame of msg to dst.
func (w *writer) appendFrame(dst, msg []byte) []byte {
	f := w.c.wire.framing
	n := len(dst)
	dst = append(dst, make([]byte, maxHeaderLen)...)
	h := f.putHeader(dst[n:], len(msg))
	dst = append(dst[:n+h], msg...)
	return append(dst, f.trailer()...)
}

// writeShared writes msg, or the messages of batch, in the default mode,
// sharing the system call with concurrent Writes, and returns how many
// messages were written. Each message not written is counted and passed to
// OnWriteError.
func (w *writer) writeShared(msg []byte, batch [][]byte) (int, error) {
	others := w.active.Add(1) > 1
	defer w.active.Add(-1)
	w.mu.Lock()
	if w.c.closed.Load() {
		w.mu.Unlock()
		return w.settle(msg, batch, 0, errClosed), errClosed
	}
	if !w.owned && len(w.pend) == 0 && !others {
		// Nobody is writing: write at once, from the caller's slice if
		// the message is large.
		w.owned = true
		w.mu.Unlock()
		var sent int
		var err error
		switch {
		case batch == nil && len(msg) >= w.large:
			f := w.c.wire.framing
			h := f.putHeader(w.hdr[:], len(msg))
			w.segs = [4][]byte{w.hdr[:h], msg, f.trailer()}
			sent, err = w.transmit(w.segs[:3], 0)
			w.segs = [4][]byte{}
		default:
			b := w.one[:0]
			if batch == nil {
				b = w.appendFrame(b, msg)
			}
			for _, m := range batch {
				b = w.appendFrame(b, m)
			}
			w.segs[0] = b
			sent, err = w.transmit(w.segs[:1], len(b))
			w.segs[0] = nil
			if cap(b) <= keepBuffer {
				w.one = b[:0]
			}
		}
		w.mu.Lock()
		w.release()
		w.mu.Unlock()
		return w.settle(msg, batch, sent, err), err
	}
	// Someone is writing: add the frames to the next batch and wait.
	x := waiterPool.Get().(*waiter)
	x.start = len(w.pend)
	if batch == nil {
		w.pend = w.appendFrame(w.pend, msg)
	}
	for _, m := range batch {
		w.pend = w.appendFrame(w.pend, m)
	}
	x.end = len(w.pend)
	w.waiters = append(w.waiters, x)
	lead := !w.owned
	w.owned = true
	w.mu.Unlock()
	if lead {
		// Other Writes are under way but not running (there may be
		// fewer processors than writers): let them add their frames
		// before writing, or each system call carries one frame.
		runtime.Gosched()
	}
	if lead || <-x.ch {
		w.lead(x)
	}
	sent, err := x.sent, x.err
	x.err = nil
	waiterPool.Put(x)
	return w.settle(msg, batch, sent, err), err
}

// lead writes every frame gathered in pend, as the owner, and tells each
// waiter (self included, without a message) what became of its frames.
func (w *writer) lead(self *waiter) {
	w.mu.Lock()
	out, ws := w.pend, w.waiters
	w.pend, w.waiters = w.spare[:0], w.spareW[:0]
	w.mu.Unlock()
	w.segs[0] = out
	sent, err := w.transmit(w.segs[:1], len(out))
	w.segs[0] = nil
	for _, x := range ws {
		x.sent = min(max(sent-x.start, 0), x.end-x.start)
		x.err = err
		if x.sent == x.end-x.start {
			x.err = nil // its frames went out before the failure
		}
		if x != self {
			x.ch <- false
		}
	}
	clear(ws)
	w.mu.Lock()
	if cap(out) <= keepBuffer {
		w.spare = out[:0]
	} else {
		w.spare = nil
	}
	w.spareW = ws[:0]
	w.release()
	w.mu.Unlock()
}

// release ends the caller's ownership of the socket: in the default mode it
// hands it to the first waiting Write, if any. w.mu is held.
func (w *writer) release() {
	if len(w.waiters) > 0 {
		w.waiters[0].ch <- true
		return
	}
	w.owned = false
	w.cond.Broadcast()
	if len(w.pend) > 0 {
		w.wake()
	}
}

// settle accounts for the messages of one default-mode Write or WriteBatch,
// of which the first sent bytes of frames reached the kernel, and returns
// how many were written.
func (w *writer) settle(msg []byte, batch [][]byte, sent int, err error) int {
	st := &w.c.stats
	if batch == nil {
		if err != nil {
			w.failed(msg, err)
			return 0
		}
		st.msgsOut.Add(1)
		st.bytesOut.Add(uint64(len(msg)))
		return 1
	}
	if err == nil {
		var nb uint64
		for _, m := range batch {
			nb += uint64(len(m))
		}
		st.msgsOut.Add(uint64(len(batch)))
		st.bytesOut.Add(nb)
		return len(batch)
	}
	x := waiterPool.Get().(*waiter) // for its scratch header
	defer waiterPool.Put(x)
	ok := 0
	for _, m := range batch {
		if n := w.frameLen(len(m), x.hdr[:]); sent >= n {
			sent -= n
			ok++
			st.msgsOut.Add(1)
			st.bytesOut.Add(uint64(len(m)))
			continue
		}
		sent = 0
		w.failed(m, err)
	}
	return ok
}

// enqueue copies the frame of msg into the write buffer (batching mode),
// applying the SlowConsumer policy when it is full.
func (w *writer) enqueue(msg []byte) error {
	c := w.c
	size := maxHeaderLen + len(msg) + len(c.wire.framing.trailer()) // at most the frame's size
	w.mu.Lock()
	var deadline time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if c.closed.Load() {
			w.mu.Unlock()
			return errClosed
		}
		if len(w.pend) == 0 || len(w.pend)+size <= c.opts.bufSize {
			break
		}
		if !w.owned {
			// Full, and nobody is writing: write it now from this
			// goroutine, as bufio does, rather than wait for the
			// flusher to be scheduled. Under the other policies Write
			// must not block on the socket, so the flusher does it.
			if c.opts.slow == SlowConsumerBlock {
				w.writePending()
			} else {
				w.wake()
				w.cond.Wait()
			}
			continue
		}
		switch c.opts.slow {
		case SlowConsumerError:
			w.mu.Unlock()
			return fmt.Errorf("%w: %d bytes buffered", ErrSlowConsumer, c.opts.bufSize)
		case SlowConsumerClose:
			out, n := w.pend, w.npend
			w.pend, w.npend, w.pbytes = nil, 0, 0
			w.mu.Unlock()
			c.mu.Lock()
			nc := c.nc
			c.mu.Unlock()
			if nc != nil {
				c.fail(nc, ErrSlowConsumer)
			}
			err := fmt.Errorf("%w: closed the connection with %d messages buffered", ErrSlowConsumer, n)
			w.settleFrames(out, 0, n, 0, err)
			w.mu.Lock()
			w.done += uint64(n)
			w.noteFailure(n, err)
			w.mu.Unlock()
			return err
		}
		if t := c.opts.writeTimeout; t > 0 {
			if deadline.IsZero() {
				deadline = time.Now().Add(t)
				timer = time.AfterFunc(t, func() {
					w.mu.Lock()
					w.cond.Broadcast()
					w.mu.Unlock()
				})
			} else if !time.Now().Before(deadline) {
				w.mu.Unlock()
				return fmt.Errorf("%w: write buffer still full after %v: %w", ErrWriteTimeout, t, os.ErrDeadlineExceeded)
			}
		}
		w.cond.Wait()
	}
	wasEmpty := len(w.pend) == 0
	if w.pend == nil {
		w.pend = make([]byte, 0, c.opts.bufSize)
	}
	w.pend = w.appendFrame(w.pend, msg)
	w.npend++
	w.pbytes += uint64(len(msg))
	w.seq++
	if wasEmpty || len(w.pend) >= c.opts.bufSize/2 {
		w.wake()
	}
	w.mu.Unlock()
	return nil
}

// wake starts the flusher, or wakes it if it is waiting. w.mu is held.
func (w *writer) wake() {
	if w.kick == nil {
		return
	}
	if !w.running {
		if w.c.closed.Load() && !w.draining.Load() {
			return
		}
		w.running = true
		w.exited = make(chan struct{})
		go w.flush()
		return
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// flush is the flusher goroutine of batching mode. It writes the buffer
// whenever it holds frames and nobody else is writing, and returns once the
// connection is closed and everything is written.
func (w *writer) flush() {
	c := w.c
	var linger *time.Timer
	lingered := false // the buffer now pending has had its wait
	w.mu.Lock()
	defer func() {
		w.running = false
		close(w.exited)
		w.cond.Broadcast()
		w.mu.Unlock()
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		if len(w.pend) == 0 || w.owned {
			if c.closed.Load() && !w.owned {
				return
			}
			w.mu.Unlock()
			<-w.kick
			w.mu.Lock()
			continue
		}
		if fi := c.opts.flushInterval; fi > 0 && !lingered && len(w.pend) < c.opts.bufSize/2 && w.flushers == 0 && !c.closed.Load() {
			lingered = true
			if linger == nil {
				linger = time.NewTimer(fi)
			} else {
				linger.Reset(fi)
			}
			w.mu.Unlock()
			select {
			case <-linger.C:
			case <-w.kick:
				linger.Stop()
			}
			w.mu.Lock()
			if len(w.pend) == 0 || w.owned {
				continue
			}
		}
		lingered = false
		w.writePending()
	}
}

// writePending writes the frames in pend as the owner of the socket. w.mu
// is held, and released during the write.
func (w *writer) writePending() {
	w.owned = true
	out, n, nb := w.pend, w.npend, w.pbytes
	w.pend, w.npend, w.pbytes = w.spare[:0], 0, 0
	w.cond.Broadcast() // there is room again
	w.mu.Unlock()
	w.segs[0] = out
	sent, err := w.transmit(w.segs[:1], len(out))
	w.segs[0] = nil
	w.settleFrames(out, sent, n, nb, err)
	w.mu.Lock()
	w.spare = out[:0]
	w.done += uint64(n)
	if sent < len(out) {
		w.noteFailure(n, err)
	}
	w.owned = false
	w.cond.Broadcast()
}

// noteFailure records a failure for Flush. w.mu is held.
func (w *writer) noteFailure(n int, err error) {
	w.fails += uint64(n)
	w.failErr = err
}

// settleFrames accounts for the n messages, nb payload bytes in all, framed
// in out, of which the first sent bytes reached the kernel whole: they are
// counted as written, and the others passed to OnWriteError with err.
func (w *writer) settleFrames(out []byte, sent, n int, nb uint64, err error) {
	c := w.c
	if sent >= len(out) {
		c.stats.msgsOut.Add(uint64(n))
		c.stats.bytesOut.Add(nb)
		return
	}
	for pos := 0; pos < len(out); {
		start, m, size, _ := c.wire.framing.split(out[pos:], c.wire.max)
		p := out[pos+start : pos+start+m]
		if pos+size <= sent {
			c.stats.msgsOut.Add(1)
			c.stats.bytesOut.Add(uint64(m))
		} else {
			w.failed(p, err)
		}
		pos += size
	}
}

// writeLarge writes a large message in batching mode from the caller's
// slice, after everything buffered before it.
func (w *writer) writeLarge(msg []byte) error {
	c := w.c
	w.mu.Lock()
	for w.owned && !c.closed.Load() {
		w.cond.Wait()
	}
	if c.closed.Load() {
		w.mu.Unlock()
		return errClosed
	}
	w.owned = true
	out, n, nb := w.pend, w.npend, w.pbytes
	w.pend, w.npend, w.pbytes = w.spare[:0], 0, 0
	w.seq++
	w.mu.Unlock()

	f := c.wire.framing
	h := f.putHeader(w.hdr[:], len(msg))
	w.segs = [4][]byte{out, w.hdr[:h], msg, f.trailer()}
	sent, err := w.transmit(w.segs[:], len(out))
	w.segs = [4][]byte{}
	w.settleFrames(out, sent, n, nb, err)
	total := len(out) + h + len(msg) + len(f.trailer())

	w.mu.Lock()
	w.spare = out[:0]
	w.done += uint64(n) + 1
	if sent < total {
		w.noteFailure(n+1, err)
	}
	w.release()
	w.mu.Unlock()
	if sent < total {
		return err
	}
	c.stats.msgsOut.Add(1)
	c.stats.bytesOut.Add(uint64(len(msg)))
	return nil
}

// beginDrain fixes the deadline of Close's final flush and then marks the
// writer as draining, in that order: writeTo reads drainUntil, without a
// lock, once it sees draining. Close calls it before it sets c.closed, so
// that a write that finds the connection closed also finds it draining.
// Nothing reads drainUntil now: drain waited for every writer of the
// previous Close.
func (w *writer) beginDrain() {
	t := w.c.opts.writeTimeout
	if t == 0 {
		t = drainTimeout
	}
	w.drainUntil = time.Now().Add(t)
	w.draining.Store(true)
}

// drain writes what is buffered before Close closes the socket, and waits
// for the flusher to return. beginDrain was called and c.closed is set.
func (w *writer) drain() {
	c := w.c
	if c.opts.bufSize == 0 {
		return
	}
	w.mu.Lock()
	c.mu.Lock()
	if c.nc != nil {
		c.nc.SetWriteDeadline(w.drainUntil)
	}
	c.mu.Unlock()
	w.cond.Broadcast() // blocked Writes see that the connection is closed
	if len(w.pend) > 0 {
		w.wake()
	}
	for w.running || w.owned {
		w.wake()
		w.cond.Wait()
	}
	w.draining.Store(false)
	w.mu.Unlock()
}

// reopened lets the flusher write what is buffered on the new connection.
func (w *writer) reopened() {
	w.mu.Lock()
	if len(w.pend) > 0 {
		w.wake()
	}
	w.mu.Unlock()
}

// transmit writes segs, in order, as one stream of frames: segs[0][:whole]
// holds whole frames and the rest of the stream is one frame. It reconnects
// and carries on from the first frame not written whole as the Retry policy
// allows, and returns how many bytes of the stream reached the kernel as
// whole frames, with the error that stopped it, if any. The caller owns the
// socket.
func (w *writer) transmit(segs [][]byte, whole int) (int, error) {
	c := w.c
	total := 0
	for _, s := range segs {
		total += len(s)
	}
	off, attempts := 0, 0
	var began time.Time
	for {
		nc, err := w.socket()
		if err != nil {
			return off, err
		}
		n, err := w.writeTo(nc, segs, off)
		if err == nil {
			return total, nil
		}
		off = w.boundary(segs, whole, total, off+n)
		err = c.fail(nc, wrapWrite(err))
		r := c.opts.retry
		if r == nil || c.closed.Load() || w.draining.Load() {
			return off, err
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
func (w *writer) socket() (net.Conn, error) {
	nc, err := w.c.conn()
	if err == nil || !w.draining.Load() {
		return nc, err
	}
	if nc = w.c.current(); nc == nil {
		return nil, errClosed
	}
	return nc, nil
}

// writeTo writes the stream of segs from byte off on, and returns how many
// bytes of it it wrote.
func (w *writer) writeTo(nc net.Conn, segs [][]byte, off int) (int, error) {
	c := w.c
	if w.draining.Load() {
		nc.SetWriteDeadline(w.drainUntil)
	} else if t := c.opts.writeTimeout; t > 0 {
		nc.SetWriteDeadline(time.Now().Add(t))
	}
	if len(segs) == 1 {
		return nc.Write(segs[0][off:])
	}
	w.vec = w.iov[:0]
	for _, s := range segs {
		if off >= len(s) {
			off -= len(s)
			continue
		}
		w.vec = append(w.vec, s[off:])
		off = 0
	}
	n, err := w.vec.WriteTo(nc)
	w.iov = [4][]byte{}
	return int(n), err
}

// boundary returns the end of the last whole frame within the first n bytes
// of the stream of segs (see transmit).
func (w *writer) boundary(segs [][]byte, whole, total, n int) int {
	if n >= total {
		return total
	}
	if n >= whole {
		return whole
	}
	f, max := w.c.wire.framing, w.c.wire.max
	b := segs[0][:whole]
	pos := 0
	for pos < n {
		_, _, size, err := f.split(b[pos:], max)
		if err != nil || size == 0 || pos+size > n {
			break
		}
		pos += size
	}
	return pos
}

// wrapWrite names a write error, marking timeouts with ErrWriteTimeout.
func wrapWrite(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrWriteTimeout, err)
	}
	return fmt.Errorf("buffstreams: write: %w", err)
}
