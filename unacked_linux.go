package buffstreams

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// countable returns the socket of nc if the bytes its peer's TCP has not
// acknowledged can be read from it: a plain TCP socket. Beneath TLS the
// bytes on the wire are records, which frames cannot be matched to.
func countable(nc net.Conn) syscall.RawConn {
	if _, ok := nc.(*net.TCPConn); !ok {
		return nil
	}
	return rawTCP(nc)
}

// outq returns how many bytes written on the socket fd its peer's TCP has
// not acknowledged, sent or not (SIOCOUTQ, which is TIOCOUTQ).
func outq(fd uintptr) (int, bool) {
	var v int32
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&v)))
	return int(v), e == 0
}

// unackedBytes is outq for the socket of rc; false if it is closed.
func unackedBytes(rc syscall.RawConn) (n int, ok bool) {
	if rc.Control(func(fd uintptr) { n, ok = outq(fd) }) != nil {
		return 0, false
	}
	return n, ok
}

// siocOutqNsd is SIOCOUTQNSD, which the syscall package does not name.
const siocOutqNsd = 0x894b

// unsentBytes returns how many bytes written on the socket of rc a reset
// keeps from its peer: those the kernel has not sent yet, while the
// connection lives (SIOCOUTQNSD). Bytes sent and not yet acknowledged may
// be in the peer's receive queue already, its acknowledgement on the way,
// and a reset does not take them back: the peer's process reads them. Once
// the connection has ended (the peer reset it, or the kernel gave up on a
// silent peer), nothing more is sent, and every byte the peer's TCP has not
// acknowledged counts (SIOCOUTQ). False if the socket is closed.
func unsentBytes(rc syscall.RawConn) (n int, ok bool) {
	err := rc.Control(func(fd uintptr) {
		if s, tcp := tcpState(fd); tcp && s == tcpClose {
			n, ok = outq(fd)
			return
		}
		var v int32
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, siocOutqNsd, uintptr(unsafe.Pointer(&v)))
		n, ok = int(v), e == 0
	})
	if err != nil {
		return 0, false
	}
	return n, ok
}

// resetOnClose makes closing the socket of rc reset the connection and
// discard what it has not sent (SO_LINGER with a zero timeout).
func resetOnClose(rc syscall.RawConn) {
	rc.Control(func(fd uintptr) {
		syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
	})
}

// tcpClose is tcpi_state of a TCP connection that has ended: reset by its
// peer, or aborted by the kernel.
const tcpClose = 7

// tcpState returns the TCP state of the socket fd, the first byte of
// struct tcp_info; false if it is not a TCP socket.
func tcpState(fd uintptr) (byte, bool) {
	v, err := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO)
	if err != nil {
		return 0, false
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(v))
	return b[0], true
}

// socketError returns why the connection of rc ended, if it has: the
// socket's pending error, as ErrPeerSilent when the kernel gave up on a
// silent peer. The error is taken from the socket.
func socketError(rc syscall.RawConn) error {
	var err error
	rc.Control(func(fd uintptr) {
		if s, ok := tcpState(fd); !ok || s != tcpClose {
			return
		}
		e, gerr := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		switch {
		case gerr != nil || e == 0:
			err = fmt.Errorf("%w: the connection has ended", ErrPeerClosed)
		case silent(syscall.Errno(e)):
			err = silentError{os.NewSyscallError("connection", syscall.Errno(e))}
		default:
			err = fmt.Errorf("%w: %w", ErrPeerClosed, os.NewSyscallError("connection", syscall.Errno(e)))
		}
	})
	return err
}

// A rawWrite is the write in progress on a counted socket (see
// tally.write).
type rawWrite struct {
	segs  [][]byte
	spans []span
	pos   int // offset in the run of the next byte to write
	stop  int // length of the run
	k     int // index in spans of the first frame not yet whole in the kernel
	n     int // bytes written by this call
	err   error
	fd    uintptr
	iov   [4]syscall.Iovec
	call  func(fd uintptr) bool // t.step, made once
	ask   func() (uint64, bool) // t.ackedNow, made once
}

