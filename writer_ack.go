package buffstreams

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ackEngine is the write engine of acknowledged delivery (TCPConnConfig.Acks
// set). Write appends the frame to a replay window, win, where it stays
// until the listener acknowledges it; the frames are numbered implicitly,
// the first of a session 1, and nothing is added to them on the wire. One
// goroutine at a time owns the socket for writing and writes whatever part
// of the window the current socket has not had: in batching mode the pump
// goroutine, in the default mode a Write (which then returns once the
// kernel has its frame), or the pump when no Write is there to do it.
//
// Each socket has a reader goroutine that reads the listener's records:
// acknowledgements trim the window, a goaway or a read error ends the
// socket, and the pump dials again and, after the hello, writes the window
// from the first message the listener has not delivered. A listener that
// sends no record, not even a heartbeat, for HeartbeatTimeout fails the
// reader's read with ErrPeerSilent, which ends the socket the same way.
//
// Lock order: TCPConn.dmu, then mu, then TCPConn.mu. mu is never held
// during a system call, nor while OnWriteError runs.
type ackEngine struct {
	c    *TCPConn
	o    *ackOptions
	id   SessionID
	wait bool // default mode: Write returns once the kernel has its frame
	tlen int  // length of the framing's trailer

	mu        sync.Mutex
	cond      sync.Cond         // signalled on every change below; L is &mu
	win       []byte            // frames; those of unsettled messages from head on; guarded by mu
	head      int               // bytes of win before the first unsettled frame; guarded by mu
	spans     []span            // spans[sk:] are the unsettled frames, in order; guarded by mu
	sk        int               // guarded by mu
	acked     uint64            // messages settled (acknowledged or failed), from the first; guarded by mu
	wrote     uint64            // the last message whose frame reached the kernel at least once; guarded by mu
	sent      int               // bytes of win the current socket has had; guarded by mu
	nc        net.Conn          // the socket the last hello was accepted on; nil when down; guarded by mu
	src       *recordSource     // what nc's reader reads from; guarded by mu
	gen       uint64            // counts sockets; guarded by mu
	owned     bool              // a goroutine is writing to nc or dialing; guarded by mu
	running   bool              // the pump goroutine exists; guarded by mu
	idle      bool              // the pump is waiting for work; guarded by mu
	stop      bool              // Close is done with the window, until Reopen: the pump returns; guarded by mu
	draining  bool              // Close waits for acknowledgements; guarded by mu
	until     time.Time         // when Close stops waiting; guarded by mu
	strikes   int               // sockets lost since the window last moved; guarded by mu
	lostErr   error             // why the last socket was lost; guarded by mu
	waiters   []*ackWait        // default-mode Writes waiting for their frame, in order; guarded by mu
	rejected  map[uint64]string // callback errors of unsettled messages; guarded by mu
	reporting int               // rejections being passed to OnWriteError; guarded by mu
	failures  uint64            // messages failed or rejected; guarded by mu
	lastErr   error             // the latest of those failures; guarded by mu
	spare     []byte            // the other buffer of win, for compacting while the socket is owned; guarded by mu
	spareBusy bool              // the owner is writing from spare; guarded by mu
	moved     int               // how far win's offsets moved since the owner took it; guarded by mu
	broken    bool              // a write on nc failed: its reader takes the last records, then drops it; guarded by mu
	sleepers  int               // goroutines in waitCond; guarded by mu
	pausing   bool              // the pump leaves the window to busy writers for busyPause; guarded by mu
	pauseEnd  *time.Timer       // ends a pause; made by the first
	flushAt   int               // batching mode with SlowConsumerBlock: unsent bytes from which a Write writes the window itself; 0 for never

	wg sync.WaitGroup // the pump and the readers
}

// An ackWait is a default-mode Write waiting until the kernel has its frame
// or it fails.
type ackWait struct {
	seq  uint64
	done bool
	err  error
}

var ackWaitPool = sync.Pool{New: func() any { return new(ackWait) }}

func newAckEngine(c *TCPConn) *ackEngine {
	e := &ackEngine{
		c:    c,
		o:    c.opts.ack,
		id:   newSessionID(),
		wait: c.opts.bufSize == 0,
		tlen: len(c.wire.framing.trailer()),
	}
	if c.opts.slow == SlowConsumerBlock {
		// Under the other policies a Write must not wait for the socket,
		// so the pump writes everything.
		e.flushAt = min(c.opts.bufSize, e.o.window/2)
	}
	e.cond.L = &e.mu
	return e
}

// last returns the sequence number of the last message written. e.mu is
// held.
func (e *ackEngine) last() uint64 { return e.acked + uint64(len(e.spans)-e.sk) }

// spanCost is what the window counts for the bookkeeping of one message,
// the size of a span.
const spanCost = 16

// held returns the bytes the window holds: the frames of the unsettled
// messages and their bookkeeping. e.mu is held.
func (e *ackEngine) held() int { return len(e.win) - e.head + spanCost*(len(e.spans)-e.sk) }

func (e *ackEngine) write(msg []byte) error {
	e.mu.Lock()
	seq, err := e.add(msg)
	if err != nil {
		return err // add unlocked e.mu and reported msg
	}
	if !e.wait {
		if e.flushAt > 0 && !e.owned && e.nc != nil && !e.broken && len(e.win)-e.sent >= e.flushAt {
			// A write buffer's worth is waiting: write it here, as bufio
			// does, while the frames are in this processor's cache,
			// rather than have the pump copy them from another.
			e.push()
		} else {
			e.kick()
		}
		e.mu.Unlock()
		return nil
	}
	return e.await(seq)
}

func (e *ackEngine) writeBatch(msgs [][]byte) (int, error) { return writeEach(e.write, msgs) }

// add appends the frame of msg to the window, applying the SlowConsumer
// policy when it is full, and returns its sequence number. e.mu is held;
// on error it is released and msg has been reported.
func (e *ackEngine) add(msg []byte) (uint64, error) {
	c := e.c
	need := maxHeaderLen + len(msg) + e.tlen + spanCost
	if h := e.held(); (h == 0 || h+need <= e.o.window) && !c.closed.Load() {
		return e.append(msg, need), nil
	}
	return e.addSlow(msg, need)
}

// append appends the frame of msg, for which the window has room, and
// returns its sequence number. e.mu is held.
func (e *ackEngine) append(msg []byte, need int) uint64 {
	if len(e.win)+need > cap(e.win) || len(e.spans) == cap(e.spans) {
		e.grow(need)
	}
	e.win, e.spans = appendFrame(e.c.wire.framing, e.win, e.spans, msg)
	return e.last()
}

// addSlow is add when the window is full or the connection closed.
func (e *ackEngine) addSlow(msg []byte, need int) (uint64, error) {
	c := e.c
	var deadline time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if c.closed.Load() {
			e.mu.Unlock()
			c.failed(msg, errClosed)
			return 0, errClosed
		}
		if e.held() == 0 || e.held()+need <= e.o.window {
			break
		}
		var err error
		switch c.opts.slow {
		case SlowConsumerError:
			err = fmt.Errorf("%w: %d bytes await acknowledgement", ErrSlowConsumer, e.held())
		case SlowConsumerClose:
			err = fmt.Errorf("%w: closed the connection with %d messages unacknowledged", ErrSlowConsumer, len(e.spans)-e.sk)
			nc := e.nc
			run := e.failAll(err)
			e.mu.Unlock()
			if nc != nil {
				c.fail(nc, err)
			}
			run.report(c)
			c.failed(msg, err)
			return 0, err
		default:
			if t := c.opts.writeTimeout; t > 0 {
				if deadline.IsZero() {
					deadline = time.Now().Add(t)
					timer = time.AfterFunc(t, e.broadcast)
				} else if !time.Now().Before(deadline) {
					err = fmt.Errorf("%w: replay window still full after %v: %w", ErrWriteTimeout, t, os.ErrDeadlineExceeded)
				}
			}
		}
		if err != nil {
			e.mu.Unlock()
			c.failed(msg, err)
			return 0, err
		}
		e.kick()
		e.waitCond()
	}
	return e.append(msg, need), nil
}

