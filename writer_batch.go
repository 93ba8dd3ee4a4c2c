package buffstreams

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"
)

// batchEngine is the write engine of batching mode (WriteBufferSize > 0):
// Write copies the frame into buf and returns, and a flusher goroutine
// writes buf, many frames per system call. What Write, Flush and Close
// promise in this mode is stated in the package documentation, Batching.
//
// One goroutine at a time owns the socket for writing: the flusher, a
// Write of a large message (which writes what is buffered and then its own
// frame from the caller's slice), or, under SlowConsumerBlock, a Write that
// found the buffer full and nobody writing (it writes the buffer itself, as
// bufio does, rather than wait for the flusher to be scheduled). The owner
// takes buf and its spans whole, swapping in the spare pair, and writes
// them without holding mu.
//
// Lock order: TCPConn.dmu, then TCPConn.mu, then mu. mu is the innermost
// lock: no other is taken while it is held, and it is never held during a
// system call, nor while OnWriteError runs.
type batchEngine struct {
	c     *TCPConn
	size  int           // WriteBufferSize
	large int           // payloads of this size or more are not copied
	tlen  int           // length of the framing's trailer
	kick  chan struct{} // wakes the flusher; capacity 1

	mu     sync.Mutex
	cond   sync.Cond // signalled when buf is taken or the socket released; L is &mu
	owned  bool      // a goroutine owns the socket for writing; guarded by mu
	buf    []byte    // frames accepted and not yet taken; guarded by mu
	spans  []span    // where each frame of buf lies; guarded by mu
	nbytes uint64    // payload bytes in buf; guarded by mu
	spareB []byte    // buf's other buffer; guarded by mu
	spareS []span    // guarded by mu

	accepted uint64 // messages accepted since the start; guarded by mu
	settled  uint64 // of those, messages written or failed; guarded by mu
	failures uint64 // of those, messages failed; guarded by mu
	lastErr  error  // the latest failure; guarded by mu
	flushers int    // Flush calls waiting; guarded by mu
	running  bool   // the flusher goroutine exists; guarded by mu
	pausing  bool   // the flusher waits out a busyPause, which no Write ends; guarded by mu
	since    int64  // when the first frame of buf was added (see now); guarded by mu

	tx   sender // used by the owner of the socket
	segs [4][]byte
}

func newBatchEngine(c *TCPConn) *batchEngine {
	e := &batchEngine{
		c:     c,
		size:  c.opts.bufSize,
		large: max(largeWrite, c.opts.bufSize/4),
		tlen:  len(c.wire.framing.trailer()),
		kick:  make(chan struct{}, 1),
	}
	e.cond.L = &e.mu
	e.tx.c = c
	return e
}

func (e *batchEngine) write(msg []byte) error {
	var err error
	if len(msg) >= e.large {
		err = e.writeLarge(msg)
	} else {
		err = e.enqueue(msg)
	}
	if err != nil {
		e.c.failed(msg, err)
	}
	return err
}

func (e *batchEngine) writeBatch(msgs [][]byte) (int, error) { return writeEach(e.write, msgs) }

func (e *batchEngine) flush() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	target, failures := e.accepted, e.failures
	e.flushers++
	e.wake()
	for e.settled < target && (e.running || e.owned) {
		e.cond.Wait()
	}
	e.flushers--
	if e.failures != failures {
		return e.lastErr
	}
	if e.settled < target { // closed with messages left; cannot happen after drain
		return errClosed
	}
	return nil
}

// enqueue copies the frame of msg into buf, applying the SlowConsumer
// policy when it is full.
func (e *batchEngine) enqueue(msg []byte) error {
	c := e.c
	e.mu.Lock()
	n := len(e.buf)
	if n == 0 || n+maxHeaderLen+len(msg)+e.tlen > e.size || c.closed.Load() {
		if err := e.makeRoom(len(msg)); err != nil {
			return err // makeRoom unlocked e.mu
		}
		n = len(e.buf)
		if n == 0 && c.opts.slow == SlowConsumerBlock {
			e.since = now() // one clock reading per buffer
		}
	}
	if n+maxHeaderLen+len(msg)+e.tlen <= cap(e.buf) {
		// The frame fits: write it in place, without growing buf.
		f := c.wire.framing
		b := e.buf[:n+maxHeaderLen]
		h := f.putHeader(b[n:], len(msg))
		b = append(b[:n+h], msg...)
		if e.tlen > 0 {
			b = append(b, f.trailer()...)
		}
		e.buf = b
		e.spans = append(e.spans, span{n + h, len(b)})
	} else {
		e.buf, e.spans = appendFrame(c.wire.framing, e.buf, e.spans, msg)
	}
	e.nbytes += uint64(len(msg))
	e.accepted++
	if !e.owned && (n == 0 && !e.pausing || len(e.buf) >= e.size/2 && c.opts.slow != SlowConsumerBlock) {
		// The owner, if any, looks at buf again when it is done; a
		// flusher in a busyPause writes buf when the pause ends.
		e.wake()
	}
	e.mu.Unlock()
	return nil
}