// write writes the run of frames segs, whose spans are given, from byte off
// on, as sender.writeSegs does, and records each frame in the log as the kernel
// takes the last of its bytes. With direct, it first writes what the
// socket takes at once on the tally's descriptor, if it has one (see
// tally), and goes through the poller only to wait for room; the deadline
// until, if not zero, is set on the socket only then, as only a wait can
// outlast it. Without direct, the deadline is set and the write goes
// through the poller from the start.
func (t *tally) write(segs [][]byte, spans []span, off int, until time.Time, direct bool) (int, error) {
	w := &t.w
	if w.call == nil {
		w.call, w.ask = t.step, t.ackedNow
	}
	w.segs, w.spans, w.pos, w.stop, w.k, w.n, w.err = segs, spans, off, spans[len(spans)-1].end, whole(spans, off), 0, nil
	var err error
	if !direct || !t.direct() {
		if !until.IsZero() {
			t.nc.SetWriteDeadline(until)
		}
		err = t.rc.Write(w.call) // a deadline's or a close's error, as an OpError
	}
	if w.err != nil {
		err = &net.OpError{Op: "write", Net: t.nc.LocalAddr().Network(), Source: t.nc.LocalAddr(), Addr: t.nc.RemoteAddr(), Err: w.err}
	} else if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Op = "write"
		err = &e
	}
	n := w.n
	w.segs, w.spans, w.err = nil, nil, nil
	return n, err
}

// step writes what it can of the run without blocking, under the tally's
// lock, and reports whether the write is over. rc.Write calls it.
func (t *tally) step(fd uintptr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stepLocked(fd)
}

// direct is step on the tally's own descriptor (see tally): it reports
// whether the write is over, and false also when the tally has no
// descriptor to write on.
func (t *tally) direct() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return false
	}
	if !t.stepLocked(uintptr(t.fd)) {
		t.waits++
		return false
	}
	return true
}

// stepLocked is step with t.mu held.
func (t *tally) stepLocked(fd uintptr) bool {
	w := &t.w
	if t.sealed {
		w.err = net.ErrClosed // the socket is being closed
		return true
	}
	w.fd = fd
	for w.pos < w.stop {
		n, err := w.sys(fd)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			w.err = os.NewSyscallError("write", err)
			t.broken = true
			return true
		case n == 0:
			w.err = io.ErrUnexpectedEOF
			return true
		}
		t.taken(n)
	}
	return true
}

// sys makes one write system call with the bytes of the run from w.pos on.
func (w *rawWrite) sys(fd uintptr) (int, error) {
	off, cnt := w.pos, 0
	var one []byte
	for _, b := range w.segs {
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b, off = b[off:], 0
		one = b
		w.iov[cnt].Base = &b[0]
		w.iov[cnt].SetLen(len(b))
		cnt++
	}
	if cnt == 1 {
		// send(2), not write(2): the same on a stream socket, without
		// write(2)'s file layer (vfs_write and sock_write_iter took 8% of
		// all samples in a perf profile of test/bench's cork column, which
		// writes with write(2)).
		w.iov[0] = syscall.Iovec{}
		n, err := sendOne(fd, one)
		return max(n, 0), err
	}
	r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(cnt))
	w.iov = [4]syscall.Iovec{}
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// taken counts n more bytes taken by the kernel and records the frames they
// complete. t.mu is held.
func (t *tally) taken(n int) {
	w := &t.w
	base := t.total
	t.total += uint64(n)
	w.n += n
	w.k = t.log.recordSpans(w.spans, w.k, w.pos+n, w.pos, base, t.tlen, w.ask)
	w.pos += n
}

// ackedNow returns the stream offset up to which the peer's TCP has
// acknowledged. It is called during step, with t.mu held.
func (t *tally) ackedNow() (uint64, bool) {
	q, ok := outq(t.w.fd)
	if !ok {
		return 0, false
	}
	return t.total - min(uint64(q), t.total), true
}
