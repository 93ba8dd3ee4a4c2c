package buffstreams

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAckPositionAfterRefusedTakeover checks the position a session's new
// connection resumes from when an earlier newcomer of the session was
// refused because the first connection's callback was still running. The
// first connection delivered messages 1 to 4 without acknowledging them
// (they arrived together with message 5, whose callback blocks); the
// second connection waits HandshakeTimeout for it and is refused, and the
// third one finds no owner, but must still wait for the first connection
// (and be refused too), not resume from a position that lags: the sender
// would replay 1 to 4 and the callback get them twice. Once the callback
// returns, a new connection resumes after message 5.
func TestAckPositionAfterRefusedTakeover(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	count := map[string]int{}
	cb := func(p []byte) error {
		mu.Lock()
		count[string(p)]++
		mu.Unlock()
		if string(p) == "5" {
			close(entered)
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		return nil
	}
	l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0", Callback: cb,
		Acks: &AckConfig{AckEvery: 1000}, HandshakeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	id := newSessionID()
	open := func() (net.Conn, uint64, error) { return sayHello(t, l, id) }

	c1, d, err := open()
	if err != nil || d != 0 {
		t.Fatalf("first hello: %d %v", d, err)
	}
	if _, err := c1.Write(numbered(1, 5)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback of message 5 was not called")
	}
	if _, _, err := open(); !errors.Is(err, ErrAckRefused) {
		t.Fatalf("second hello while the first connection delivers: %v, want ErrAckRefused", err)
	}
	// While the first connection is still in a callback, every newcomer
	// is refused, not only the one that closed it: none may resume from a
	// position the first one has not published.
	if _, _, err := open(); !errors.Is(err, ErrAckRefused) {
		t.Fatalf("third hello while the first connection delivers: %v, want ErrAckRefused", err)
	}
	once.Do(func() { close(release) })
	var c4 net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		c4, d, err = open()
		if err == nil || !errors.Is(err, ErrAckRefused) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("hello after the first connection let go: %v", err)
	}
	if d != 5 {
		t.Fatalf("the session resumes after message %d, want 5: the first connection delivered 1 to 5", d)
	}
	// The sender replays from d+1: message 6, which is delivered once.
	if _, err := c4.Write(numbered(6, 6)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c4)
	rec := new(recordBuf)
	for {
		typ, seq, _, err := readRecord(br, rec)
		if err != nil {
			t.Fatalf("reading the new connection's acks: %v", err)
		}
		if typ == typeAck && seq >= 6 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i <= 6; i++ {
		if n := count[fmt.Sprint(i)]; n != 1 {
			t.Errorf("message %d delivered %d times", i, n)
		}
	}
}

// sayHello opens a connection to l and says the hello of session id, from
// message 1 with the default framing, and returns the connection with the
// last message the listener says it delivered, or its refusal.
func sayHello(t *testing.T, l *TCPListener, id SessionID) (net.Conn, uint64, error) {
	t.Helper()
	w, _ := newWire(0, nil)
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	h := appendHello(nil, hello{version: ackVersion, id: id, first: 1, max: uint32(w.max), framing: w.framing.String()})
	if _, err := nc.Write(h); err != nil {
		t.Fatal(err)
	}
	d, err := readAnswer(nc)
	return nc, d, err
}

// numbered returns the frames, in the default framing, of the messages
// "from" to "to", each its number in decimal.
func numbered(from, to int) []byte {
	w, _ := newWire(0, nil)
	var b []byte
	for i := from; i <= to; i++ {
		b, _ = appendFrame(w.framing, b, nil, fmt.Appendf(nil, "%d", i))
	}
	return b
}

// TestAckSessionKeptWhileDelivering checks that a full session table does
// not forget a session whose read loop is still in a callback after a
// newcomer of the session closed it and gave up waiting: forgotten, the
// session would resume from the sender's window and deliver again what
// that loop delivered. A new session is refused until the loop lets go.
func TestAckSessionKeptWhileDelivering(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0",
		Callback: func(p []byte) error {
			if string(p) == "2" {
				close(entered)
				select {
				case <-release:
				case <-time.After(20 * time.Second):
				}
			}
			return nil
		},
		Acks: &AckConfig{MaxSessions: 1}, HandshakeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	a := newSessionID()
	c1, _, err := sayHello(t, l, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Write(numbered(1, 2)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback of message 2 was not called")
	}
	if _, _, err := sayHello(t, l, a); !errors.Is(err, ErrAckRefused) {
		t.Fatalf("a newcomer of the session while its loop delivers: %v, want ErrAckRefused", err)
	}
	// Session a has no owner now, but its loop is still in the callback.
	if _, _, err := sayHello(t, l, newSessionID()); !errors.Is(err, ErrAckRefused) {
		t.Fatalf("a new session with the table full and session a still delivering: %v, want ErrAckRefused", err)
	}
	once.Do(func() { close(release) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, d, err := sayHello(t, l, a)
		if err == nil {
			if d != 2 {
				t.Fatalf("session a resumes after message %d, want 2", d)
			}
			return
		}
		if !errors.Is(err, ErrAckRefused) || time.Now().After(deadline) {
			t.Fatalf("session a after its loop let go: %v", err)
		}
	}
}

// TestAckReadTimeoutNamedAsPlain checks that a read timeout ends a
// connection with the same named error with acknowledged delivery as
// without: "no frame within IdleTimeout" for a peer that sends nothing,
// "frame not complete within ReadTimeout" for one that stops mid-frame,
// each wrapping os.ErrDeadlineExceeded, a net.Error whose Timeout is true,
// and counted in Timeouts.
func TestAckReadTimeoutNamedAsPlain(t *testing.T) {
	const d = 50 * time.Millisecond
	w, _ := newWire(0, nil)
	frame, _ := appendFrame(w.framing, nil, nil, make([]byte, 10))
	partial := frame[:len(frame)-5]
	for _, tc := range []struct {
		name string
		cfg  TCPListenerConfig
		send []byte
		want string
	}{
		{"idle", TCPListenerConfig{IdleTimeout: d}, nil, "buffstreams: no frame within IdleTimeout (50ms): "},
		{"partial frame", TCPListenerConfig{ReadTimeout: d}, partial, "buffstreams: frame not complete within ReadTimeout (50ms): "},
	} {
		for _, acks := range []bool{false, true} {
			name := tc.name + "/plain"
			if acks {
				name = tc.name + "/acks"
			}
			t.Run(name, func(t *testing.T) {
				ends := make(chan error, 1)
				cfg := tc.cfg
				cfg.Address = "127.0.0.1:0"
				cfg.Callback = func([]byte) error { return nil }
				cfg.OnConnEnd = func(_ *TCPConn, err error) { ends <- err }
				if acks {
					cfg.Acks = &AckConfig{}
				}
				l, err := ListenTCP(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(l.Close)
				if err := l.StartListeningAsync(); err != nil {
					t.Fatal(err)
				}
				var nc net.Conn
				if acks {
					if nc, _, err = sayHello(t, l, newSessionID()); err != nil {
						t.Fatal(err)
					}
				} else {
					if nc, err = net.Dial("tcp", l.Addr().String()); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { nc.Close() })
				}
				if _, err := nc.Write(tc.send); err != nil {
					t.Fatal(err)
				}
				select {
				case err = <-ends:
				case <-time.After(10 * time.Second):
					t.Fatal("the connection did not end")
				}
				if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Errorf("OnConnEnd got %v, want %q followed by the read's error", err, tc.want)
				}
				var ne net.Error
				if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("%v: want os.ErrDeadlineExceeded wrapped, in a net.Error whose Timeout is true", err)
				}
				l.Close()
				if n := l.Stats().Timeouts; n != 1 {
					t.Errorf("Timeouts = %d, want 1", n)
				}
			})
		}
	}
}