// await makes a default-mode Write wait until the kernel has the frame of
// message seq, writing it itself when nobody else is. e.mu is held, and
// released.
func (e *ackEngine) await(seq uint64) error {
	w := ackWaitPool.Get().(*ackWait)
	w.seq, w.done, w.err = seq, false, nil
	e.waiters = append(e.waiters, w)
	for !w.done {
		if !e.owned && !e.stop && e.work() {
			e.push()
			continue
		}
		e.waitCond()
	}
	err := w.err
	e.mu.Unlock()
	ackWaitPool.Put(w)
	return err
}

// kick wakes the pump, starting it if needed, when there is something for
// it to do. e.mu is held.
func (e *ackEngine) kick() {
	switch {
	case e.stop:
	case !e.running:
		e.running = true
		e.wg.Add(1)
		go e.pump()
	case e.idle:
		e.idle = false // one wake-up is enough
		e.cond.Broadcast()
	}
}

// waitCond waits for a change, counted in sleepers so that changes are
// broadcast only when someone waits for them. e.mu is held.
func (e *ackEngine) waitCond() {
	e.sleepers++
	e.cond.Wait()
	e.sleepers--
}

// signal wakes the goroutines waiting in waitCond, if any. e.mu is held.
func (e *ackEngine) signal() {
	if e.sleepers > 0 {
		e.cond.Broadcast()
	}
}

