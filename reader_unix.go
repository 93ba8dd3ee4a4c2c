//go:build unix

package buffstreams

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
)

// rawReader reads a socket through its syscall.RawConn, so that a
// connection waiting for bytes holds no read buffer: when a non-blocking
// read finds nothing and nothing is buffered, the buffer goes back to the
// pool before the goroutine parks, and is taken again when the socket is
// readable. Ten thousand idle connections then cost their goroutines and
// sockets, not 64 KiB each. Deadlines apply as to a plain Read.
//
// A reader that parks whenever it has drained the socket makes the peer pay
// for waking it: on loopback the writer's next system call wakes the
// parked thread, and a stream of small writes pays that on every one. So a
// reader whose recent waits for bytes were short (a steady stream, each
// write a few microseconds after the last) spins for a while before it
// parks, yielding its processor and trying the socket again, for up to
// twice its typical wait and never more than spinLimit. A connection whose
// waits are longer (a request now and then, an idle one) parks at once, as
// spinning there would cost more processor time than parking does.
type rawReader struct {
	rc   syscall.RawConn
	fr   *frameReader // the reader being filled, during read
	n    int
	err  error
	call func(fd uintptr) bool // made once, so that a read does not allocate

	wait   time.Duration // smoothed time a read waited for bytes, once it had to; 0 until one did
	waited time.Time     // when the read in progress found the socket empty; zero if it did not
}

// spinLimit is the longest a reader spins before it parks, and twice the
// longest typical wait for which it spins at all: beyond it, parking and
// being woken costs less processor time than spinning.
const spinLimit = 10 * time.Microsecond

// maxWaitSample caps one wait's weight in rawReader.wait, so that a
// connection that was idle for long becomes a spinning one again after
// some twenty short waits.
const maxWaitSample = time.Millisecond

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

func (r *rawReader) read(fr *frameReader) (int, error) {
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

// once tries one non-blocking read, spinning first if the connection is a
// busy one (see rawReader). It returns false to wait for the socket to
// become readable.
func (r *rawReader) once(fd uintptr) bool {
	fr := r.fr
	fr.take()
	n, err := readFD(fd, fr.buf[fr.w:])
	if err == syscall.EAGAIN {
		if r.waited.IsZero() {
			r.waited = time.Now()
		}
		if r.busy() {
			n, err = r.spin(fd, fr)
		}
		if err == syscall.EAGAIN {
			fr.release()
			return false
		}
	}
	if !r.waited.IsZero() {
		r.learn(time.Since(r.waited))
		r.waited = time.Time{}
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

// spin tries the socket again, yielding the processor between tries, for
// up to twice the typical wait, and returns the first read that did not
// find it empty, or EAGAIN.
func (r *rawReader) spin(fd uintptr, fr *frameReader) (int, error) {
	until := r.waited.Add(2 * r.wait)
	for {
		runtime.Gosched()
		n, err := readFD(fd, fr.buf[fr.w:])
		if err != syscall.EAGAIN || !time.Now().Before(until) {
			return n, err
		}
	}
}

// busy reports whether the connection's typical wait for bytes is short
// enough to spin for.
func (r *rawReader) busy() bool { return r.wait > 0 && r.wait < spinLimit/2 }

// learn folds one wait for bytes into the smoothed wait.
func (r *rawReader) learn(d time.Duration) {
	d = min(d, maxWaitSample)
	if r.wait == 0 {
		r.wait = d
		return
	}
	r.wait += (d - r.wait) / 8
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
