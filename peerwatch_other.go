//go:build !unix

package buffstreams

import (
	"net"
	"syscall"
)

// watchable returns nil: the peer watch needs a Unix socket.
func watchable(nc net.Conn) syscall.RawConn { return nil }

// probePeer is never called where watchable returns nil.
func probePeer(fd uintptr) (why error, settled bool) { return nil, false }
