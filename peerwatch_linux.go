package buffstreams

// tcpEstablished is tcpi_state of an open TCP connection whose peer has not
// closed its side.
const tcpEstablished = 1

// shutByPeer reports whether the TCP socket fd has left the established
// state: its peer closed its side or reset it, even if bytes it sent are
// still unread.
func shutByPeer(fd uintptr) bool {
	s, ok := tcpState(fd) // not ok: a Unix domain socket
	return ok && s != tcpEstablished
}
