//go:build unix

package buffstreams

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawReader reads a socket through its syscall.RawConn, so that a
// connection waiting for bytes holds no read buffer: when a non-blocking
// read finds nothing and nothing is buffered, the buffer goes back to the
// pool before the goroutine parks, and is taken again when the socket is
// readable. Ten thousand idle connections then cost their goroutines and
// sockets, not 64 KiB each. Deadlines apply as to a plain Read.
//
// A reader that finds the socket empty parks at once. (It used to spin for
// a few microseconds first, so that a stream of small writes would not pay
// for waking it; with the writer corking a stream, its frames arrive in
// full segments, and the spin measured no faster.)
type rawReader struct {
	rc   syscall.RawConn
	fr   *frameReader // the reader being filled, during read
	n    int
	err  error
	call func(fd uintptr) bool // made once, so that a read does not allocate
}

// newRawReader returns a rawReader for sockets, and nil for other readers
// (TLS connections, pipes), which are read through their Read method.
func newRawReader(src io.Reader) *rawReader {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawReader{rc: rc}
	r.call = r.once
	return r
}

func (r *rawReader) readInto(fr *frameReader) (int, error) {
	r.fr, r.n, r.err = fr, 0, nil
	err := r.rc.Read(r.call)
	r.fr = nil
	if err != nil {
		// A deadline, or the socket was closed. Name the operation as a
		// plain Read would.
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "raw-read" {
			e := *oe
			e.Op = "read"
			err = &e
		}
		return 0, err
	}
	return r.n, r.err
}

// once tries one non-blocking read. It returns false to wait for the
// socket to become readable.
func (r *rawReader) once(fd uintptr) bool {
	fr := r.fr
	fr.take()
	n, err := readFD(fd, fr.buf[fr.w:])
	if err == syscall.EAGAIN {
		fr.release()
		return false
	}
	switch {
	case err != nil:
		r.err = os.NewSyscallError("read", err)
	case n == 0:
		r.err = io.EOF
	default:
		r.n = n
	}
	return true
}

// readFD reads from a non-blocking socket, retrying when interrupted.
func readFD(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), b)
		if err != syscall.EINTR {
			return n, err
		}
	}
}
