package buffstreams

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// This file lets a dialed connection in plain mode notice that its peer
// closed or reset the socket while nothing was being written. TCP tells a
// sender nothing of it until a write after the peer's FIN draws a reset, so
// the first message written after the peer left would vanish without an
// error, and the second would fail. A connection that nobody reads has a
// goroutine parked until the socket turns readable; it then peeks, without
// taking any bytes, and records why the peer left. The next write, instead
// of going into the dead socket, fails with ErrPeerClosed (or, with a Retry
// policy, dials again and writes on the new connection), and Close reports
// it.
//
// The goroutine waits in the runtime's poller, as a parked Read does, and
// costs nothing per message: a system call's worth of frames checks two
// atomic pointers before it is written. It exists
// only while nobody reads the connection: the first Read or Messages stops
// it for good, since a reader learns of the peer's end itself. Acknowledged
// delivery has its own reader and no watch; accepted and wrapped
// connections have none either.

// A peerWatch watches one socket of a dialed connection.
type peerWatch struct {
	nc   net.Conn        // the connection watched: the TCPConn's nc when it began
	rc   syscall.RawConn // nc's socket, beneath TLS
	done chan struct{}   // closed when the goroutine has returned
	stop atomic.Bool     // set before a Read makes the goroutine return

	// gone is why the peer left, once the watch or Close found it; it is
	// set once. told is set once a write outside Close has failed, with it
	// or with an error of the socket.
	gone atomic.Pointer[error]
	told atomic.Bool
}

// longAgo is a deadline in the past, which makes a parked read return.
var longAgo = time.Unix(1, 0)

// startWatch begins watching nc, the connection just made current, if the
// connection is one to watch. c.mu is held, or c is not yet shared.
func (c *TCPConn) startWatch(nc net.Conn) {
	c.watch.Store(nil)
	if !c.dialed || c.opts.ack != nil || c.reading.Load() {
		return
	}
	rc := watchable(nc)
	if rc == nil {
		return
	}
	w := &peerWatch{nc: nc, rc: rc, done: make(chan struct{})}
	c.watch.Store(w)
	go c.watchPeer(w)
}

// watchPeer waits until the socket of w is readable and the peer has left,
// or the watch is stopped, or the socket is closed.
func (c *TCPConn) watchPeer(w *peerWatch) {
	defer close(w.done)
	var why error
	err := w.rc.Read(func(fd uintptr) bool {
		if w.stop.Load() {
			return true
		}
		var settled bool
		why, settled = probePeer(fd)
		return settled
	})
	if err == nil && why != nil {
		if t := c.tallyOf(w.nc); why == ErrPeerClosed && t != nil && t.writeBroke() {
			// An end of file, once a write took the socket's error,
			// which that write reports.
			return
		}
		c.peerLeft(w, why)
	}
}

// peerLeft records, once, that the peer of w's socket left, or went
// silent, and why.
func (c *TCPConn) peerLeft(w *peerWatch, why error) {
	if !w.gone.CompareAndSwap(nil, &why) {
		return
	}
	if errors.Is(why, ErrPeerSilent) { // the peer did not leave: it stopped answering
		c.log.Warn("buffstreams: the peer went silent", "err", why)
	} else {
		c.stats.peerCloses.Add(1)
		c.log.Warn("buffstreams: the peer closed the connection", "err", why)
	}
}

// stopWatch ends the watch for good, before the first Read: from then on a
// reader learns of the peer's end itself. c.rmu is held.
func (c *TCPConn) stopWatch() {
	if c.reading.Load() {
		return
	}
	c.mu.Lock()
	if c.reading.Load() {
		c.mu.Unlock()
		return
	}
	c.reading.Store(true)
	w := c.watch.Load()
	c.mu.Unlock()
	if w == nil {
		return
	}
	w.stop.Store(true)
	w.nc.SetReadDeadline(longAgo) // wakes the goroutine if it is parked
	<-w.done
	w.nc.SetReadDeadline(time.Time{})
}

// peerGone returns why the peer of nc left, if the watch found it, and
// nil otherwise; a write about to fail with it says so with tell.
func (c *TCPConn) peerGone(nc net.Conn, tell bool) error {
	w := c.watch.Load()
	if w == nil || w.nc != nc {
		return nil
	}
	p := w.gone.Load()
	if p == nil {
		return nil
	}
	if tell {
		w.told.Store(true)
	}
	return *p
}

// writeFailed records that a write on nc failed and returned its error:
// that reported whatever end of the peer the watch finds, and Close need
// not report it again.
func (c *TCPConn) writeFailed(nc net.Conn) {
	if w := c.watch.Load(); w != nil && w.nc == nc {
		w.told.Store(true)
	}
}

// untoldPeerEnd returns, for Close, why the peer of w's socket, the last
// one, left, unless a Write or Flush already returned it or a Read watches
// the connection. If the watch has not found the peer gone, it looks at
// the socket once more itself: the peer's end may have arrived while the
// watching goroutine waits to run.
func (c *TCPConn) untoldPeerEnd(w *peerWatch) error {
	if w == nil || w.stop.Load() || w.told.Load() {
		return nil
	}
	if w.gone.Load() == nil {
		var why error
		if w.rc.Control(func(fd uintptr) { why, _ = probePeer(fd) }) != nil || why == nil {
			return nil // closed by a failure, or the peer is there
		}
		c.peerLeft(w, why)
	}
	return *w.gone.Load()
}

// peerError is the error for a peer that left: cause is io.EOF for a
// close, or the error the socket gave (a reset); p holds the first bytes
// the peer sent and nobody read, if any.
func peerError(cause error, p []byte) error {
	if silent(cause) {
		return silentError{cause}
	}
	if refusal(p) {
		if reason, text, ok := refusalText(p); ok && reason != reasonNoHello {
			return fmt.Errorf("%w: %w: %s", ErrPeerClosed, ErrPeerRefused, text)
		}
		return fmt.Errorf("%w: %w: the listener has acknowledged delivery on; set Acks on the dialer", ErrPeerClosed, ErrAcksOff)
	}
	if len(p) > 0 {
		if what := recogniseProtocol(p); what != "" {
			return fmt.Errorf("%w: %w: %s (first bytes % x)", ErrPeerClosed, ErrWrongProtocol, what, p)
		}
	}
	if errors.Is(cause, io.EOF) {
		if len(p) > 0 {
			return fmt.Errorf("%w, after sending bytes nobody read (% x)", ErrPeerClosed, p)
		}
		return ErrPeerClosed
	}
	return fmt.Errorf("%w: %w", ErrPeerClosed, cause)
}

// refusalText returns the reason and the text of the refusal that p begins
// with, and false if p holds less than the whole of it.
func refusalText(p []byte) (reason byte, text string, ok bool) {
	if len(p) < answerFixed+3 {
		return 0, "", false
	}
	n := int(binary.BigEndian.Uint16(p[answerFixed+1:]))
	if len(p) < answerFixed+3+n {
		return 0, "", false
	}
	return p[answerFixed], string(p[answerFixed+3 : answerFixed+3+n]), true
}

// refusal reports whether p starts with a refusal: the one a listener of
// acknowledged delivery sends a dialer that did not say hello, or the one a
// listener without it sends a dialer whose bytes it could not read. Once it
// has arrived the listener is going to close the connection, and the
// dialer need not wait for that.
func refusal(p []byte) bool {
	return len(p) >= len(ackMagic)+2 && bytes.Equal(p[:len(ackMagic)], ackMagic[:]) && p[len(ackMagic)+1] == typeRefuse
}
