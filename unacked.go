package buffstreams

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// This file reports as failed, rather than written, the frames of a
// connection in plain mode that its peer's TCP never acknowledged, once the
// socket they were written on fails or is closed (see the package
// documentation, Accounting).
//
// A frame counts as written once the kernel has all of it, but the kernel
// may then hold it for a long time: with a peer that went silent, until
// the connection fails. On Linux the socket says how many of the bytes
// written on it its peer's TCP has not acknowledged (SIOCOUTQ), and how
// many of those it has not sent yet (SIOCOUTQNSD); a log of where the
// recent frames end (frameLog) turns that into frames. Of a connection that
// still lives only the frames not yet sent whole count: a reset keeps them
// from the peer, but one the kernel sent may already be in the peer's
// receive queue, its acknowledgement on the way. So that
// the log always agrees with the kernel, the frames are written with the
// socket's own system calls, each under the tally's lock, and recorded
// before it is released: a goroutine that ends the socket takes the lock,
// reads the count and seals the tally, and no write lands after it.
//
// What this cannot know: bytes the peer's kernel acknowledged and its
// process never read (it crashed, or its host lost power, with them in its
// receive buffer) count as written. Elsewhere than on Linux, and on
// sockets that are not plain TCP, the count is not available and frames
// count as written once the kernel has them.

// A tally counts the frames written on one socket of a connection, from
// the time the socket becomes the connection's until it ends.
//
// On a socket the connection dialed itself, nobody else holds it, and it is
// closed only by shut, after seal: so while mu is held and the tally is
// neither sealed nor retired, the socket's descriptor is open, and a write
// makes its system call on fd directly, going through rc only to wait for
// room (tally.write). That skips the poller's lock, its preparation for a
// wait, and setting WriteTimeout's deadline on every write. A socket the
// caller handed to NewConn may be closed behind the connection's back, and
// is always written through rc.
type tally struct {
	nc     net.Conn
	rc     syscall.RawConn // nc's socket, where its unacknowledged bytes can be read; else nil
	kernel bool            // the kernel bounds a stall on nc (see stall.go)
	tlen   int             // length of the framing's trailer

	mu     sync.Mutex
	fd     int      // nc's descriptor, for writes that need not wait; -1 if none; guarded by mu
	log    frameLog // guarded by mu
	total  uint64   // bytes handed to the kernel; guarded by mu
	sealed bool     // the socket ended and its frames were counted; guarded by mu
	broken bool     // a write system call on the socket failed; guarded by mu
	waits  int      // writes on fd that found the socket full and waited through rc; guarded by mu

	w rawWrite // the write in progress, by the goroutine that owns the socket for writing
}

// newTally returns the tally of nc, a socket that has just become the
// connection's, after asking the kernel to bound a stall on it; nil for a
// connection with acknowledged delivery, which accounts for its messages
// itself.
func (c *TCPConn) newTally(nc net.Conn) *tally {
	if c.opts.ack != nil {
		return nil
	}
	t := &tally{nc: nc, tlen: len(c.wire.framing.trailer()), fd: -1}
	if c.opts.stall > 0 {
		t.kernel = kernelBound(nc, c.opts.stall)
	}
	if t.kernel || c.opts.stall == 0 {
		// Writes on a counted socket go through its own system calls,
		// where the fallback's deadlines do not reach: count only where
		// the kernel keeps the bound, or none is asked for.
		t.rc = countable(nc)
	}
	if t.rc != nil && c.dialed {
		t.rc.Control(func(fd uintptr) { t.fd = int(fd) })
	}
	return t
}

// adopt makes nc the connection's socket. c.mu is held, or c is not yet
// shared.
func (c *TCPConn) adopt(nc net.Conn) {
	if old := c.tally.Load(); old != nil && old.nc != nc {
		old.retire() // sealed already, unless a path forgot to shut its socket
	}
	c.setNC(nc)
	c.startWatch(nc)
	c.tally.Store(c.newTally(nc))
}

// retire stops writes on the socket of t from using its descriptor
// directly, once t is no longer the connection's tally: shut would no
// longer find it, to seal it, before closing the socket.
func (t *tally) retire() {
	t.mu.Lock()
	t.fd = -1
	t.mu.Unlock()
}

// tallyOf returns the tally of nc, or nil.
func (c *TCPConn) tallyOf(nc net.Conn) *tally {
	if t := c.tally.Load(); t != nil && t.nc == nc {
		return t
	}
	return nil
}

