//go:build linux

package buffstreams

import (
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// corkPeer is a listener that counts the messages it receives, for the
// corker's tests.
type corkPeer struct {
	l      *TCPListener
	frames atomic.Int64
}

func newCorkPeer(t *testing.T) *corkPeer {
	t.Helper()
	p := &corkPeer{}
	l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0", MaxMessageSize: 1 << 16,
		Callback: func([]byte) error { p.frames.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	p.l = l
	t.Cleanup(l.Close)
	return p
}

// corkEcho starts a listener that answers each message with itself, on a
// served connection whose corker timer is stopped (only its Writes and its
// read loop move the cork), and dials it. replied, if not nil, runs on the
// served connection after each reply, p, is written; it runs in the read
// loop, so it must not call t's methods.
func corkEcho(t *testing.T, replied func(sc *TCPConn, p []byte)) (served *atomic.Pointer[TCPConn], c *TCPConn) {
	t.Helper()
	served = new(atomic.Pointer[TCPConn])
	l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0", MaxMessageSize: 1 << 16,
		ConnCallback: func(sc *TCPConn, p []byte) error {
			if served.CompareAndSwap(nil, sc) {
				sc.eng.(*syncEngine).ck.stop()
			}
			_, err := sc.Write(p)
			if replied != nil {
				replied(sc, p)
			}
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	c, err = DialTCP(&TCPConnConfig{Address: l.Addr().String(), MaxMessageSize: 1 << 16, ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return served, c
}

// setStreamGaps sets both streamStart and streamGap to d for the test.
func setStreamGaps(t *testing.T, d time.Duration) {
	t.Helper()
	start, gap := streamStart, streamGap
	streamStart, streamGap = d, d
	t.Cleanup(func() { streamStart, streamGap = start, gap })
}

// dialCorked dials p in the default mode, with streamStart and streamGap
// set to gap for the test, and returns the connection and its engine.
func dialCorked(t *testing.T, p *corkPeer, gap time.Duration) (*TCPConn, *syncEngine) {
	t.Helper()
	setStreamGaps(t, gap)
	c, err := DialTCP(&TCPConnConfig{Address: p.l.Addr().String(), MaxMessageSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e, ok := c.eng.(*syncEngine)
	if !ok {
		t.Fatalf("engine %T, want the default mode's", c.eng)
	}
	return c, e
}

// corkSet reports whether TCP_CORK is set on c's socket, without t: for
// goroutines other than the test's.
func corkSet(c *TCPConn) (bool, error) {
	tc, ok := c.current().(*net.TCPConn)
	if !ok {
		return false, fmt.Errorf("no TCP socket")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false, err
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK) }); err != nil {
		return false, err
	}
	return v != 0, serr
}

// sockopts returns whether TCP_CORK is set on c's socket and how many
// segments the socket has sent (tcpi_segs_out).
func sockopts(t *testing.T, c *TCPConn) (corked bool, sent uint32) {
	t.Helper()
	rc, err := c.current().(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v, segs int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK); serr != nil {
			return
		}
		segs, serr = segsOut(fd)
	})
	if err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if segs < 0 {
		t.Skip("tcpi_segs_out cannot be read here")
	}
	return v != 0, uint32(segs)
}

func writeN(t *testing.T, c *TCPConn, n int) {
	t.Helper()
	msg := make([]byte, 110)
	for range n {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCorkPacksAStream checks that frames written back to back leave the
// socket corked, in far fewer segments than frames.
func TestCorkPacksAStream(t *testing.T) {
	p := newCorkPeer(t)
	// A gap of a millisecond makes every Write of the loop part of the
	// stream, however slowly this test runs.
	c, e := dialCorked(t, p, time.Millisecond)
	e.ck.stop() // only the stream decides
	t.Cleanup(e.ck.reopen)
	writeN(t, c, 1) // dials
	_, before := sockopts(t, c)
	const n = 4000
	writeN(t, c, n)
	corked, after := sockopts(t, c)
	if !corked {
		t.Error("the socket is not corked at the end of a stream")
	}
	if segs := after - before; segs > n/20 {
		t.Errorf("%d frames left in %d segments; want at most %d", n, segs, n/20)
	}
}

// TestCorkTimer checks that the timer takes the cork off once a stream
// stops, so that its last frames arrive with no further call.
func TestCorkTimer(t *testing.T) {
	p := newCorkPeer(t)
	c, _ := dialCorked(t, p, time.Millisecond)
	const n = 1000
	writeN(t, c, n)
	deadline := time.Now().Add(5 * time.Second)
	for {
		corked, _ := sockopts(t, c)
		if !corked && p.frames.Load() == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the stream: corked=%v, peer read %d of %d frames", corked, p.frames.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCorkLoneWrite checks that a Write after a pause longer than the
// stream gap takes the cork off: it, and what the kernel held, leave at
// once.
func TestCorkLoneWrite(t *testing.T) {
	p := newCorkPeer(t)
	c, e := dialCorked(t, p, 200*time.Microsecond)
	e.ck.stop() // only the Writes decide
	t.Cleanup(e.ck.reopen)
	for i := range 3 {
		writeN(t, c, 50)
		if corked, _ := sockopts(t, c); !corked {
			t.Fatalf("round %d: a stream did not cork the socket", i)
		}
		time.Sleep(time.Millisecond) // longer than the gap
		writeN(t, c, 1)
		if corked, _ := sockopts(t, c); corked {
			t.Fatalf("round %d: the socket is corked after a lone Write", i)
		}
	}
}

// TestCorkFlushAndRead checks that Flush takes the cork off at once when
// no Write is under way, and that a Read does before it waits.
func TestCorkFlushAndRead(t *testing.T) {
	p := newCorkPeer(t)
	c, e := dialCorked(t, p, time.Second)
	// Hold the timer off so that only Flush can take the cork off.
	e.ck.stop()
	t.Cleanup(e.ck.reopen)
	writeN(t, c, 100)
	if corked, _ := sockopts(t, c); !corked {
		t.Fatal("a stream did not cork the socket")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if corked, _ := sockopts(t, c); corked {
		t.Fatal("the socket is corked after Flush")
	}
	writeN(t, c, 100)
	if corked, _ := sockopts(t, c); !corked {
		t.Fatal("a stream did not cork the socket")
	}
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16)) // the peer never answers: ends with Close
		read <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for corked, _ := sockopts(t, c); corked; corked, _ = sockopts(t, c) {
		if time.Now().After(deadline) {
			t.Fatal("the socket is still corked 5 s into a Read")
		}
		time.Sleep(time.Millisecond)
	}
	c.Close()
	<-read
}

// TestCorkClose checks that Close takes the cork off before it waits for
// the peer's TCP to acknowledge what was written: with the timer held off,
// a corked tail would otherwise wait for the kernel's 200 ms, past a
// WriteTimeout of 50 ms, and be reported as unacknowledged.
func TestCorkClose(t *testing.T) {
	p := newCorkPeer(t)
	setStreamGaps(t, time.Millisecond)
	c, err := DialTCP(&TCPConnConfig{Address: p.l.Addr().String(), MaxMessageSize: 1 << 16, WriteTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := c.eng.(*syncEngine)
	e.ck.stop()
	writeN(t, c, 100)
	if corked, _ := sockopts(t, c); !corked {
		t.Fatal("a stream did not cork the socket")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if st := c.Stats(); st.MessagesWritten != 100 || st.WriteErrors != 0 {
		t.Fatalf("written %d, failed %d; want 100, 0", st.MessagesWritten, st.WriteErrors)
	}
}

// slowPeer returns a connection in the default mode, with its timer held
// off and streamStart and streamGap set to 10 ms, to a peer that reads at
// most 32 KiB a millisecond, and the size of a message that takes more
// than 20 ms to write to it.
func slowPeer(t *testing.T) (*TCPConn, int) {
	t.Helper()
	const buf = 32 << 10
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, buf)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		b := make([]byte, buf)
		for {
			if _, err := nc.Read(b); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	setStreamGaps(t, 10*time.Millisecond)
	c, err := DialTCP(&TCPConnConfig{Address: ln.Addr().String(), MaxMessageSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := c.eng.(*syncEngine)
	e.ck.stop() // only the Writes decide
	t.Cleanup(e.ck.reopen)
	writeN(t, c, 1) // dials
	if err := c.current().(*net.TCPConn).SetWriteBuffer(buf); err != nil {
		t.Fatal(err)
	}
	// The two kernels hold at most a few buffers' worth: the rest of
	// 2 MiB takes the peer at least one read, and a millisecond, per buf.
	return c, 2 << 20
}

// writeSlow writes a message of size bytes on c and fails the test unless
// that took more than twice streamGap.
func writeSlow(t *testing.T, c *TCPConn, size int) {
	t.Helper()
	start := time.Now()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 2*streamGap {
		t.Fatalf("the large Write took %v; the test needs it to take more than %v", took, 2*streamGap)
	}
}

// TestCorkSlowWriteKeepsStream checks that a Write that took long, because
// its peer reads slowly, does not take the cork off the Write that follows
// it at once: inside a stream, the pause is counted from the end of the
// previous write.
func TestCorkSlowWriteKeepsStream(t *testing.T) {
	c, size := slowPeer(t)
	writeN(t, c, 10)
	if corked, _ := sockopts(t, c); !corked {
		t.Fatal("a stream did not cork the socket")
	}
	writeSlow(t, c, size)
	writeN(t, c, 1)
	if corked, _ := sockopts(t, c); !corked {
		t.Error("a Write right after a slow one took the cork off")
	}
}

// TestCorkSlowWriteStartsNoStream checks that a Write that follows a slow
// uncorked one at once does not cork the socket: a stream starts only with
// Writes that start close together. (The end of a write can be stamped
// late, when the thread loses the processor to the peer it woke; a request
// sent right after would then be held under the cork.)
func TestCorkSlowWriteStartsNoStream(t *testing.T) {
	c, size := slowPeer(t)
	time.Sleep(2 * streamGap) // the first Write, which dialed, is no stream with the next
	writeSlow(t, c, size)
	if corked, _ := sockopts(t, c); corked {
		t.Fatal("the socket is corked after a lone Write")
	}
	writeN(t, c, 1)
	if corked, _ := sockopts(t, c); corked {
		t.Error("a Write right after a slow uncorked one corked the socket")
	}
}

// TestCorkRepliesLeaveWhenCaughtUp checks that replies a ConnCallback
// writes to pipelined requests leave once the listener's read loop has
// delivered every request that arrived, rather than when the cork's timer,
// or the kernel's 200 ms limit, ends the cork.
func TestCorkRepliesLeaveWhenCaughtUp(t *testing.T) {
	setStreamGaps(t, time.Second) // every reply after the first is part of a stream
	served, c := corkEcho(t, nil)
	const n = 10
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = make([]byte, 110)
	}
	if _, err := c.WriteBatch(msgs); err != nil { // one system call: the requests arrive together
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	for i := range n {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	// The replies after the first were written corked, and only an uncork
	// clears TCP_CORK: the kernel's own limit sends them but leaves it set.
	if corked, _ := sockopts(t, served.Load()); corked {
		t.Error("the served connection is still corked after its replies arrived")
	}
}

// TestCorkStreamResumes checks that a stream that a pause uncorked resumes
// with the Write after the next, even though the Write after the pause went
// out alone and took long: within corkQuiet of the stream's last Write, a
// Write that starts soon after the previous one returned carries it on.
func TestCorkStreamResumes(t *testing.T) {
	c, size := slowPeer(t)
	old := corkQuiet
	corkQuiet = 10 * time.Second // the timer is held off: only the rule reads it
	t.Cleanup(func() { corkQuiet = old })
	writeN(t, c, 10)
	if corked, _ := sockopts(t, c); !corked {
		t.Fatal("a stream did not cork the socket")
	}
	time.Sleep(2 * streamGap) // a pause: the next Write takes the cork off
	writeSlow(t, c, size)
	if corked, _ := sockopts(t, c); corked {
		t.Fatal("the socket is corked after a pause")
	}
	writeN(t, c, 1)
	if corked, _ := sockopts(t, c); !corked {
		t.Error("the stream did not resume after its pause")
	}
}

// TestCorkRequestAfterReplyStartsNoStream checks that a Write after a Read
// that waited for the peer, or after Flush, goes out uncorked, however soon
// it follows the previous Write: a request whose reply came back quickly is
// no stream. The served side's replies, one per request, stay uncorked for
// the same reason: its read loop waits between them.
func TestCorkRequestAfterReplyStartsNoStream(t *testing.T) {
	setStreamGaps(t, time.Hour) // by timing alone, every Write after the first streams
	// The served side looks at its socket after each reply to a lone
	// request (marked by a first byte of 1), from its read loop: it only
	// counts, and the test reads the counts.
	var checked, corkedReplies, failed atomic.Int32
	_, c := corkEcho(t, func(sc *TCPConn, p []byte) {
		if p[0] != 1 {
			return
		}
		if corked, err := corkSet(sc); err != nil {
			failed.Add(1)
		} else if corked {
			corkedReplies.Add(1)
		}
		checked.Add(1)
	})
	e := c.eng.(*syncEngine)
	e.ck.stop()
	t.Cleanup(e.ck.reopen)
	req, buf := make([]byte, 110), make([]byte, 1<<16)
	req[0] = 1
	const rounds = 20
	for i := range rounds {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if corked, _ := sockopts(t, c); corked {
			t.Fatalf("request %d: the socket is corked", i)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	// The read loop looked at reply i before it read request i+1, so
	// every reply but the last has been looked at.
	if n := checked.Load(); n < rounds-1 || failed.Load() > 0 || corkedReplies.Load() > 0 {
		t.Fatalf("of %d replies to lone requests looked at, %d were corked and %d could not be looked at", n, corkedReplies.Load(), failed.Load())
	}
	// Timing still decides once nothing was asked: two Writes in a row
	// are a stream.
	writeN(t, c, 2)
	if corked, _ := sockopts(t, c); !corked {
		t.Fatal("two Writes in a row did not cork the socket")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	writeN(t, c, 1)
	if corked, _ := sockopts(t, c); corked {
		t.Fatal("the socket is corked by the first Write after Flush")
	}
}
