//go:build !linux

package buffstreams

import (
	"net"
	"syscall"
	"time"
)

// countable returns nil: only Linux tells how many bytes a peer's TCP has
// not acknowledged.
func countable(nc net.Conn) syscall.RawConn { return nil }

func unackedBytes(rc syscall.RawConn) (int, bool) { return 0, false }
func unsentBytes(rc syscall.RawConn) (int, bool)  { return 0, false }
func resetOnClose(rc syscall.RawConn)             {}
func socketError(rc syscall.RawConn) error        { return nil }

// rawWrite is only used on Linux.
type rawWrite struct{}

// write is never called: a tally has no socket to count outside Linux.
func (t *tally) write(segs [][]byte, spans []span, off int, until time.Time, direct bool) (int, error) {
	panic("unreachable")
}
