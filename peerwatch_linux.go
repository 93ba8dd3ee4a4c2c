package buffstreams

import (
	"encoding/binary"
	"syscall"
)

// tcpEstablished is tcpi_state of an open TCP connection whose peer has not
// closed its side.
const tcpEstablished = 1

// shutByPeer reports whether the TCP socket fd has left the established
// state: its peer closed its side or reset it, even if bytes it sent are
// still unread. The state is the first byte of struct tcp_info.
func shutByPeer(fd uintptr) bool {
	v, err := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO)
	if err != nil {
		return false // not TCP: a Unix domain socket
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(v))
	return b[0] != tcpEstablished
}
