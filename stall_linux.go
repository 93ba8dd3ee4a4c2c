package buffstreams

import (
	"math"
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT of linux/tcp.h, which the syscall
// package does not define on every architecture.
const tcpUserTimeout = 0x12

// setUserTimeout sets the TCP_USER_TIMEOUT of the socket of rc to d: the
// kernel aborts the connection once written bytes have stayed
// unacknowledged for d, or, with keep-alive, once an idle connection has
// not heard from its peer for d and a probe went unanswered.
func setUserTimeout(rc syscall.RawConn, d time.Duration) bool {
	ms := int(min(max(d.Milliseconds(), 1), math.MaxInt32))
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, ms)
	})
	return err == nil && serr == nil
}