// seal ends the tally of a socket about to be closed, and returns how many
// of the frames written on it the peer's TCP has not acknowledged and a
// reset keeps from it, and their payload bytes. If there are any, it makes
// closing the socket reset it, so that they are not delivered after being
// reported as failed. A frame the kernel sent whole may have reached the
// peer's receive queue before its acknowledgement reached this side, and a
// reset does not take it back: on a connection that still lives, it counts
// as written (see unsentBytes). Later calls return zeros.
func (t *tally) seal() (frames int, payload uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sealed || t.rc == nil {
		t.sealed = true
		return 0, 0
	}
	t.sealed = true
	q, ok := unsentBytes(t.rc)
	if !ok {
		return 0, 0
	}
	if q > 0 {
		resetOnClose(t.rc)
	}
	// Bytes written on the socket before it was the connection's (NewConn)
	// come first: if they count, everything after them does too.
	frames, payload = t.log.unackedAfter(t.total - min(uint64(q), t.total))
	t.log = frameLog{}
	return frames, payload
}

// writeBroke reports whether a write on the socket of t failed. A dead
// socket tells its error once, and a write's system call, made under t.mu,
// may have taken it: the peer watch then sees only an end of file.
func (t *tally) writeBroke() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.broken
}

// acked waits until the peer's TCP has acknowledged every byte written on
// the socket of t, the socket has died, or until passes, and returns nil,
// or else why some bytes may remain unacknowledged.
func (t *tally) acked(until time.Time) error {
	if t.rc == nil {
		return nil
	}
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		q, ok := unackedBytes(t.rc)
		if !ok || q == 0 {
			return nil
		}
		if err := socketError(t.rc); err != nil {
			return err
		}
		left := time.Until(until)
		if left <= 0 {
			return errAckWait
		}
		time.Sleep(min(wait, left))
	}
}

// closeWait is how long Close gives the peer's TCP to acknowledge what is
// written: WriteTimeout, or 10 seconds if it is zero, and no longer than
// StallTimeout, after which the kernel would fail the connection anyway.
func (c *TCPConn) closeWait() time.Duration {
	d := orDefault(c.opts.writeTimeout, drainTimeout)
	if s := c.opts.stall; s > 0 {
		d = min(d, s)
	}
	return d
}

// errAckWait is why Close fails messages whose frames the peer's TCP has
// not acknowledged when its wait ends.
var errAckWait = errors.New("buffstreams: Close stopped waiting for the peer's TCP to acknowledge")

// drop closes nc, a socket of the connection, after counting as failed the
// frames written on it that its peer's TCP never acknowledged: for each,
// OnWriteError receives a nil message and an error matching
// ErrUnacknowledged and cause. It returns that error, or nil if every
// frame was acknowledged, and the error of closing nc.
func (c *TCPConn) drop(nc net.Conn, cause error) (unacked, closeErr error) {
	frames, payload, closeErr := c.shut(nc)
	return c.unacked(frames, payload, cause), closeErr
}

// shut closes nc, after sealing its tally, and returns how many of the
// frames written on it its peer's TCP never acknowledged, and their payload
// bytes, for unacked to report. It is the only place where a socket that
// has become the connection's is closed: writes on a dialed socket's
// descriptor rely on that (see tally), and TestTallyEndsBeforeSocket
// checks each way a socket ends.
func (c *TCPConn) shut(nc net.Conn) (frames int, payload uint64, closeErr error) {
	if t := c.tallyOf(nc); t != nil {
		frames, payload = t.seal()
	}
	if h := shutHook.Load(); h != nil {
		(*h)()
	}
	return frames, payload, nc.Close()
}

// shutHook, when set, runs in shut just before the socket is closed: tests
// use it to have a peer act at that moment.
var shutHook atomic.Pointer[func()]

// unacked counts as failed the given number of messages, counted as
// written before, whose frames the peer's TCP never acknowledged, and
// passes each to OnWriteError with a nil message. It returns the error
// they were reported with, or nil if there were none. No lock is held.
func (c *TCPConn) unacked(frames int, payload uint64, cause error) error {
	if frames == 0 {
		return nil
	}
	err := fmt.Errorf("%w (%d messages): %w", ErrUnacknowledged, frames, cause)
	c.stats.unacked.Add(uint64(frames))
	c.stats.unackedBytes.Add(payload)
	c.stats.msgsFailed.Add(uint64(frames))
	c.log.Warn("buffstreams: messages the peer's TCP never acknowledged", "messages", frames, "err", cause)
	if h := c.opts.onWriteError; h != nil {
		for range frames {
			h(nil, err)
		}
	}
	return err
}
