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

// Lock order of the acknowledgement engine, outermost first:
//
//	TCPConn.dmu, then TCPConn.mu, then ackEngine.mu
//
// ackEngine.mu is the innermost lock: no other lock is taken while it is
// held, and it is never held during a system call, a dial or a callback
// (OnWriteError). A dial holds dmu when it says hello and takes mu in
// connected; Close holds TCPConn.mu when it calls closing, which takes
// mu. The window (window.go) has no lock of its own: mu guards it.

// ackEngine is the write engine of acknowledged delivery (TCPConnConfig.Acks
// set). Write appends the frame to the replay window, win, where it stays
// until the listener acknowledges it; the frames are numbered implicitly,
// the first of a session 1, and nothing is added to them on the wire.
//
// One goroutine at a time owns the socket, and the owner state, owner,
// says which phase it is in (see ownerState): it writes whatever part of
// the window the current socket has not had (writeOut), or dials when
// there is no socket and messages are unsettled (dialAgain). The owner is
// the pump goroutine in batching mode, and in the default mode a Write,
// which returns once the kernel has its frame, or the pump when no Write
// is there to do it. In batching mode with SlowConsumerBlock, a Write
// that finds a write buffer's worth unsent writes it itself.
//
// Each socket has a reader goroutine that reads the listener's records:
// acknowledgements settle messages in the window, a goaway or a read error
// ends the socket, and the pump dials again and, after the hello, writes
// the window from the first message the listener has not delivered. A
// listener that sends no record, not even a heartbeat, for
// HeartbeatTimeout fails the reader's read with ErrPeerSilent, which ends
// the socket the same way.
type ackEngine struct {
	c       *TCPConn
	o       *ackOptions
	id      SessionID
	wait    bool // default mode: Write returns once the kernel has its frame
	flushAt int  // batching mode with SlowConsumerBlock: unsent bytes from which a Write writes the window itself; 0 for never

	mu        sync.Mutex
	cond      sync.Cond         // signalled on every change below; L is &mu
	win       window            // the unsettled frames; guarded by mu
	owner     ownerState        // who may write to the socket; guarded by mu
	cur       *recordSource     // the socket the last hello was accepted on, and its reader's source; nil when down; guarded by mu
	pump      pumpState         // guarded by mu
	until     time.Time         // when Close stops waiting for acknowledgements; zero unless it waits; guarded by mu
	strikes   int               // sockets lost since the window last moved; guarded by mu
	lostErr   error             // why the last socket was lost; guarded by mu
	waiters   []*ackWait        // default-mode Writes waiting for their frame, in order; guarded by mu
	rejected  map[uint64]string // callback errors of unsettled messages; guarded by mu
	reporting int               // rejections being passed to OnWriteError; guarded by mu
	fails     failTally         // what Flush and Sync report; guarded by mu
	sleepers  int               // goroutines in waitCond; guarded by mu

	wg sync.WaitGroup // the pump and the readers
}

// An ownerState says who may write to the session's socket. A goroutine
// becomes the owner by moving the state from ownerIdle to ownerWriting or
// ownerDialing, with mu held, and only the owner moves it back, once it
// has mu again; so at most one goroutine writes to the socket or dials.
// The transitions:
//
//	idle    → writing  a Write or the pump takes the socket to write what it has not had (writeOut)
//	idle    → dialing  it takes it to dial, when there is no socket and messages are unsettled (dialAgain)
//	writing → idle     the write is done, or failed on a socket that is no longer current
//	writing → broken   the write failed on the current socket
//	dialing → idle     the dial is done, or failed and with it the window
//	broken  → idle     the socket's reader dropped it (lose), a new socket's hello was accepted (connected), or the window failed (abandonAll)
//	idle, broken → stopped  Close is done with the window (halt, once the owner, if any, let go)
//	stopped → idle     Reopen (reopening)
type ownerState uint8