// broadcast wakes every goroutine waiting on cond, for timers and
// contexts.
func (e *ackEngine) broadcast() {
	e.mu.Lock()
	e.cond.Broadcast()
	e.mu.Unlock()
}

// work reports whether the window needs the socket's owner: frames the
// current socket has not had, or unsettled messages and no socket. e.mu is
// held.
func (e *ackEngine) work() bool {
	if e.nc == nil {
		return e.sk < len(e.spans)
	}
	return e.sent < len(e.win) && !e.broken
}

// pump writes the window whenever nobody else does, and dials again when
// the socket is lost with messages unsettled. It returns when Close is done.
func (e *ackEngine) pump() {
	defer e.wg.Done()
	e.mu.Lock()
	defer e.mu.Unlock()
	for !e.stop {
		if e.owned || !e.work() {
			e.idle = true
			e.cond.Wait()
			e.idle = false
			continue
		}
		if e.flushAt > 0 && e.nc != nil && e.sleepers == 0 && !e.draining && e.writersBusy() {
			e.pause()
			continue
		}
		e.push()
	}
	if e.pauseEnd != nil {
		e.pauseEnd.Stop()
	}
	e.running = false
	e.signal()
}

// relock takes e.mu again for the pump, or a reader of acknowledgements,
// that let go of it. In batching mode Writes hold it briefly for every
// message, and it is taken behind them without queueing (lockBehind); in
// the default mode each Write waits for the socket anyway, and a plain
// Lock measured no worse.
func (e *ackEngine) relock() {
	if e.wait {
		e.mu.Lock()
	} else {
		lockBehind(&e.mu)
	}
}

// writersBusy reports whether Writes added frames to the window while the
// pump yielded its processor once. e.mu is held, and released while
// yielding.
func (e *ackEngine) writersBusy() bool {
	seen := e.last()
	e.mu.Unlock()
	runtime.Gosched()
	lockBehind(&e.mu)
	return e.last() != seen
}

// pause leaves the window, for busyPause, to Writes that are adding frames
// to it in batching mode: the one that finds a write buffer's worth unsent
// writes it, and the pump writes what is left after the pause. A Flush, a
// Sync or Close ends the pause (hurry). e.mu is held, and released while
// waiting.
func (e *ackEngine) pause() {
	e.pausing = true
	if e.pauseEnd == nil {
		e.pauseEnd = time.AfterFunc(busyPause, e.endPause)
	} else {
		e.pauseEnd.Reset(busyPause)
	}
	for e.pausing && !e.stop {
		e.cond.Wait()
	}
	e.pausing = false
}

// endPause ends the pump's pause when its time is up.
func (e *ackEngine) endPause() {
	e.mu.Lock()
	e.hurry()
	e.mu.Unlock()
}

// hurry ends the pump's pause, if it is in one, for a goroutine that waits
// for the window to be written. e.mu is held.
func (e *ackEngine) hurry() {
	if e.pausing {
		e.pausing = false
		e.cond.Broadcast()
	}
}

