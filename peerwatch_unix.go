//go:build unix

package buffstreams

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"syscall"
)

// watchable returns the socket of nc, a TCP or Unix socket or a TLS
// connection over one, or nil. The watch holds the socket's read lock
// while it waits, so it watches only connections that never read during a
// write: not a TLS connection whose handshake a DialContext left to the
// first Write, nor a wrapper of unknown type.
func watchable(nc net.Conn) syscall.RawConn {
	if tc, ok := nc.(*tls.Conn); ok {
		if !tc.ConnectionState().HandshakeComplete {
			return nil
		}
		nc = tc.NetConn()
	}
	var sc syscall.Conn
	switch s := nc.(type) {
	case *net.TCPConn:
		sc = s
	case *net.UnixConn:
		sc = s
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// peekLen is how many unread bytes probePeer looks at, to name the
// protocol of a peer that answered and left, or to find a refusal.
const peekLen = answerFixed + 3 + maxReasonText

// probePeer looks at the socket fd without taking bytes from it. It returns
// settled false while the peer is there, and otherwise why it left. A
// socket with unread bytes is there unless they are a refusal of
// acknowledged delivery, or the peer has also shut the socket, which only
// some systems tell (shutByPeer).
func probePeer(fd uintptr) (why error, settled bool) {
	var p [peekLen]byte
	for {
		n, _, err := syscall.Recvfrom(int(fd), p[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return nil, false
		case err != nil:
			return peerError(os.NewSyscallError("recv", err), nil), true
		case n == 0:
			return peerError(io.EOF, nil), true
		case refusal(p[:n]) || shutByPeer(fd):
			return peerError(io.EOF, p[:n]), true
		}
		return nil, false
	}
}
