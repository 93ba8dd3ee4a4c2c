package buffstreams

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// This file bounds how long a connection in plain mode writes into a peer
// that takes nothing (TCPConnConfig.StallTimeout).
//
// On a TCP socket on Linux the kernel keeps the bound: TCP_USER_TIMEOUT
// makes it abort a connection whose written bytes stay unacknowledged for
// that long, whether the peer's host or the network to it went away (the
// retransmissions go unanswered) or the peer's process stopped reading (its
// window stays shut and the window probes are answered with a shut window).
// A peer that reads, however slowly, opens its window and acknowledges,
// which resets the clock. The write blocked on the socket then fails with
// ETIMEDOUT (or the last ICMP error, such as EHOSTUNREACH), and an idle
// connection's peer watch finds the same error. This costs nothing per
// write, and it also bounds a sender that writes so little that no write
// ever blocks: its bytes would otherwise sit unacknowledged in the send
// buffer until tcp_retries2 runs out, about 15 minutes later.
//
// Elsewhere, and on sockets that are not TCP, a write deadline keeps the
// bound: a write that makes no progress for StallTimeout fails; one that
// makes some is given another StallTimeout. It is weaker. It sees only
// writes that block, so bytes that fit in the send buffer are not bounded
// by it. And it sees the kernel take bytes, not the peer acknowledge them:
// a blocked writer is woken only once half of its send buffer has been
// acknowledged, so a reader slower than half the send buffer per
// StallTimeout (70 KB/s with 4 MiB and the default bound) is cut off. It
// costs a deadline set per write, at most once per eighth of StallTimeout.

// defaultStallTimeout is the StallTimeout used when the configuration
// leaves it zero.
const defaultStallTimeout = 30 * time.Second

// stallTimeout returns the effective StallTimeout for the configured one:
// zero, the bound being off, for a negative setting.
func stallTimeout(d time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d == 0:
		return defaultStallTimeout
	}
	return d
}

// noKernelBound, set by tests, makes connections bound a stall with the
// write deadline even where the kernel could.
var noKernelBound atomic.Bool

// tcpOf returns the TCP socket under nc, beneath TLS, or nil.
func tcpOf(nc net.Conn) *net.TCPConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tcp, _ := nc.(*net.TCPConn)
	return tcp
}

// kernelBound asks the kernel to fail nc's socket once written bytes stay
// unacknowledged for d, and reports whether it will.
func kernelBound(nc net.Conn, d time.Duration) bool {
	tcp := tcpOf(nc)
	if tcp == nil || noKernelBound.Load() {
		return false
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	return setUserTimeout(rc, d)
}

// A silentError is ErrPeerSilent with the error that showed it.
type silentError struct{ err error }

func (e silentError) Error() string   { return ErrPeerSilent.Error() + ": " + e.err.Error() }
func (e silentError) Unwrap() []error { return []error{ErrPeerSilent, e.err} }
func (e silentError) Timeout() bool   { return true }
func (e silentError) Temporary() bool { return false }

// silent reports whether err is the system's error for a connection whose
// peer stopped answering: the kernel gave up retransmitting or probing, and
// names either the timeout or the last ICMP error it had.
func silent(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTDOWN)
}

// silence returns err as an ErrPeerSilent if it says the peer went silent,
// and err otherwise.
func silence(err error) error {
	if err != nil && silent(err) && !errors.Is(err, ErrPeerSilent) {
		return silentError{err}
	}
	return err
}

// writeError names the error of a failed write on nc: ErrPeerSilent,
// ErrWriteTimeout, the peer's end as the peer watch found it, or the
// network error.
func (c *TCPConn) writeError(nc net.Conn, err error) error {
	switch {
	case errors.Is(err, ErrPeerSilent):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrWriteTimeout, err)
	case silent(err):
		return silentError{err}
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		// A dead socket tells its error once: if the peer watch took it,
		// the write sees only a broken pipe.
		if why := c.watchVerdict(nc); why != nil {
			return why
		}
	}
	return fmt.Errorf("buffstreams: write: %w", err)
}

// watchVerdict waits for the peer watch of nc, which wakes when the socket
// dies, and returns why the peer left as it found it; nil if nc has no
// watch or the watch found nothing.
func (c *TCPConn) watchVerdict(nc net.Conn) error {
	w := c.watch.Load()
	if w == nil || w.nc != nc || w.stop.Load() {
		return nil
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	}
	if p := w.gone.Load(); p != nil {
		w.told.Store(true)
		return *p
	}
	return nil
}

// boundedWrite writes as put does, under the write deadline's bound on a
// stall: each time the deadline passes, the write goes on with a new one if
// it made progress, and fails with ErrPeerSilent if it made none. until,
// if not zero, is the caller's own deadline (WriteTimeout's, or the final
// flush's), which ends the write with os.ErrDeadlineExceeded.
func (s *sender) boundedWrite(nc net.Conn, segs [][]byte, off int, until time.Time) (int, error) {
	stall := s.c.opts.stall
	written := 0
	for {
		now := time.Now()
		guard := now.Add(stall)
		if !until.IsZero() && !until.After(guard) {
			nc.SetWriteDeadline(until)
			s.guard = time.Time{}
		} else if s.guardNC != nc || s.guard.Before(now.Add(stall-stall/8)) {
			// The deadline is moved on only once an eighth of the bound
			// has passed: a stall fails after 7/8 of StallTimeout or more.
			nc.SetWriteDeadline(guard)
			s.guard, s.guardNC = guard, nc
		}
		n, err := s.writeSegs(nc, segs, off+written)
		written += n
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !until.IsZero() && !time.Now().Before(until) {
			return written, err
		}
		if n < minProgress {
			return written, silentError{fmt.Errorf("no write progress for %v: %w", stall, err)}
		}
		s.guardNC = nil // progress: a new bound from now
	}
}

// minProgress is the least a write must move in StallTimeout to count as
// progress under boundedWrite. A peer that stopped reading still lets the
// kernel take a hundred bytes or so now and then, as it compacts its
// receive queue (measured on Linux through a frozen proxy: about 100 bytes
// a second, for seconds); a reader, however slow, frees at least a segment
// at a time, and a blocked writer is woken only once half its send buffer
// is free.
const minProgress = 4 << 10