// push, as the owner of the socket, writes what the socket has not had of
// the window, or dials again if there is no socket. e.mu is held, and
// released meanwhile.
func (e *ackEngine) push() {
	c := e.c
	if e.nc == nil {
		e.reconnect()
		return
	}
	nc, src, gen, from := e.nc, e.src, e.gen, e.sent
	b := e.win[from:]
	until := e.until
	e.owned = true
	e.moved = 0
	e.mu.Unlock()
	if !until.IsZero() {
		nc.SetWriteDeadline(until)
	} else if t := c.opts.writeTimeout; t > 0 {
		nc.SetWriteDeadline(time.Now().Add(t))
	}
	n, err := nc.Write(b)
	if err != nil {
		// Records the listener sent before the failure, a goaway say,
		// may still be unread: the socket is not closed but ends for
		// writing, and its reader takes what is left, within
		// ackDrainWait, before it drops the socket and a reconnect
		// resumes after what was acknowledged.
		c.log.Warn("buffstreams: connection failed", "err", c.writeError(nc, err))
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		src.drain(time.Now().Add(ackDrainWait))
	}
	e.relock()
	e.owned = false
	e.spareBusy = false
	if e.gen == gen {
		e.sent = max(from+n-e.moved, 0)
		e.written(e.sent)
		if err != nil {
			e.broken = true
		}
	}
	if e.head > len(e.win)/2 {
		e.compact()
	}
	e.released()
}

// released is called when the owner lets go of the socket: it wakes the
// Writes that wait and, if there is work left, the pump. e.mu is held.
func (e *ackEngine) released() {
	e.signal()
	if e.work() {
		e.kick()
	}
}

// reconnect dials again, as the owner, after the socket was lost; the
// hello's answer resumes the window (see connected). It fails every
// unsettled message when the dial fails, when Close is waiting, or when
// sockets keep failing without the window moving. e.mu is held, and
// released meanwhile.
func (e *ackEngine) reconnect() {
	c := e.c
	limit := 1
	if r := c.opts.retry; r != nil {
		limit = r.attempts
	}
	var err error
	switch {
	case e.draining || c.closed.Load():
		err = fmt.Errorf("buffstreams: the connection was lost before the listener acknowledged: %w", errClosed)
	case e.strikes > limit:
		err = fmt.Errorf("%w: %d connections lost without progress; the last: %w", ErrReconnectFailed, e.strikes, e.lostErr)
	default:
		e.owned = true
		e.mu.Unlock()
		var nc net.Conn
		nc, err = c.conn()
		e.mu.Lock()
		e.owned = false
		e.spareBusy = false
		if err == nil && e.nc == nil {
			// A socket without an accepted hello: drop it, so that the
			// next attempt dials.
			e.mu.Unlock()
			c.fail(nc, errNoSession)
			e.mu.Lock()
			e.strikes++
			e.lostErr = errNoSession
			e.released()
			return
		}
		if err == nil {
			e.released()
			return
		}
	}
	run := e.failAll(err)
	e.strikes = 0
	e.mu.Unlock()
	run.report(c)
	e.mu.Lock()
}

// lose forgets the socket nc, lost with err. e.mu is held.
func (e *ackEngine) lose(nc net.Conn, err error) {
	if e.nc != nc {
		return
	}
	e.nc = nil
	e.broken = false
	if !errors.Is(err, errGoaway) {
		e.strikes++
		e.lostErr = err
	}
	e.kick()
	e.signal()
}

// ackDrainWait bounds how long the reader of a socket whose write failed
// waits for the listener's last records.
const ackDrainWait = time.Second

// errNoSession drops a socket on which no hello was accepted.
var errNoSession = errors.New("buffstreams: the connection has no session")

// errGoaway ends a socket whose listener said goaway.
var errGoaway = errors.New("buffstreams: the listener is shutting down (goaway)")

// written records that the current socket has had the first end bytes of
// the window: the frames that end within them have reached the kernel.
// e.mu is held.
func (e *ackEngine) written(end int) {
	if e.wrote < e.acked {
		e.wrote = e.acked
	}
	i := e.sk + int(e.wrote-e.acked)
	var n int
	var nb uint64
	for ; i < len(e.spans) && e.spans[i].end <= end; i++ {
		n++
		nb += uint64(e.spans[i].end - e.tlen - e.spans[i].at)
	}
	if n == 0 {
		return
	}
	e.wrote += uint64(n)
	e.c.wrote(n, nb)
	e.resolve(e.wrote, nil)
}

// resolve ends the waits of the Writes of messages up to seq, with err.
// e.mu is held.
func (e *ackEngine) resolve(seq uint64, err error) {
	k := 0
	for k < len(e.waiters) && e.waiters[k].seq <= seq {
		e.waiters[k].done, e.waiters[k].err = true, err
		k++
	}
	if k > 0 {
		n := copy(e.waiters, e.waiters[k:])
		clear(e.waiters[n:])
		e.waiters = e.waiters[:n]
		e.signal()
	}
}

