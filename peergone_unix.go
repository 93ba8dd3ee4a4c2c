//go:build unix

package buffstreams

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// peerGone reports, without consuming anything, whether the peer of nc has
// already closed or reset the connection, or, if nothing has been read from
// it, answered in another protocol (a TLS server's alert to a plain
// client): it peeks at the socket's receive queue. It returns nil when the
// peer may still be there, or when the socket cannot be peeked at.
func peerGone(nc net.Conn, w wire, readAny bool) error {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
		readAny = true // the bytes are TLS records, not the peer's protocol
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var b [16]byte
	var n int
	var rerr error
	// Control does not wait for a Read in progress. Go's sockets are
	// non-blocking, so the peek returns at once.
	if err := rc.Control(func(fd uintptr) {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
	}); err != nil {
		return nil
	}
	switch {
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EWOULDBLOCK), errors.Is(rerr, syscall.EINTR):
		return nil
	case rerr != nil:
		return fmt.Errorf("%w: the peer reset the connection: %w", ErrPeerClosed, rerr)
	case n == 0:
		return fmt.Errorf("%w before Close", ErrPeerClosed)
	case !readAny:
		if what := recognise(b[:n], w); what != "" {
			return fmt.Errorf("%w: %s (first bytes % x)", ErrWrongProtocol, what, b[:min(n, 8)])
		}
	}
	return nil
}