// makeRoom waits, as the SlowConsumer policy says, until buf has room for
// the frame of an n-byte payload, or is empty. e.mu is held; on error it
// is released.
func (e *batchEngine) makeRoom(n int) error {
	c := e.c
	room := maxHeaderLen + n + e.tlen // at least the frame's size
	var deadline time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(e.buf) > 0 && len(e.buf)+room > e.size {
		if c.closed.Load() {
			break
		}
		if err := c.terminal(); err != nil {
			// The Retry policy gave up while this Write waited: what is
			// buffered fails at once, and so does the message.
			e.mu.Unlock()
			return err
		}
		if !e.owned {
			// Full, and nobody is writing. Under the other policies
			// Write must not block on the socket, so the flusher does it.
			if c.opts.slow == SlowConsumerBlock {
				e.writeBuffered()
			} else {
				e.wake()
				e.cond.Wait()
			}
			continue
		}
		switch c.opts.slow {
		case SlowConsumerError:
			e.mu.Unlock()
			return fmt.Errorf("%w: %d bytes buffered", ErrSlowConsumer, e.size)
		case SlowConsumerClose:
			return e.abandonBuffer() // unlocks e.mu
		}
		if t := c.opts.writeTimeout; t > 0 {
			if deadline.IsZero() {
				deadline = time.Now().Add(t)
				timer = time.AfterFunc(t, func() {
					e.mu.Lock()
					e.cond.Broadcast()
					e.mu.Unlock()
				})
			} else if !time.Now().Before(deadline) {
				e.mu.Unlock()
				return fmt.Errorf("%w: write buffer still full after %v: %w", ErrWriteTimeout, t, os.ErrDeadlineExceeded)
			}
		}
		e.cond.Wait()
	}
	if c.closed.Load() {
		e.mu.Unlock()
		return errClosed
	}
	if e.buf == nil {
		e.buf = make([]byte, 0, e.size)
	}
	return nil
}

// abandonBuffer applies SlowConsumerClose: it closes the socket and fails
// every buffered message. e.mu is held, and released.
func (e *batchEngine) abandonBuffer() error {
	c := e.c
	out, spans := e.buf, e.spans
	n := len(spans)
	e.buf, e.spans, e.nbytes = nil, nil, 0
	e.mu.Unlock()
	if nc := c.current(); nc != nil {
		c.fail(nc, ErrSlowConsumer)
	}
	err := fmt.Errorf("%w: closed the connection with %d messages buffered", ErrSlowConsumer, n)
	e.accountCut(out, spans, 0, err)
	e.mu.Lock()
	e.settled += uint64(n)
	e.noteFailure(n, err)
	e.mu.Unlock()
	return err
}