// settle records that the listener delivered every message up to seq:
// acknowledged, or rejected by its callback. It returns the rejected ones,
// to report without the lock. e.mu is held.
func (e *ackEngine) settle(seq uint64) (failedRun, error) {
	var run failedRun
	switch {
	case seq == e.acked:
		return run, nil
	case seq < e.acked:
		return run, fmt.Errorf("%w: acknowledgement of message %d after %d", ErrAckProtocol, seq, e.acked)
	case seq > e.last():
		return run, fmt.Errorf("%w: acknowledgement of message %d, but only %d were written", ErrAckProtocol, seq, e.last())
	}
	if e.wrote < seq {
		e.written(e.spans[e.sk+int(seq-e.acked)-1].end)
	}
	k := int(seq - e.acked)
	ok := uint64(k)
	if len(e.rejected) > 0 {
		for i := range k {
			s := e.acked + 1 + uint64(i)
			text, bad := e.rejected[s]
			if !bad {
				continue
			}
			delete(e.rejected, s)
			sp := e.spans[e.sk+i]
			run.msgs = append(run.msgs, append([]byte(nil), e.win[sp.at:sp.end-e.tlen]...))
			run.errs = append(run.errs, fmt.Errorf("%w: message %d: %s", ErrRejected, s, text))
			ok--
		}
		e.failures += uint64(len(run.msgs))
		if len(run.errs) > 0 {
			e.lastErr = run.errs[len(run.errs)-1]
		}
	}
	e.sk += k
	e.acked = seq
	e.head = e.spans[e.sk-1].end
	e.strikes = 0
	e.c.stats.acked.Add(ok)
	e.resolve(seq, nil)
	if e.sk == len(e.spans) && !e.owned {
		e.compact()
	}
	e.signal()
	return run, nil
}

// grow makes room in win for need more bytes: it compacts, and if that is
// not enough, reallocates, doubling but never beyond what the window's
// bound requires, so that a window that never drains holds no more memory
// than its bound and one frame. e.mu is held.
func (e *ackEngine) grow(need int) {
	if e.head > 0 {
		e.compact()
	}
	if len(e.spans) == cap(e.spans) {
		s := make([]span, len(e.spans), max(64, cap(e.spans)+cap(e.spans)/4))
		copy(s, e.spans)
		e.spans = s
	}
	if len(e.win)+need <= cap(e.win) {
		return
	}
	// The frames may take what the bookkeeping leaves of the bound. Beyond
	// that (frames already settled but not yet compacted away, while the
	// socket is written), grow by a quarter at least, so that appending
	// stays cheap.
	limit := e.o.window - spanCost*(len(e.spans)-e.sk) + maxHeaderLen
	n := min(max(2*cap(e.win), 4096), limit)
	if n < len(e.win)+need {
		n = max(len(e.win)+need, cap(e.win)+cap(e.win)/4)
	}
	w := make([]byte, len(e.win), n)
	copy(w, e.win)
	e.win = w
	e.spare = nil // too small now; the next compaction makes one of this size
}

// compact moves the unsettled frames to the front of the window. e.mu is
// held, and nobody owns the socket (its write may be reading win).
func (e *ackEngine) compact() {
	h := e.head
	if h == 0 {
		return
	}
	if e.owned {
		// The owner may be writing from win: move the frames to the
		// spare buffer instead, unless the owner's buffer is the spare.
		if e.spareBusy {
			return
		}
		if cap(e.spare) < cap(e.win) {
			e.spare = make([]byte, 0, cap(e.win)) // the two buffers keep the same size
		}
		dst := append(e.spare[:0], e.win[h:]...)
		e.spare, e.win = e.win[:0], dst
		e.spareBusy = true
		e.moved += h
	} else {
		n := copy(e.win, e.win[h:])
		e.win = e.win[:n]
	}
	m := copy(e.spans, e.spans[e.sk:])
	e.spans = e.spans[:m]
	for i := range e.spans {
		e.spans[i].at -= h
		e.spans[i].end -= h
	}
	e.sk, e.head = 0, 0
	e.sent = max(e.sent-h, 0)
}

