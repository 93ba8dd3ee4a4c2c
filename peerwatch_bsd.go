//go:build unix && !linux

package buffstreams

// shutByPeer reports whether the peer of socket fd has closed or reset it
// even though bytes it sent are unread. Only Linux tells that without
// reading the bytes; elsewhere the watch learns of such a peer from the
// reset that the next write draws.
func shutByPeer(fd uintptr) bool { return false }
