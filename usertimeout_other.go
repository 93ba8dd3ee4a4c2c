//go:build !linux

package buffstreams

import (
	"net"
	"time"
)

// setUserTimeout does nothing: TCP_USER_TIMEOUT is Linux's. Elsewhere a
// sender that vanished is noticed by TCP keep-alive (the listener's
// KeepAlive), or when an acknowledgement or heartbeat runs out of
// retransmissions.
func setUserTimeout(net.Conn, time.Duration) {}