// A failedRun is messages to pass to OnWriteError once the lock is
// released.
type failedRun struct {
	msgs [][]byte
	errs []error // one per message, or one for all
}

func (r failedRun) report(c *TCPConn) {
	for i, m := range r.msgs {
		c.failed(m, r.errs[min(i, len(r.errs)-1)])
	}
}

// failAll fails every unsettled message with err, emptying the window, and
// returns them to report once the lock is released. e.mu is held.
func (e *ackEngine) failAll(err error) failedRun {
	var run failedRun
	if n := len(e.spans) - e.sk; n > 0 {
		run.msgs = make([][]byte, 0, n)
		for _, sp := range e.spans[e.sk:] {
			run.msgs = append(run.msgs, e.win[sp.at:sp.end-e.tlen])
		}
		run.errs = []error{err}
		e.failures += uint64(n)
		e.lastErr = err
		e.acked = e.last()
		// The owner may be writing the old window: start a new one.
		e.win, e.spans = nil, nil
	} else if !e.owned {
		e.win, e.spans = e.win[:0], e.spans[:0]
	} else {
		e.win, e.spans = nil, nil
	}
	e.wrote = max(e.wrote, e.acked)
	e.sk, e.head, e.sent = 0, 0, 0
	// The socket's stream no longer matches the window: a reconnect
	// resumes it.
	e.gen++
	e.nc = nil
	e.broken = false
	clear(e.rejected)
	e.resolve(^uint64(0), err)
	e.signal()
	return run
}

// hello opens the session on a new socket: it sends the hello and reads
// the answer, within ctx, then resumes the window after the last message
// the listener delivered. It is called by dial, before the socket is
// handed to anyone; its reader starts once the connection has it
// (attached).
func (e *ackEngine) hello(ctx context.Context, nc net.Conn) error {
	c := e.c
	e.mu.Lock()
	first := e.acked + 1
	e.mu.Unlock()
	var buf [helloFixed + maxFramingName]byte
	b := appendHello(buf[:0], hello{
		version:   ackVersion,
		id:        e.id,
		first:     first,
		max:       uint32(c.wire.max),
		heartbeat: uint32(e.o.heartbeat / time.Millisecond),
		framing:   c.wire.framing.String(),
	})
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := nc.Write(b); err != nil {
		return fmt.Errorf("buffstreams: sending the hello to %s: %w", nc.RemoteAddr(), err)
	}
	delivered, err := readAnswer(nc)
	if err != nil {
		return fmt.Errorf("buffstreams: hello to %s: %w", nc.RemoteAddr(), err)
	}
	if !stop() {
		return ctx.Err()
	}
	nc.SetDeadline(time.Time{})
	return e.connected(nc, delivered)
}

// connected resumes the window on nc, whose listener has delivered every
// message up to delivered.
func (e *ackEngine) connected(nc net.Conn, delivered uint64) error {
	e.mu.Lock()
	run, err := e.settle(delivered)
	if err != nil {
		e.mu.Unlock()
		return fmt.Errorf("buffstreams: hello: %w", err)
	}
	e.gen++
	e.nc = nc
	e.src = &recordSource{nc: nc, timeout: e.o.heartbeat}
	e.broken = false
	e.sent = e.head
	e.kick()
	e.signal()
	e.mu.Unlock()
	run.report(e.c)
	return nil
}

// attached starts the reader of nc, whose hello was accepted, now that
// the connection has made it current (or closed it): the reader's failure
// then finds it there and forgets it. A socket the window dropped
// meanwhile is closed and forgotten instead.
func (e *ackEngine) attached(nc net.Conn) {
	e.mu.Lock()
	if e.nc != nc {
		e.mu.Unlock()
		e.c.fail(nc, errClosed)
		return
	}
	e.wg.Add(1)
	go e.read(e.src, e.gen)
	e.mu.Unlock()
}

