//go:build !linux

package buffstreams

import (
	"net"
	"time"
)

// setUserTimeout does nothing: TCP_USER_TIMEOUT is Linux's. Elsewhere a
// sender that vanished is noticed when TCP gives up retransmitting the
// heartbeats and acknowledgements it never acknowledged, after minutes;
// TCP keep-alive does not probe while they are in flight.
func setUserTimeout(net.Conn, time.Duration) {}