const (
	ownerIdle    ownerState = iota // nobody writes: a goroutine with work may take the socket
	ownerWriting                   // the owner writes to the socket, without mu
	ownerDialing                   // the owner dials a new socket, without mu
	ownerBroken                    // a write on the socket failed: its reader takes the listener's last records, then drops it; nobody writes
	ownerStopped                   // Close is done with the window: nobody writes or dials until Reopen
)

// A pumpState is the life of the pump goroutine, which writes the window
// when no Write does and dials again after a loss.
type pumpState struct {
	phase    pumpPhase
	pauseEnd *time.Timer // ends a pause; made by the first
}

type pumpPhase uint8

const (
	pumpGone   pumpPhase = iota // there is no pump: kick starts one
	pumpBusy                    // the pump runs, and looks for work before it waits
	pumpIdle                    // the pump waits for work: kick wakes it
	pumpPaused                  // the pump leaves the window to busy Writes for busyPause: hurry ends it
)

// A failTally counts the messages failed or rejected, for Flush and Sync.
type failTally struct {
	n    uint64
	last error // the latest failure
}

// count counts n messages failed with err, the latest.
func (t *failTally) count(n int, err error) {
	if n > 0 {
		t.n += uint64(n)
		t.last = err
	}
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
		win:  newWindow(c.wire.framing, c.opts.ack.window),
	}
	if c.opts.slow == SlowConsumerBlock {
		// Under the other policies a Write must not wait for the socket,
		// so the pump writes everything.
		e.flushAt = min(c.opts.bufSize, e.o.window/2)
	}
	e.cond.L = &e.mu
	return e
}

func (e *ackEngine) write(msg []byte) error {
	e.mu.Lock()
	seq, err := e.appendMsg(msg)
	if err != nil {
		return err // appendMsg unlocked e.mu and reported msg
	}
	return e.pushOut(seq)
}

// pushOut gets the frames just added to the window, up to message seq, on
// their way, and in the default mode waits until the kernel has them. e.mu
// is held, and released.
func (e *ackEngine) pushOut(seq uint64) error {
	if !e.wait {
		if e.flushAt > 0 && e.owner == ownerIdle && e.cur != nil && e.win.unsent() >= e.flushAt {
			// A write buffer's worth is waiting: write it here, as bufio
			// does, while the frames are in this processor's cache,
			// rather than have the pump copy them from another.
			e.writeOut()
		} else {
			e.kick()
		}
		e.mu.Unlock()
		return nil
	}
	return e.awaitKernel(seq)
}

func (e *ackEngine) writeBatch(msgs [][]byte) (int, error) { return writeEach(e.write, msgs) }

// writeRun copies the messages of run into the window, as writeBatch does,
// but under one hold of e.mu, in one copy when the whole run fits within
// the bound (else a message at a time, as the SlowConsumer policy allows),
// and in the default mode waits only once, for the last of them: the
// kernel takes the window's frames in order, so the others are in it by
// then, or failed with it.
func (e *ackEngine) writeRun(run []byte, spans []span) (int, error) {
	t := len(e.c.wire.framing.trailer())
	var first error
	var seq uint64
	n := 0
	e.mu.Lock()
	if !e.c.closed.Load() && e.win.fitsRun(len(run), len(spans)) {
		seq, n = e.win.pushRun(run, spans), len(spans)
	} else {
		for _, s := range spans {
			q, err := e.appendMsg(run[s.at : s.end-t])
			if err != nil { // appendMsg unlocked e.mu and reported the message
				if first == nil {
					first = err
				}
				e.mu.Lock()
				continue
			}
			seq = q
			n++
		}
	}
	if n == 0 {
		e.mu.Unlock()
		return 0, first
	}
	if err := e.pushOut(seq); err != nil {
		return 0, err
	}
	return n, first
}

// appendMsg appends the frame of msg to the window, applying the
// SlowConsumer policy when it is full, and returns its sequence number.
// e.mu is held; on error it is released and msg has been reported.
func (e *ackEngine) appendMsg(msg []byte) (uint64, error) {
	if e.win.fits(len(msg)) && !e.c.closed.Load() {
		return e.win.push(msg), nil
	}
	return e.appendSlow(msg)
}

