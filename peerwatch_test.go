//go:build unix

package buffstreams_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// peerServer is a plain TCP listener whose accepted connections the test
// closes, resets or reads as it needs.
type peerServer struct {
	ln    net.Listener
	conns chan *net.TCPConn
}

func newPeerServer(t *testing.T) *peerServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &peerServer{ln: ln, conns: make(chan *net.TCPConn, 8)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- nc.(*net.TCPConn)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		close(s.conns)
		for nc := range s.conns {
			nc.Close()
		}
	})
	return s
}

// next returns the next accepted connection.
func (s *peerServer) next(t *testing.T) *net.TCPConn {
	t.Helper()
	select {
	case nc := <-s.conns:
		t.Cleanup(func() { nc.Close() })
		return nc
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted within 10 s")
		return nil
	}
}

// readFrames reads n messages of the default framing from nc and returns
// them.
func readFrames(t *testing.T, nc net.Conn, n int) []string {
	t.Helper()
	r, err := bs.NewConn(nc, &bs.TCPConnConfig{ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	b := make([]byte, r.MaxMessageSize())
	for range n {
		k, err := r.Read(b)
		if err != nil {
			t.Fatalf("reading a message: %v", err)
		}
		got = append(got, string(b[:k]))
	}
	return got
}

// peerCloses waits until c has found its peer gone n times in all.
func peerCloses(t *testing.T, c *bs.TCPConn, n uint64) {
	t.Helper()
	eventually(t, "the peer's end noticed", func() bool { return c.Stats().PeerCloses >= n })
	if got := c.Stats().PeerCloses; got != n {
		t.Fatalf("PeerCloses = %d, want %d", got, n)
	}
}

// nextWriteFails waits until c has found its peer gone, and checks that
// the Write of msg then fails with an error matching every one of wants.
func nextWriteFails(t *testing.T, c *bs.TCPConn, msg []byte, wants ...error) {
	t.Helper()
	peerCloses(t, c, 1)
	_, err := c.Write(msg)
	for _, w := range wants {
		if !errors.Is(err, w) {
			t.Fatalf("Write after the peer left = %v, want an error matching %v", err, wants)
		}
	}
	t.Log(err)
}

// endPeer ends the server side of a connection: with a FIN, or a reset.
func endPeer(t *testing.T, nc *net.TCPConn, reset bool) {
	t.Helper()
	if reset {
		if err := nc.SetLinger(0); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPeerWatchNextWriteFails checks that a dialed connection nobody reads
// notices that its idle peer closed or reset it, so that the next Write
// fails at once with ErrPeerClosed, its message passed to OnWriteError and
// not written into the dead socket, and the Write after that dials again.
func TestPeerWatchNextWriteFails(t *testing.T) {
	for _, reset := range []bool{false, true} {
		for _, batch := range []bool{false, true} {
			name := map[bool]string{false: "close", true: "reset"}[reset] + map[bool]string{false: "/sync", true: "/batch"}[batch]
			t.Run(name, func(t *testing.T) {
				leakCheck(t)
				s := newPeerServer(t)
				hooked := newSeqLog()
				cfg := bs.TCPConnConfig{Address: s.ln.Addr().String(), OnWriteError: hooked.hook}
				if batch {
					cfg.WriteBufferSize = 4096
				}
				c := dialAddr(t, cfg.Address, cfg)
				endPeer(t, s.next(t), reset)
				peerCloses(t, c, 1)

				_, err := c.Write(seqMsg(1, 16))
				if batch {
					// The flusher fails the message: Flush returns the
					// failure only if it came after Flush began, and
					// OnWriteError has it either way.
					if err != nil {
						t.Fatalf("batching Write = %v, want nil (the flusher writes)", err)
					}
					if err := c.Flush(); err != nil && !errors.Is(err, bs.ErrPeerClosed) {
						t.Fatalf("Flush = %v, want nil or ErrPeerClosed", err)
					}
					eventually(t, "the message failed", func() bool { seen, _ := hooked.snapshot(); return len(seen) > 0 })
				} else if !errors.Is(err, bs.ErrPeerClosed) {
					t.Fatalf("first Write after the peer left: %v, want ErrPeerClosed", err)
				}
				seen, errs := hooked.snapshot()
				if seen[1] != 1 || len(errs) != 1 || !errors.Is(errs[0], bs.ErrPeerClosed) {
					t.Fatalf("OnWriteError got %v %v, want message 1 with ErrPeerClosed", seen, errs)
				}
				if st := c.Stats(); st.MessagesWritten != 0 || st.WriteErrors != 1 {
					t.Fatalf("stats %+v, want 0 written and 1 error", st)
				}

				// The next Write dials again and is delivered.
				if _, err := c.Write([]byte("after")); err != nil {
					t.Fatalf("second Write: %v", err)
				}
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
				if got := readFrames(t, s.next(t), 1); got[0] != "after" {
					t.Fatalf("the new connection carried %q", got)
				}
				if err := c.Close(); err != nil {
					t.Fatalf("Close with the new peer there: %v", err)
				}
			})
		}
	}
}

// TestPeerWatchRetryWritesOnNewConnection checks that with a Retry policy
// the Write after the peer left is written on a new connection instead of
// failing, and counted in PeerCloses.
func TestPeerWatchRetryWritesOnNewConnection(t *testing.T) {
	leakCheck(t)
	s := newPeerServer(t)
	hooked := newSeqLog()
	cfg := bs.TCPConnConfig{
		Address:      s.ln.Addr().String(),
		OnWriteError: hooked.hook,
		Retry:        &bs.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond},
	}
	c := dialAddr(t, cfg.Address, cfg)
	first := s.next(t)
	if _, err := c.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if got := readFrames(t, first, 1); got[0] != "one" {
		t.Fatalf("got %q", got)
	}
	endPeer(t, first, false)
	peerCloses(t, c, 1)
	if _, err := c.Write([]byte("two")); err != nil {
		t.Fatalf("Write after the peer left, with a Retry policy: %v", err)
	}
	if got := readFrames(t, s.next(t), 1); got[0] != "two" {
		t.Fatalf("the new connection carried %q", got)
	}
	st := c.Stats()
	if st.Reconnects != 1 || st.MessagesWritten != 2 || st.WriteErrors != 0 || st.PeerCloses != 1 {
		t.Fatalf("stats %+v, want 1 reconnect, 2 written, no errors, 1 peer close", st)
	}
	if seen, _ := hooked.snapshot(); len(seen) != 0 {
		t.Fatalf("OnWriteError got %v", seen)
	}
}

// TestPeerWatchClose checks that Close reports a peer that had left
// unreported, and only then.
func TestPeerWatchClose(t *testing.T) {
	t.Run("untold", func(t *testing.T) {
		leakCheck(t)
		s := newPeerServer(t)
		c := dialAddr(t, s.ln.Addr().String(), bs.TCPConnConfig{})
		endPeer(t, s.next(t), false)
		peerCloses(t, c, 1)
		if err := c.Close(); !errors.Is(err, bs.ErrPeerClosed) {
			t.Fatalf("Close after the peer left = %v, want ErrPeerClosed", err)
		}
	})
	t.Run("told by Write", func(t *testing.T) {
		leakCheck(t)
		s := newPeerServer(t)
		c := dialAddr(t, s.ln.Addr().String(), bs.TCPConnConfig{})
		endPeer(t, s.next(t), true)
		peerCloses(t, c, 1)
		if _, err := c.Write([]byte("x")); !errors.Is(err, bs.ErrPeerClosed) {
			t.Fatalf("Write = %v, want ErrPeerClosed", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close after Write reported the peer gone = %v, want nil", err)
		}
	})
	t.Run("peer there", func(t *testing.T) {
		leakCheck(t)
		s := newPeerServer(t)
		c := dialAddr(t, s.ln.Addr().String(), bs.TCPConnConfig{})
		nc := s.next(t)
		// Bytes the client never reads do not make the peer gone.
		if _, err := nc.Write([]byte{0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		readFrames(t, nc, 1)
		if err := c.Close(); err != nil {
			t.Fatalf("Close with the peer there = %v", err)
		}
		if n := c.Stats().PeerCloses; n != 0 {
			t.Fatalf("PeerCloses = %d", n)
		}
	})
}

// TestPeerWatchNamesTLS checks that a plain client at a TLS listener learns
// of it: the listener answers its first bytes with a TLS alert and closes,
// and the next Write says so, naming TLS, instead of writing into the
// dead socket.
func TestPeerWatchNamesTLS(t *testing.T) {
	s := newPeerServer(t)
	c := dialAddr(t, s.ln.Addr().String(), bs.TCPConnConfig{})
	nc := s.next(t)
	// What a TLS server sends a client whose first bytes are not a TLS
	// handshake: an alert record, then its FIN, after reading the bytes.
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	readFrames(t, nc, 1)
	if _, err := nc.Write([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a}); err != nil {
		t.Fatal(err)
	}
	endPeer(t, nc, false)
	nextWriteFails(t, c, []byte("again"), bs.ErrPeerClosed, bs.ErrWrongProtocol)
}

// TestPeerWatchTLSListener runs a plain client against the library's own
// TLS listener: the client must not go on writing into closed connections
// without an error.
func TestPeerWatchTLSListener(t *testing.T) {
	srv, _ := apiTLS(t)
	l := listen(t, bs.TCPListenerConfig{TLSConfig: srv, Callback: func([]byte) error { return nil }})
	c := dial(t, l, bs.TCPConnConfig{})
	if _, err := c.Write([]byte("not TLS")); err != nil {
		t.Fatal(err)
	}
	nextWriteFails(t, c, []byte("again"), bs.ErrPeerClosed)
}

// TestPeerWatchGivesWayToRead checks that a Read on a watched connection is
// not held up by the watch, and that once a connection is read the reader,
// not the watch, learns of the peer's end.
func TestPeerWatchGivesWayToRead(t *testing.T) {
	leakCheck(t)
	s := newPeerServer(t)
	c := dialAddr(t, s.ln.Addr().String(), bs.TCPConnConfig{})
	nc := s.next(t)
	read := make(chan error, 1)
	go func() {
		b := make([]byte, 64)
		for {
			if _, err := c.Read(b); err != nil {
				read <- err
				return
			}
		}
	}()
	waitBlocked(t, "(*TCPConn).Read", "IO wait")
	w, err := bs.NewConn(nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("abcde")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reply read", func() bool { return c.Stats().MessagesRead == 1 })
	endPeer(t, nc, false)
	select {
	case err := <-read:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("Read after the peer closed = %v, want io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked 10 s after the peer closed")
	}
	if n := c.Stats().PeerCloses; n != 0 {
		t.Fatalf("PeerCloses = %d on a connection being read, want 0", n)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
}

// TestPeerWatchAckListener checks that a plain dialer at a listener with
// acknowledged delivery is told, from the listener's refusal, to turn Acks
// on, at its next Write.
func TestPeerWatchAckListener(t *testing.T) {
	l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func([]byte) error { return nil }})
	c := dial(t, l, bs.TCPConnConfig{})
	if _, err := c.Write([]byte("no hello")); err != nil {
		t.Fatal(err)
	}
	nextWriteFails(t, c, []byte("again"), bs.ErrPeerClosed, bs.ErrAcksOff)
}

// TestPeerWatchRetryGivesUpOnMismatch checks that a Retry policy does not
// dial again after the peer's answer named a mismatch (here, a listener
// with acknowledged delivery refusing a dialer without): every connection
// would lose a message. The connection fails for good instead.
func TestPeerWatchRetryGivesUpOnMismatch(t *testing.T) {
	l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func([]byte) error { return nil }})
	hooked := newSeqLog()
	c := dial(t, l, bs.TCPConnConfig{OnWriteError: hooked.hook, Retry: &bs.RetryPolicy{MaxAttempts: 50, InitialBackoff: time.Millisecond}})
	if _, err := c.Write(seqMsg(1, 16)); err != nil {
		t.Fatal(err)
	}
	nextWriteFails(t, c, seqMsg(2, 16), bs.ErrReconnectFailed, bs.ErrAcksOff)
	if !errors.Is(c.Err(), bs.ErrReconnectFailed) {
		t.Fatalf("Err() = %v, want ErrReconnectFailed", c.Err())
	}
	if _, err := c.Write(seqMsg(3, 16)); !errors.Is(err, bs.ErrReconnectFailed) {
		t.Fatalf("Write on the failed connection = %v", err)
	}
	if st := c.Stats(); st.Reconnects != 0 || st.WriteErrors != 2 {
		t.Fatalf("stats %+v, want no reconnect and 2 write errors", st)
	}
	if seen, _ := hooked.snapshot(); seen[2] != 1 || seen[3] != 1 {
		t.Fatalf("OnWriteError got %v, want messages 2 and 3", seen)
	}
}

// TestPeerWatchLazyTLSFromDialContext dials through a DialContext that
// returns a *tls.Conn whose handshake has not run yet (tls.Client without
// Handshake), as a proxy dialer may. The first Write runs the handshake,
// which reads the server's flight from the socket. The watch parks in
// RawConn.Read on that socket and holds its read lock while the server's
// bytes sit unread, so the handshake must not wait behind it.
func TestPeerWatchLazyTLSFromDialContext(t *testing.T) {
	srv, cli := apiTLS(t)
	got := make(chan struct{}, 1)
	l := listen(t, bs.TCPListenerConfig{TLSConfig: srv, Callback: func([]byte) error {
		select {
		case got <- struct{}{}:
		default:
		}
		return nil
	}})
	cfg := bs.TCPConnConfig{
		Address: l.Addr().String(),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			nc, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c := cli.Clone()
			c.ServerName = "127.0.0.1"
			return tls.Client(nc, c), nil // handshake on first use
		},
	}
	c, err := bs.DialTCP(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("hello"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
	case <-time.After(5 * time.Second):
		c.Close() // unblocks the Write
		<-wrote
		t.Fatal("Write (running the TLS handshake) still blocked after 5 s: the watch holds the socket's read lock")
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not get the message")
	}
	c.Close()
}

// TestMaxMessageSizeMismatchNamed sets a different MaxMessageSize on the
// two ends of the default framing, in each direction, and checks that both
// ends name it: the listener in the connection's end, and the dialer, which
// never reads, from the refusal the listener sends before it closes, in
// its Write or Close error, matching ErrPeerRefused. A listener with the
// narrower header recognises the mix-up before it delivers anything.
func TestMaxMessageSizeMismatchNamed(t *testing.T) {
	leakCheck(t)
	for _, tc := range []struct {
		name                 string
		listener, dialer     int
		deliversNothingFirst bool
	}{
		{"listener wider", 65536, 4096, true},
		{"dialer wider", 4096, 65536, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var delivered atomic.Int64
			ended := make(chan error, 1)
			l := listen(t, bs.TCPListenerConfig{MaxMessageSize: tc.listener,
				Callback:  func([]byte) error { delivered.Add(1); return nil },
				OnConnEnd: func(_ *bs.TCPConn, err error) { ended <- err }})
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String(), MaxMessageSize: tc.dialer})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := bytes.Repeat([]byte{0x6f}, 100)
			var werr error
			for range 200 {
				if _, werr = c.Write(msg); werr != nil {
					break
				}
			}
			var lerr error
			select {
			case lerr = <-ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the listener did not end the connection within 10 s")
			}
			for i := 0; werr == nil && i < 100; i++ {
				_, werr = c.Write(msg)
			}
			if werr == nil {
				werr = c.Close()
			}
			if !errors.Is(werr, bs.ErrPeerRefused) || !errors.Is(werr, bs.ErrPeerClosed) || !strings.Contains(werr.Error(), "MaxMessageSize") {
				t.Errorf("the dialer's error: %v; want ErrPeerRefused naming MaxMessageSize", werr)
			}
			if !strings.Contains(lerr.Error(), "MaxMessageSize") {
				t.Errorf("the listener's end: %v; want it to name MaxMessageSize", lerr)
			}
			if tc.deliversNothingFirst && delivered.Load() != 0 {
				t.Errorf("the listener delivered %d messages of the wrong framing", delivered.Load())
			}
			t.Logf("listener: %v\ndialer: %v\ndelivered: %d", lerr, werr, delivered.Load())
		})
	}
}

// TestCloseTLSIgnoresThePeersAnswer closes a TLS connection whose peer
// answers at once: tls.Conn.Close sends close_notify before it closes the
// socket, and a peer on loopback may answer with its own alert and its FIN
// before the socket is closed. The test has the peer close at exactly that
// moment (SetShutHook) and waits until the watch has seen it. Close must
// not take that answer for the peer leaving on its own: it returns nil,
// and PeerCloses stays zero.
func TestCloseTLSIgnoresThePeersAnswer(t *testing.T) {
	srv, cli := apiTLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan *tls.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(nc, srv)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return
		}
		peers <- tc
	}()
	cfg := cli.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: ln.Addr().String(), TLSConfig: cfg, Framing: bs.Fixed4})
	if err != nil {
		t.Fatal(err)
	}
	var peer *tls.Conn
	select {
	case peer = <-peers:
	case <-time.After(10 * time.Second):
		c.Close()
		t.Fatal("no TLS connection accepted")
	}
	defer peer.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 4+5)
	if _, err := io.ReadFull(peer, frame); err != nil {
		t.Fatalf("the peer's read: %v", err)
	}
	done := bs.WatchDone(c)
	if done == nil {
		t.Fatal("nothing watches the dialed TLS connection")
	}
	restore := bs.SetShutHook(func() {
		peer.Close() // close_notify, then FIN
		select {
		case <-done: // the watch woke on the peer's answer and returned
		case <-time.After(10 * time.Second):
			t.Error("the watch did not return within 10s of the peer's close")
		}
	})
	defer restore()
	if err := c.Close(); err != nil {
		t.Errorf("Close = %v, want nil: the peer only answered the close", err)
	}
	if n := c.Stats().PeerCloses; n != 0 {
		t.Errorf("PeerCloses = %d, want 0", n)
	}
}