// read is a socket's reader goroutine: it applies the listener's records
// until the socket fails, the listener goes silent, or a goaway ends it.
func (e *ackEngine) read(src *recordSource, gen uint64) {
	defer e.wg.Done()
	nc := src.nc
	br := bufio.NewReaderSize(src, 256)
	rec := new(recordBuf) // one per socket, not per record: it escapes
	var err error
	for err == nil {
		var typ byte
		var seq uint64
		var text string
		if typ, seq, text, err = readRecord(br, rec); err != nil {
			break
		}
		switch typ {
		case typeAck, typeHeartbeat:
			// A heartbeat carries the last position acknowledged: the
			// same checks apply, and settling it again changes nothing.
			err = e.onAck(gen, seq)
		case typeGoaway:
			if err = e.onAck(gen, seq); err == nil {
				err = errGoaway
			}
		case typeRejected:
			err = e.onRejected(gen, seq, text)
		}
	}
	if !errors.Is(err, errGoaway) && !isClosedErr(err) {
		e.c.log.Warn("buffstreams: acknowledgements stopped", "err", err)
	}
	silent := errors.Is(err, ErrPeerSilent)
	err = e.c.fail(nc, err)
	e.mu.Lock()
	if e.gen == gen {
		if silent && e.nc == nc {
			e.c.stats.silent.Add(1)
		}
		e.lose(nc, err)
	}
	e.mu.Unlock()
}

// A recordSource is what a socket's reader reads the listener's records
// from. Before each read of the socket it sets the read deadline
// HeartbeatTimeout ahead, so that the read fails with ErrPeerSilent when
// the listener sends nothing for that long; the time the reader spends
// applying records does not count. After a write on the socket failed,
// drain brings the deadline forward, for good, to let the reader take the
// listener's last records.
type recordSource struct {
	nc      net.Conn
	timeout time.Duration // HeartbeatTimeout; 0 when heartbeats are off
	drainBy atomic.Int64  // the deadline drain set, in Unix nanoseconds; 0 before
}

func (r *recordSource) Read(p []byte) (int, error) {
	if r.timeout <= 0 {
		return r.nc.Read(p)
	}
	if r.drainBy.Load() == 0 {
		r.nc.SetReadDeadline(time.Now().Add(r.timeout))
		if by := r.drainBy.Load(); by != 0 {
			r.nc.SetReadDeadline(time.Unix(0, by)) // drain ran meanwhile: its deadline stands
		}
	}
	n, err := r.nc.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && r.drainBy.Load() == 0 {
		err = fmt.Errorf("%w: nothing from the listener for %v: %w", ErrPeerSilent, r.timeout, err)
	}
	return n, err
}

// drain sets the read deadline to d for good. Called by the owner of the
// socket, after its write failed.
func (r *recordSource) drain(d time.Time) {
	r.drainBy.Store(d.UnixNano())
	r.nc.SetReadDeadline(d)
}

// A recordBuf holds a record of the listener as it is read.
type recordBuf [ackRecordLen + 2]byte

// readRecord reads one record of the listener into rec: an ack, a goaway,
// a heartbeat, or a rejection with its text.
func readRecord(br *bufio.Reader, rec *recordBuf) (typ byte, seq uint64, text string, err error) {
	if _, err = io.ReadFull(br, rec[:ackRecordLen]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: a record was cut short", ErrAckProtocol)
		}
		return 0, 0, "", err
	}
	typ, seq = rec[0], binary.BigEndian.Uint64(rec[1:ackRecordLen])
	switch typ {
	case typeAck, typeGoaway, typeHeartbeat:
		return typ, seq, "", nil
	case typeRejected:
	default:
		return 0, 0, "", fmt.Errorf("%w: record of type %#x", ErrAckProtocol, typ)
	}
	if _, err = io.ReadFull(br, rec[ackRecordLen:]); err != nil {
		return 0, 0, "", fmt.Errorf("%w: a rejection was cut short: %w", ErrAckProtocol, err)
	}
	m := int(binary.BigEndian.Uint16(rec[ackRecordLen:]))
	if m > maxReasonText {
		return 0, 0, "", fmt.Errorf("%w: rejection text of %d bytes", ErrAckProtocol, m)
	}
	b := make([]byte, m)
	if _, err = io.ReadFull(br, b); err != nil {
		return 0, 0, "", fmt.Errorf("%w: a rejection was cut short: %w", ErrAckProtocol, err)
	}
	return typ, seq, string(b), nil
}

// onAck applies an acknowledgement read on the socket of generation gen.
func (e *ackEngine) onAck(gen, seq uint64) error {
	e.relock()
	if e.gen != gen {
		e.mu.Unlock()
		return errGoaway // a later socket took over; this one is done
	}
	run, err := e.settle(seq)
	if len(run.msgs) == 0 {
		e.mu.Unlock()
		return err
	}
	e.reporting++
	e.mu.Unlock()
	run.report(e.c)
	e.mu.Lock()
	e.reporting--
	e.signal()
	e.mu.Unlock()
	return err
}