// appendSlow is appendMsg when the window is full or the connection
// closed.
func (e *ackEngine) appendSlow(msg []byte) (uint64, error) {
	c := e.c
	var deadline time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var err error
		switch {
		case c.closed.Load():
			err = errClosed
		case e.win.fits(len(msg)):
			return e.win.push(msg), nil
		case c.opts.slow == SlowConsumerError:
			err = fmt.Errorf("%w: %d bytes await acknowledgement", ErrSlowConsumer, e.win.held())
		case c.opts.slow == SlowConsumerClose:
			return 0, e.closeSlow(msg)
		case c.opts.writeTimeout > 0:
			t := c.opts.writeTimeout
			if deadline.IsZero() {
				deadline = time.Now().Add(t)
				timer = time.AfterFunc(t, e.broadcast)
			} else if !time.Now().Before(deadline) {
				err = fmt.Errorf("%w: replay window still full after %v: %w", ErrWriteTimeout, t, os.ErrDeadlineExceeded)
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
}

// closeSlow applies SlowConsumerClose to a Write that found the window
// full: it closes the socket and fails every unsettled message, and msg.
// e.mu is held, and released.
func (e *ackEngine) closeSlow(msg []byte) error {
	c := e.c
	err := fmt.Errorf("%w: closed the connection with %d messages unacknowledged", ErrSlowConsumer, e.win.pending())
	var nc net.Conn
	if e.cur != nil {
		nc = e.cur.nc
	}
	run := e.abandonAll(err)
	e.mu.Unlock()
	if nc != nil {
		c.fail(nc, err)
	}
	run.report(c)
	c.failed(msg, err)
	return err
}

// awaitKernel makes a default-mode Write wait until the kernel has the
// frame of message seq, writing it itself when nobody else is. e.mu is
// held, and released.
func (e *ackEngine) awaitKernel(seq uint64) error {
	w := ackWaitPool.Get().(*ackWait)
	w.seq, w.done, w.err = seq, false, nil
	e.waiters = append(e.waiters, w)
	for !w.done {
		if e.due() {
			e.writeOut()
			continue
		}
		e.waitCond()
	}
	err := w.err
	e.mu.Unlock()
	ackWaitPool.Put(w)
	return err
}

// due reports whether the socket is free and the window needs its owner:
// frames the current socket has not had, or unsettled messages and no
// socket. e.mu is held.
func (e *ackEngine) due() bool {
	switch {
	case e.owner != ownerIdle:
		return false
	case e.cur == nil:
		return e.win.pending() > 0
	default:
		return e.win.unsent() > 0
	}
}

// kick wakes the pump, starting it if needed, when there is something for
// it to do. e.mu is held.
func (e *ackEngine) kick() {
	switch {
	case e.owner == ownerStopped:
	case e.pump.phase == pumpGone:
		e.pump.phase = pumpBusy
		e.wg.Add(1)
		go e.runPump()
	case e.pump.phase == pumpIdle:
		e.pump.phase = pumpBusy // one wake-up is enough
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

// runPump is the pump goroutine: it writes the window whenever nobody else
// does, and dials again when the socket is lost with messages unsettled.
// It returns when Close is done (ownerStopped).
func (e *ackEngine) runPump() {
	defer e.wg.Done()
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.owner != ownerStopped {
		if !e.due() {
			e.pump.phase = pumpIdle
			e.cond.Wait()
			e.pump.phase = pumpBusy
			continue
		}
		if e.flushAt > 0 && e.cur != nil && e.sleepers == 0 && e.until.IsZero() && e.windowFilling() {
			e.pause()
			continue
		}
		if e.due() { // windowFilling let go of e.mu
			e.writeOut()
		}
	}
	if e.pump.pauseEnd != nil {
		e.pump.pauseEnd.Stop()
	}
	e.pump.phase = pumpGone
	e.signal()
}

// relock takes e.mu again for the owner of the socket, or a reader of
// acknowledgements, that let go of it. In batching mode Writes hold it
// briefly for every message, and it is taken behind them without queueing
// (lockBehind); in the default mode each Write waits for the socket
// anyway, and a plain Lock measured no worse.
func (e *ackEngine) relock() {
	if e.wait {
		e.mu.Lock()
	} else {
		lockBehind(&e.mu)
	}
}

// windowFilling reports whether Writes added frames to the window while
// the pump yielded its processor once. e.mu is held, and released while
// yielding.
func (e *ackEngine) windowFilling() bool {
	seen := e.win.last()
	e.mu.Unlock()
	runtime.Gosched()
	lockBehind(&e.mu)
	return e.win.last() != seen
}

// pause leaves the window, for busyPause, to Writes that are adding frames
// to it in batching mode: the one that finds a write buffer's worth unsent
// writes it, and the pump writes what is left after the pause. A Flush, a
// Sync or Close ends the pause (hurry). e.mu is held, and released while
// waiting.
func (e *ackEngine) pause() {
	e.pump.phase = pumpPaused
	if e.pump.pauseEnd == nil {
		e.pump.pauseEnd = time.AfterFunc(busyPause, e.endPause)
	} else {
		e.pump.pauseEnd.Reset(busyPause)
	}
	for e.pump.phase == pumpPaused && e.owner != ownerStopped {
		e.cond.Wait()
	}
	e.pump.phase = pumpBusy
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
	if e.pump.phase == pumpPaused {
		e.pump.phase = pumpBusy
		e.cond.Broadcast()
	}
}

// writeOut takes the socket (ownerIdle, and due) and writes what it has
// not had of the window, or dials again if there is no socket. e.mu is
// held, and released meanwhile.
func (e *ackEngine) writeOut() {
	if e.cur == nil {
		e.dialAgain()
		return
	}
	s := e.cur
	b, from := e.win.lend()
	until := e.until
	e.owner = ownerWriting
	e.mu.Unlock()
	n, err := e.writeSocket(s, b, until)
	e.relock()
	e.win.unlend()
	e.owner = ownerIdle
	if e.cur == s {
		e.noteWritten(e.win.sentTo(from + int64(n)))
		if err != nil {
			e.owner = ownerBroken
		}
	}
	e.released()
}

// writeSocket writes b to the socket of s, by the deadline until if Close
// set one, and returns how much it wrote. When the write fails, records
// the listener sent before the failure, a goaway say, may still be unread:
// the socket is not closed but ends for writing, and its reader takes what
// is left, within ackDrainWait, before it drops the socket and a reconnect
// resumes after what was acknowledged. It runs without e.mu.
func (e *ackEngine) writeSocket(s *recordSource, b []byte, until time.Time) (int, error) {
	c, nc := e.c, s.nc
	if !until.IsZero() {
		nc.SetWriteDeadline(until)
	} else if t := c.opts.writeTimeout; t > 0 {
		nc.SetWriteDeadline(time.Now().Add(t))
	}
	n, err := nc.Write(b)
	if err != nil {
		c.log.Warn("buffstreams: connection failed", "err", c.writeError(nc, err))
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		s.windDown(time.Now().Add(ackDrainWait))
	}
	return n, err
}

// released is called when the owner lets go of the socket: it wakes the
// Writes that wait and, if there is work left, the pump. e.mu is held.
func (e *ackEngine) released() {
	e.signal()
	if e.due() {
		e.kick()
	}
}

// dialAgain dials, as the owner, after the socket was lost; the hello's
// answer resumes the window (see connected). It fails every unsettled
// message when the dial fails, when Close is waiting, or when sockets keep
// failing without the window moving. e.mu is held, and released
// meanwhile.
func (e *ackEngine) dialAgain() {
	c := e.c
	limit := 1
	if r := c.opts.retry; r != nil {
		limit = r.attempts
	}
	var err error
	switch {
	case !e.until.IsZero() || c.closed.Load():
		err = fmt.Errorf("buffstreams: the connection was lost before the listener acknowledged: %w", errClosed)
	case e.strikes > limit:
		err = fmt.Errorf("%w: %d connections lost without progress; the last: %w", ErrReconnectFailed, e.strikes, e.lostErr)
	default:
		if err = e.dialOnce(); err == nil {
			return
		}
	}
	run := e.abandonAll(err)
	e.strikes = 0
	e.mu.Unlock()
	run.report(c)
	e.mu.Lock()
}

// dialOnce is dialAgain's dial, as the owner (ownerDialing). It returns the
// dial's error; a socket whose hello was not accepted is dropped and
// counted as a strike. e.mu is held, and released meanwhile.
func (e *ackEngine) dialOnce() error {
	e.owner = ownerDialing
	e.mu.Unlock()
	nc, err := e.c.conn()
	e.mu.Lock()
	e.owner = ownerIdle
	if err != nil {
		return err
	}
	if e.cur == nil {
		// A socket without an accepted hello: drop it, so that the next
		// attempt dials.
		e.mu.Unlock()
		e.c.fail(nc, errNoSession)
		e.mu.Lock()
		e.strikes++
		e.lostErr = errNoSession
	}
	e.released()
	return nil
}

// forget forgets the current socket: a broken one no longer keeps the
// owner state from ownerIdle. e.mu is held.
func (e *ackEngine) forget() {
	e.cur = nil
	if e.owner == ownerBroken {
		e.owner = ownerIdle
	}
}

// lose forgets the current socket, lost with err. e.mu is held.
func (e *ackEngine) lose(err error) {
	e.forget()
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

// noteWritten counts n messages, of nb payload bytes, whose frames reached
// the kernel for the first time, and ends the waits of their Writes. e.mu
// is held.
func (e *ackEngine) noteWritten(n int, nb uint64) {
	if n > 0 {
		e.c.wrote(n, nb)
		e.resolve(e.win.reached, nil)
	}
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

// confirm records that the listener delivered every message up to seq:
// acknowledged, or rejected by its callback. It returns the rejected ones,
// to report without the lock. e.mu is held.
func (e *ackEngine) confirm(seq uint64) (failedRun, error) {
	var run failedRun
	switch acked, last := e.win.acked, e.win.last(); {
	case seq == acked:
		return run, nil
	case seq < acked:
		return run, fmt.Errorf("%w: acknowledgement of message %d after %d", ErrAckProtocol, seq, acked)
	case seq > last:
		return run, fmt.Errorf("%w: acknowledgement of message %d, but only %d were written", ErrAckProtocol, seq, last)
	}
	ok := seq - e.win.acked
	if len(e.rejected) > 0 {
		run = e.takeRejected(seq)
		ok -= uint64(len(run.msgs))
	}
	e.noteWritten(e.win.ackUpTo(seq))
	e.strikes = 0
	e.c.stats.acked.Add(ok)
	e.resolve(seq, nil)
	e.signal()
	return run, nil
}

// takeRejected returns, with copies of their payloads, the messages up to
// seq whose callback returned an error, before they are settled. e.mu is
// held.
func (e *ackEngine) takeRejected(seq uint64) failedRun {
	var run failedRun
	for s := e.win.acked + 1; s <= seq; s++ {
		text, bad := e.rejected[s]
		if !bad {
			continue
		}
		delete(e.rejected, s)
		run.msgs = append(run.msgs, append([]byte(nil), e.win.payload(s)...))
		run.errs = append(run.errs, fmt.Errorf("%w: message %d: %s", ErrRejected, s, text))
	}
	if len(run.errs) > 0 {
		e.fails.count(len(run.msgs), run.errs[len(run.errs)-1])
	}
	return run
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

// abandonAll fails every unsettled message with err, emptying the window,
// and returns them to report once the lock is released. The socket's
// stream no longer matches the window: it is forgotten, and a reconnect
// resumes the session. e.mu is held.
func (e *ackEngine) abandonAll(err error) failedRun {
	var run failedRun
	if msgs := e.win.failAll(); len(msgs) > 0 {
		run = failedRun{msgs: msgs, errs: []error{err}}
		e.fails.count(len(msgs), err)
	}
	e.forget()
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
	first := e.win.acked + 1
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
// message up to delivered: nc becomes the current socket, and has the
// window replayed from the first message not delivered.
func (e *ackEngine) connected(nc net.Conn, delivered uint64) error {
	e.mu.Lock()
	run, err := e.confirm(delivered)
	if err != nil {
		e.mu.Unlock()
		return fmt.Errorf("buffstreams: hello: %w", err)
	}
	e.forget()
	e.cur = &recordSource{nc: nc, timeout: e.o.heartbeat}
	e.win.replay()
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
	s := e.cur
	if s == nil || s.nc != nc {
		e.mu.Unlock()
		e.c.fail(nc, errClosed)
		return
	}
	e.wg.Add(1)
	go e.readAcks(s)
	e.mu.Unlock()
}

// readAcks is a socket's reader goroutine: it applies the listener's
// records until the socket fails, the listener goes silent, or a goaway
// ends it, and then drops the socket.
func (e *ackEngine) readAcks(src *recordSource) {
	defer e.wg.Done()
	br := bufio.NewReaderSize(src, 256)
	rec := new(recordBuf) // one per socket, not per record: it escapes
	var err error
	for err == nil {
		var typ byte
		var seq uint64
		var text string
		if typ, seq, text, err = readRecord(br, rec); err == nil {
			err = e.apply(src, typ, seq, text)
		}
	}
	if !errors.Is(err, errGoaway) && !isClosedErr(err) {
		e.c.log.Warn("buffstreams: acknowledgements stopped", "err", err)
	}
	silent := errors.Is(err, ErrPeerSilent)
	err = e.c.fail(src.nc, err)
	e.mu.Lock()
	if e.cur == src {
		if silent {
			e.c.stats.silent.Add(1)
		}
		e.lose(err)
	}
	e.mu.Unlock()
}

// apply applies one record read on the socket of src.
func (e *ackEngine) apply(src *recordSource, typ byte, seq uint64, text string) error {
	switch typ {
	case typeAck, typeHeartbeat:
		// A heartbeat carries the last position acknowledged: the same
		// checks apply, and confirming it again changes nothing.
		return e.onAck(src, seq)
	case typeGoaway:
		if err := e.onAck(src, seq); err != nil {
			return err
		}
		return errGoaway
	case typeRejected:
		return e.onRejected(src, seq, text)
	}
	return nil
}

// A recordSource is what a socket's reader reads the listener's records
// from. Before each read of the socket it sets the read deadline
// HeartbeatTimeout ahead, so that the read fails with ErrPeerSilent when
// the listener sends nothing for that long; the time the reader spends
// applying records does not count. After a write on the socket failed,
// windDown brings the deadline forward, for good, to let the reader take the
// listener's last records.
type recordSource struct {
	nc      net.Conn
	timeout time.Duration // HeartbeatTimeout; 0 when heartbeats are off
	drainBy atomic.Int64  // the deadline windDown set, in Unix nanoseconds; 0 before
}

func (r *recordSource) Read(p []byte) (int, error) {
	if r.timeout <= 0 {
		return r.nc.Read(p)
	}
	if r.drainBy.Load() == 0 {
		r.nc.SetReadDeadline(time.Now().Add(r.timeout))
		if by := r.drainBy.Load(); by != 0 {
			r.nc.SetReadDeadline(time.Unix(0, by)) // windDown ran meanwhile: its deadline stands
		}
	}
	n, err := r.nc.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && r.drainBy.Load() == 0 {
		err = fmt.Errorf("%w: nothing from the listener for %v: %w", ErrPeerSilent, r.timeout, err)
	}
	return n, err
}

// windDown sets the read deadline to d for good. Called by the owner of
// the socket, after its write failed.
func (r *recordSource) windDown(d time.Time) {
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

// onAck applies an acknowledgement read on the socket of src.
func (e *ackEngine) onAck(src *recordSource, seq uint64) error {
	e.relock()
	if e.cur != src {
		e.mu.Unlock()
		return errGoaway // a later socket took over; this one is done
	}
	run, err := e.confirm(seq)
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

// onRejected records that the callback of message seq, read on the socket
// of src, returned an error.
func (e *ackEngine) onRejected(src *recordSource, seq uint64, text string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch acked, last := e.win.acked, e.win.last(); {
	case e.cur != src:
		return errGoaway
	case seq <= acked || seq > last:
		return fmt.Errorf("%w: rejection of message %d, outside the unacknowledged %d to %d", ErrAckProtocol, seq, acked+1, last)
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
	target, failures := e.win.last(), e.fails.n
	e.hurry()
	e.kick()
	for e.win.reached < target && e.win.acked < target && e.owner != ownerStopped {
		e.waitCond()
	}
	if e.fails.n != failures {
		return e.fails.last
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
	target, failures := e.win.last(), e.fails.n
	e.hurry()
	e.kick()
	for e.win.acked < target || e.reporting > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("buffstreams: %d of the messages written are not acknowledged yet: %w", target-e.win.acked, err)
		}
		if e.owner == ownerStopped {
			return errClosed
		}
		e.waitCond()
	}
	if e.fails.n != failures {
		return e.fails.last
	}
	return nil
}

// closing fixes how long Close waits for acknowledgements. c.mu is held.
func (e *ackEngine) closing() {
	e.mu.Lock()
	e.until = time.Now().Add(drainWait(e.c.opts.writeTimeout))
	e.mu.Unlock()
}

// drain waits, until the deadline closing fixed, for the acknowledgement of
// every message written, fails those left, closes the socket, and stops
// the pump and the readers.
func (e *ackEngine) drain() {
	c := e.c
	e.mu.Lock()
	until, s := e.until, e.cur
	e.mu.Unlock()
	if s != nil {
		s.nc.SetWriteDeadline(until)
	}
	e.mu.Lock()
	timer := time.AfterFunc(time.Until(until), e.broadcast)
	e.hurry()
	e.kick()
	for e.win.pending() > 0 && (e.cur != nil || e.owner == ownerWriting || e.owner == ownerDialing) && time.Now().Before(until) {
		e.waitCond()
	}
	timer.Stop()
	s = e.cur
	var run failedRun
	if e.win.pending() > 0 {
		err := errClosed
		if !time.Now().Before(until) {
			err = fmt.Errorf("buffstreams: closed before the listener acknowledged, after waiting %v: %w", drainWait(c.opts.writeTimeout), errors.Join(ErrWriteTimeout, net.ErrClosed))
		}
		run = e.abandonAll(err)
	}
	e.forget()
	e.until = time.Time{}
	e.mu.Unlock()
	if s != nil {
		s.nc.Close()
	}
	run.report(c)
	e.halt()
	e.wg.Wait()
}

// halt waits for the owner of the socket, if any, to let go, which it does
// soon once the socket is closed and dials see the connection closed, and
// then stops the engine (ownerStopped): the pump returns.
func (e *ackEngine) halt() {
	e.mu.Lock()
	for e.owner == ownerWriting || e.owner == ownerDialing {
		e.waitCond()
	}
	e.owner = ownerStopped
	e.cond.Broadcast() // the pump too
	e.mu.Unlock()
}

// reopening undoes what drain stopped, so that the engine dials again
// when there is work, whether or not Reopen's own dial succeeds. A Close
// since Reopen reopened the connection wins.
func (e *ackEngine) reopening() {
	e.mu.Lock()
	if e.owner == ownerStopped && !e.c.closed.Load() {
		e.owner = ownerIdle
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