// wake starts the flusher, or wakes it if it is waiting. e.mu is held.
func (e *batchEngine) wake() {
	if !e.running {
		if e.c.closed.Load() && !e.tx.draining.Load() {
			return
		}
		e.running = true
		go e.flusher()
		return
	}
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// flusher is the flusher goroutine. It writes buf whenever it holds frames
// and nobody else is writing, lingering up to FlushInterval first for more
// frames, and returns once the connection is closed and everything is
// written.
func (e *batchEngine) flusher() {
	c := e.c
	var linger *time.Timer
	lingered := false // the frames now in buf have had their wait
	e.mu.Lock()
	defer func() {
		e.running = false
		e.cond.Broadcast()
		e.mu.Unlock()
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		if len(e.buf) == 0 || e.owned {
			if c.closed.Load() && !e.owned {
				return
			}
			lingered = false
			e.mu.Unlock()
			<-e.kick
			e.lockBehindWriters()
			continue
		}
		var wait time.Duration
		busy := false // the wait is a busyPause
		switch fi := c.opts.flushInterval; {
		case e.flushers > 0 || c.closed.Load():
		case fi > 0:
			if !lingered && len(e.buf) < e.size/2 {
				wait = fi
			}
		case c.opts.slow != SlowConsumerBlock:
		case lingered:
			// A pause is over. If the writers wrote the buffer
			// meanwhile, the frames now in it are younger: they
			// get the rest of their own pause.
			if age := time.Duration(now() - e.since); age < busyPause {
				wait, busy = busyPause-age, true
			}
		case e.writersBusy():
			// Writers are adding frames: they write the buffer
			// themselves when it fills. Write what is left of it
			// once its first frame has waited busyPause.
			wait, busy = busyPause-time.Duration(now()-e.since), true
		}
		if e.owned || len(e.buf) == 0 { // writersBusy let go of e.mu
			continue
		}
		if wait > 0 {
			lingered = true
			if linger == nil {
				linger = time.NewTimer(wait)
			} else {
				linger.Reset(wait)
			}
			e.pausing = busy
			e.mu.Unlock()
			e.waitLinger(linger, busy)
			e.lockBehindWriters()
			e.pausing = false
			continue
		}
		lingered = false
		e.writeBuffered()
	}
}

// waitLinger waits for t to fire. A FlushInterval's wait also ends when the
// flusher is kicked; a busyPause only when Flush or Close is waiting, not
// when the writers' next frame starts a buffer they emptied.
func (e *batchEngine) waitLinger(t *time.Timer, busy bool) {
	for {
		select {
		case <-t.C:
			return
		case <-e.kick:
		}
		if busy {
			e.mu.Lock()
			busy = e.flushers == 0 && !e.c.closed.Load()
			e.mu.Unlock()
		}
		if !busy {
			t.Stop()
			return
		}
	}
}

// busyPause is how long the flusher leaves the buffer to writers that are
// still adding frames to it before it writes it, when FlushInterval is zero
// and writers write a full buffer themselves (SlowConsumerBlock): the
// longest a message waits in the buffer while Writes keep coming, counted
// from the buffer's first frame, so that while the writers fill and write
// buffers themselves the flusher only looks at the clock.
const busyPause = 50 * time.Microsecond

// writersBusy reports whether Writes added frames to the buffer while the
// flusher yielded its processor once. A lone message finds them idle and
// is written at once. e.mu is held, and released while yielding.
func (e *batchEngine) writersBusy() bool {
	seen := e.accepted
	e.mu.Unlock()
	runtime.Gosched()
	e.lockBehindWriters()
	return e.accepted != seen
}

// lockBehindWriters takes e.mu for the flusher, or for a goroutine that
// wrote the buffer, without queueing on it (see lockBehind).
func (e *batchEngine) lockBehindWriters() { lockBehind(&e.mu) }

// takeBuffer makes the caller the owner of the socket and hands it buf,
// its spans and its payload bytes, leaving the spare pair in their place.
// e.mu is held.
func (e *batchEngine) takeBuffer() ([]byte, []span, uint64) {
	e.owned = true
	out, spans, nb := e.buf, e.spans, e.nbytes
	e.buf, e.spans, e.nbytes = e.spareB[:0], e.spareS[:0], 0
	e.cond.Broadcast() // there is room again
	return out, spans, nb
}

// give ends the caller's ownership after it wrote n messages taken from
// buf (plus any of its own), of which the failed ones had err, and keeps
// out and spans as the spare pair. e.mu is held.
func (e *batchEngine) give(out []byte, spans []span, n, failed int, err error) {
	e.spareB, e.spareS = out[:0], spans[:0]
	e.settled += uint64(n)
	if failed > 0 {
		e.noteFailure(failed, err)
	}
	e.owned = false
	e.cond.Broadcast()
	if len(e.buf) > 0 {
		e.wake()
	}
}

// writeBuffered writes the frames in buf as the owner of the socket. e.mu
// is held, and released during the write.
func (e *batchEngine) writeBuffered() {
	out, spans, nb := e.takeBuffer()
	e.mu.Unlock()
	e.segs[0] = out
	sent, err := e.tx.transmit(e.segs[:1], spans)
	e.segs[0] = nil
	failed := e.accountRun(out, spans, nb, sent, err)
	e.lockBehindWriters()
	e.give(out, spans, len(spans), failed, err)
}

// own waits until nobody owns the socket, then makes the caller its owner,
// with buf, its spans and its payload bytes, and counts n messages of the
// caller's own as accepted. It reports false if the connection is closed
// first.
func (e *batchEngine) own(n int) ([]byte, []span, uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.owned && !e.c.closed.Load() {
		e.cond.Wait()
	}
	if e.c.closed.Load() {
		return nil, nil, 0, false
	}
	out, spans, nb := e.takeBuffer()
	e.accepted += uint64(n)
	return out, spans, nb, true
}

// writeLarge writes a large message from the caller's slice, after
// everything buffered before it.
func (e *batchEngine) writeLarge(msg []byte) error {
	c := e.c
	out, spans, nb, owner := e.own(1)
	if !owner {
		return errClosed
	}

	f := c.wire.framing
	h := f.putHeader(e.tx.hdr[:], len(msg))
	end := len(out) + h + len(msg) + len(f.trailer())
	all := append(spans, span{len(out) + h, end})
	e.segs = [4][]byte{out, e.tx.hdr[:h], msg, f.trailer()}
	sent, err := e.tx.transmit(e.segs[:], all)
	e.segs = [4][]byte{}
	failed := e.accountRun(out, spans, nb, sent, err)
	ok := sent >= end
	if !ok {
		failed++ // Write reports its own message
	}

	e.mu.Lock()
	e.give(out, all[:len(spans)], len(spans)+1, failed, err)
	e.mu.Unlock()
	if !ok {
		return err
	}
	c.wrote(1, uint64(len(msg)))
	return nil
}

// writeRun writes the frames of run from the caller's buffer, after
// everything buffered before them, as writeLarge writes a large message.
func (e *batchEngine) writeRun(run []byte, rspans []span) (int, error) {
	c := e.c
	out, spans, nb, ok := e.own(len(rspans))
	if !ok {
		accountFrames(c, run, rspans, 0, errClosed)
		return 0, errClosed
	}

	base := len(out)
	all := spans
	for _, s := range rspans {
		all = append(all, span{base + s.at, base + s.end})
	}
	e.segs = [4][]byte{out, run}
	sent, err := e.tx.transmit(e.segs[:2], all)
	e.segs = [4][]byte{}
	failed := e.accountRun(out, spans, nb, sent, err)
	k := whole(rspans, sent-base)
	accountFrames(c, run, rspans, k, err)
	failed += len(rspans) - k

	e.mu.Lock()
	e.give(out, all[:len(spans)], len(spans)+len(rspans), failed, err)
	e.mu.Unlock()
	if k < len(rspans) {
		return k, err
	}
	return k, nil
}

// accountRun accounts for the messages framed in out, of which the first
// sent bytes reached the kernel (sent is at a frame boundary, or beyond
// out), and returns how many failed.
func (e *batchEngine) accountRun(out []byte, spans []span, nb uint64, sent int, err error) int {
	if sent >= len(out) {
		e.c.wrote(len(spans), nb)
		return 0
	}
	return e.accountCut(out, spans, sent, err)
}

// accountCut counts the frames of spans that end within the first sent
// bytes of out as written, and passes the others to TCPConn.failed with err. It
// returns how many failed.
func (e *batchEngine) accountCut(out []byte, spans []span, sent int, err error) int {
	k := whole(spans, sent)
	accountFrames(e.c, out, spans, k, err)
	return len(spans) - k
}

// noteFailure records a failure for Flush. e.mu is held.
func (e *batchEngine) noteFailure(n int, err error) {
	e.failures += uint64(n)
	e.lastErr = err
}

// closing fixes the deadline of Close's final flush and then marks the
// sender as draining, in that order (see sender). Close calls it before it
// marks the connection closed, so that a write that finds the connection
// closed also finds it draining. Nothing reads drainUntil now: drain waited
// for every writer of the previous Close.
func (e *batchEngine) closing() {
	e.tx.drainUntil = time.Now().Add(drainWait(e.c.opts.writeTimeout))
	e.tx.draining.Store(true)
}

// drain writes what is buffered before Close closes the socket, and waits
// for the flusher to return.
func (e *batchEngine) drain() {
	nc := e.c.current() // before mu, which is innermost
	e.mu.Lock()
	if nc != nil {
		nc.SetWriteDeadline(e.tx.drainUntil)
	}
	e.cond.Broadcast() // blocked Writes see that the connection is closed
	if len(e.buf) > 0 {
		e.wake()
	}
	for e.running || e.owned {
		e.wake()
		e.cond.Wait()
	}
	e.tx.draining.Store(false)
	e.mu.Unlock()
}

func (e *batchEngine) reopening() {}

// reopened lets the flusher write what is buffered on the new connection.
func (e *batchEngine) reopened() {
	e.mu.Lock()
	if len(e.buf) > 0 {
		e.wake()
	}
	e.mu.Unlock()
}

func (e *batchEngine) attached(net.Conn) {}