// onRejected records that the callback of message seq returned an error.
func (e *ackEngine) onRejected(gen, seq uint64, text string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.gen != gen:
		return errGoaway
	case seq <= e.acked || seq > e.last():
		return fmt.Errorf("%w: rejection of message %d, outside the unacknowledged %d to %d", ErrAckProtocol, seq, e.acked+1, e.last())
	}
	if e.rejected == nil {
		e.rejected = make(map[uint64]string)
	}
	e.rejected[seq] = text
	return nil
}

// flush waits until every message accepted before it has reached the
// kernel once, or has failed, and returns the latest failure meanwhile.
func (e *ackEngine) flush() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	target, failures := e.last(), e.failures
	e.hurry()
	e.kick()
	for e.wrote < target && e.acked < target && !e.stop {
		e.waitCond()
	}
	if e.failures != failures {
		return e.lastErr
	}
	return nil
}

// sync waits until every message accepted before it has been acknowledged
// or has failed, or until ctx is done.
func (e *ackEngine) sync(ctx context.Context) error {
	stop := context.AfterFunc(ctx, e.broadcast)
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	target, failures := e.last(), e.failures
	e.hurry()
	e.kick()
	for e.acked < target || e.reporting > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("buffstreams: %d of the messages written are not acknowledged yet: %w", target-e.acked, err)
		}
		if e.stop {
			return errClosed
		}
		e.waitCond()
	}
	if e.failures != failures {
		return e.lastErr
	}
	return nil
}

// closing fixes how long Close waits for acknowledgements. c.mu is held.
func (e *ackEngine) closing() {
	e.mu.Lock()
	e.draining = true
	e.until = time.Now().Add(drainWait(e.c.opts.writeTimeout))
	e.mu.Unlock()
}

// drain waits, until the deadline closing fixed, for the acknowledgement of
// every message written, fails those left, and stops the pump and the
// readers.
func (e *ackEngine) drain() {
	c := e.c
	e.mu.Lock()
	timer := time.AfterFunc(time.Until(e.until), e.broadcast)
	if nc := e.nc; nc != nil {
		nc.SetWriteDeadline(e.until)
	}
	e.hurry()
	e.kick()
	for e.sk < len(e.spans) && (e.nc != nil || e.owned) && time.Now().Before(e.until) {
		e.waitCond()
	}
	timer.Stop()
	nc := e.nc
	var run failedRun
	if e.sk < len(e.spans) {
		err := errClosed
		if !time.Now().Before(e.until) {
			err = fmt.Errorf("buffstreams: closed before the listener acknowledged, after waiting %v: %w", drainWait(c.opts.writeTimeout), errors.Join(ErrWriteTimeout, net.ErrClosed))
		}
		run = e.failAll(err)
	}
	e.stop = true
	e.draining = false
	e.until = time.Time{}
	e.nc = nil
	e.cond.Broadcast() // the pump too
	e.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	run.report(c)
	e.wg.Wait()
}

// reopening undoes what drain stopped, so that the engine dials again
// when there is work, whether or not Reopen's own dial succeeds. A Close
// since Reopen reopened the connection wins.
func (e *ackEngine) reopening() {
	e.mu.Lock()
	if !e.c.closed.Load() {
		e.stop = false
	}
	e.mu.Unlock()
}

func (e *ackEngine) reopened() {
	e.mu.Lock()
	e.kick()
	e.mu.Unlock()
}

// Sync waits until every message written before it has been acknowledged
// by the listener, or has failed, with acknowledged delivery (see the
// package documentation, Acknowledged delivery); a message whose callback
// returned an error has then been passed to OnWriteError. It returns nil if
// none of them failed, the latest failure otherwise, and an error wrapping
// ctx.Err() if ctx ends first. Without acknowledged delivery it is Flush.
func (c *TCPConn) Sync(ctx context.Context) error {
	if e, ok := c.eng.(*ackEngine); ok {
		return e.sync(ctx)
	}
	return c.Flush()
}

// Session returns the session ID of a connection with acknowledged
// delivery, and false without it.
func (c *TCPConn) Session() (SessionID, bool) {
	if e, ok := c.eng.(*ackEngine); ok {
		return e.id, true
	}
	return SessionID{}, false
}
