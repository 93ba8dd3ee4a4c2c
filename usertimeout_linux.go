package buffstreams

import (
	"net"
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT, which the syscall package does not
// define on every architecture; Linux gives it the same number on all.
const tcpUserTimeout = 0x12

// setUserTimeout makes the kernel give up on nc, a TCP socket possibly
// under TLS, when data it sent stays unacknowledged for d, and fail its
// reads and writes with ETIMEDOUT. A d of zero leaves the system's default
// (retransmissions until tcp_retries2, about 15 minutes). Other kinds of
// connection are left alone.
func setUserTimeout(nc net.Conn, d time.Duration) {
	rc := rawTCP(nc)
	if rc == nil || d <= 0 {
		return
	}
	ms := int(min(d.Milliseconds(), maxHeartbeatTimeout.Milliseconds()))
	rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, ms)
	})
}
