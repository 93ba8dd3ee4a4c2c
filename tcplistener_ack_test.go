package buffstreams_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// dialErr dials addr with cfg and returns the error, failing t if the dial
// succeeds or takes more than a second.
func dialErr(t *testing.T, addr string, cfg bs.TCPConnConfig) error {
	t.Helper()
	cfg.Address = addr
	start := time.Now()
	c, err := bs.DialTCP(&cfg)
	if err == nil {
		c.Close()
		t.Fatal("DialTCP succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("DialTCP took %v to fail", d)
	}
	return err
}

func TestAckMismatchFailsDial(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	acks := &bs.AckConfig{}
	cases := []struct {
		name   string
		ln     bs.TCPListenerConfig
		cfg    bs.TCPConnConfig
		want   error
		saying string
	}{
		{"framing", bs.TCPListenerConfig{Framing: bs.Fixed4, Acks: acks}, bs.TCPConnConfig{Framing: bs.Uvarint, Acks: acks}, bs.ErrAckMismatch, "uvarint framing"},
		{"max", bs.TCPListenerConfig{MaxMessageSize: 8192, Acks: acks}, bs.TCPConnConfig{MaxMessageSize: 4096, Acks: acks}, bs.ErrAckMismatch, "MaxMessageSize is 4096"},
		{"acks off at the listener, buffstreams", bs.TCPListenerConfig{}, bs.TCPConnConfig{Acks: acks}, bs.ErrAcksOff, "does not have Acks on"},
		{"acks off at the listener, fixed1", bs.TCPListenerConfig{Framing: bs.Fixed1}, bs.TCPConnConfig{Framing: bs.Fixed1, Acks: acks}, bs.ErrAcksOff, "does not have Acks on"},
		{"acks off at the listener, fixed2", bs.TCPListenerConfig{Framing: bs.Fixed2, MaxMessageSize: 65535}, bs.TCPConnConfig{Framing: bs.Fixed2, MaxMessageSize: 65535, Acks: acks}, bs.ErrAcksOff, "does not have Acks on"},
		{"acks off at the listener, lines", bs.TCPListenerConfig{Framing: bs.Lines}, bs.TCPConnConfig{Framing: bs.Lines, Acks: acks}, bs.ErrAcksOff, "does not have Acks on"},
		{"acks off at the listener, fixed4", bs.TCPListenerConfig{Framing: bs.Fixed4}, bs.TCPConnConfig{Framing: bs.Fixed4, Acks: acks}, bs.ErrAcksOff, "does not have Acks on"},
		{"TLS at the listener only", bs.TCPListenerConfig{TLSConfig: serverTLS(p.server), Acks: acks}, bs.TCPConnConfig{Acks: acks}, bs.ErrTLSMismatch, "serves TLS"},
		{"TLS at the dialer only", bs.TCPListenerConfig{Acks: acks}, bs.TCPConnConfig{TLSConfig: &tls.Config{RootCAs: p.roots}, Acks: acks}, bs.ErrTLSMismatch, "does not serve TLS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSink()
			c.ln.Callback = s.callback
			l := listen(t, c.ln)
			c.cfg.Retry = ackRetry() // a mismatch must not be retried
			err := dialErr(t, l.Addr().String(), c.cfg)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.saying) {
				t.Fatalf("DialTCP: %v; want %v saying %q", err, c.want, c.saying)
			}
			l.Close()
			if s.len() != 0 {
				t.Fatalf("the callback got %d messages", s.len())
			}
		})
	}
}

// TestAckListenerRefusesPlainDialer checks that a listener with acks closes
// a peer that sends frames without a hello, counting it, naming the cause
// (acks off on the dialer, not a guess at another framing), and delivers
// nothing.
func TestAckListenerRefusesPlainDialer(t *testing.T) {
	leakCheck(t)
	s := newSink()
	ended := make(chan error, 1)
	l := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{},
		OnConnEnd: func(_ *bs.TCPConn, err error) { ended <- err }})
	c := dial(t, l, bs.TCPConnConfig{})
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the plain peer counted", func() bool { return l.Stats().WrongProtocol == 1 })
	if s.len() != 0 {
		t.Fatalf("the callback got %d messages", s.len())
	}
	select {
	case err := <-ended:
		if !errors.Is(err, bs.ErrWrongProtocol) || !strings.Contains(err.Error(), "Acks is off on the dialer") || strings.Contains(err.Error(), "MaxMessageSize") {
			t.Fatalf("the connection ended with %v, want ErrWrongProtocol naming acks off on the dialer", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnConnEnd not called within 10 s")
	}
}

// TestAckCallbackError checks that a message whose callback fails is
// acknowledged as delivered with an error, and reaches OnWriteError with
// that error and ErrRejected, and only that message.
func TestAckCallbackError(t *testing.T) {
	leakCheck(t)
	var n atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func(p []byte) error {
		n.Add(1)
		if string(p) == "bad" {
			return errors.New("no thank you")
		}
		return nil
	}})
	var mu sync.Mutex
	var failed []string
	c := dial(t, l, bs.TCPConnConfig{Acks: &bs.AckConfig{}, OnWriteError: func(msg []byte, err error) {
		mu.Lock()
		failed = append(failed, fmt.Sprintf("%s: %v", msg, err))
		mu.Unlock()
		if !errors.Is(err, bs.ErrRejected) {
			t.Errorf("OnWriteError(%q, %v): want ErrRejected", msg, err)
		}
	}})
	for _, m := range []string{"a", "bad", "b"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Sync reports the rejection if it arrives while Sync waits; one that
	// arrived before is reported to OnWriteError only.
	if err := c.Sync(ctx); err != nil && !errors.Is(err, bs.ErrRejected) {
		t.Fatalf("Sync = %v, want nil or ErrRejected", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 1 || !strings.HasPrefix(failed[0], "bad: ") || !strings.Contains(failed[0], "no thank you") {
		t.Fatalf("OnWriteError got %q", failed)
	}
	if st := c.Stats(); st.MessagesAcked != 2 || st.WriteErrors != 1 || n.Load() != 3 {
		t.Fatalf("acked %d, errors %d, callbacks %d; want 2, 1, 3", st.MessagesAcked, st.WriteErrors, n.Load())
	}
}

// TestAckSessionTable checks that the table of sessions is bounded (a new
// session evicts the one whose connection ended longest ago, and is refused
// when every session has a connection) and that sessions expire.
func TestAckSessionTable(t *testing.T) {
	leakCheck(t)
	s := newSink()
	l := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{MaxSessions: 2, SessionTTL: time.Hour}})
	a := dial(t, l, bs.TCPConnConfig{Acks: &bs.AckConfig{}})
	b := dial(t, l, bs.TCPConnConfig{Acks: &bs.AckConfig{}})
	err := dialErr(t, l.Addr().String(), bs.TCPConnConfig{Acks: &bs.AckConfig{}})
	if !errors.Is(err, bs.ErrAckRefused) {
		t.Fatalf("a third session with two connected: %v, want ErrAckRefused", err)
	}
	a.Close()
	eventually(t, "a's connection ended", func() bool { return l.Conns() == 1 })
	dial(t, l, bs.TCPConnConfig{Acks: &bs.AckConfig{}}) // evicts a's session
	if n := l.Sessions(); n != 2 {
		t.Fatalf("Sessions = %d, want 2", n)
	}
	b.Close()

	// Expiry: with a TTL of 1 ns, a session whose connection ended is
	// forgotten as soon as a new session arrives.
	l2 := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{SessionTTL: time.Nanosecond}})
	for range 5 {
		c := dial(t, l2, bs.TCPConnConfig{Acks: &bs.AckConfig{}})
		c.Close()
		eventually(t, "the connection ended", func() bool { return l2.Conns() == 0 })
	}
	dial(t, l2, bs.TCPConnConfig{Acks: &bs.AckConfig{}})
	if n := l2.Sessions(); n != 1 {
		t.Fatalf("Sessions = %d after the others expired, want 1", n)
	}
}

// memStore is a SessionStore in memory, shared by the listeners of a test
// as a database would be.
type memStore struct {
	mu sync.Mutex
	m  map[bs.SessionID]uint64
}

func (s *memStore) Load(id bs.SessionID) (uint64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.m[id]
	return d, ok, nil
}

func (s *memStore) Save(id bs.SessionID, d uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[id] = d
	return nil
}

// stallingCallback delivers into oc, and, once armed, blocks the callback
// after a number of messages until released, so that a test can stop a
// listener with messages delivered but not yet acknowledged.
type stallingCallback struct {
	oc      *orderCheck
	after   atomic.Int64 // stall once the count reaches this; 0 for never
	stalled chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stallingCallback) callback(p []byte) error {
	s.oc.callback(p)
	if a := s.after.Load(); a > 0 && int64(s.oc.count()) >= a {
		s.once.Do(func() {
			close(s.stalled)
			<-s.release
		})
	}
	return nil
}

// TestAckStoreAcrossRestart stops a listener while messages are delivered
// but not acknowledged, starts another at the same address with the same
// SessionStore, and checks that the sender's replay is delivered exactly
// once in all; without the store it would be at least once.
func TestAckStoreAcrossRestart(t *testing.T) {
	leakCheck(t)
	for _, withStore := range []bool{true, false} {
		t.Run(fmt.Sprintf("store=%v", withStore), func(t *testing.T) {
			oc := newOrderCheck()
			var store bs.SessionStore
			if withStore {
				store = &memStore{m: make(map[bs.SessionID]uint64)}
			}
			sc := &stallingCallback{oc: oc, stalled: make(chan struct{}), release: make(chan struct{})}
			sc.after.Store(500)
			l1 := listen(t, bs.TCPListenerConfig{Callback: sc.callback, Acks: &bs.AckConfig{Store: store, AckEvery: 100}})
			addr := l1.Addr().String()
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, WriteBufferSize: 16 << 10, Retry: ackRetry(), Acks: &bs.AckConfig{}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const n = 2000
			for i := range n {
				if _, err := c.Write(numbered(0, i)); err != nil {
					t.Fatal(err)
				}
			}
			<-sc.stalled
			// The callback is stuck at message 500: at most 400 were
			// acknowledged. Stop the listener (Close waits for the
			// callback, which we release), then bring up a successor.
			go func() { time.Sleep(10 * time.Millisecond); close(sc.release) }()
			l1.Close()
			l2 := listen(t, bs.TCPListenerConfig{Address: addr, Callback: oc.callback, Acks: &bs.AckConfig{Store: store}})
			_ = l2
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			oc.mu.Lock()
			total, bad := oc.total, oc.bad
			oc.mu.Unlock()
			if withStore {
				if total != n || len(bad) != 0 {
					t.Fatalf("with a store: %d deliveries (want %d), %v", total, n, bad)
				}
			} else if total <= n {
				t.Fatalf("without a store: %d deliveries; want more than %d (at least once, with duplicates)", total, n)
			}
			if got := c.Stats().MessagesAcked; got != n {
				t.Fatalf("MessagesAcked = %d, want %d", got, n)
			}
		})
	}
}

// TestAckShutdownHandover shuts a listener down under load and brings up a
// successor at the same address: the sender moves to it after the goaway,
// and every message is delivered exactly once across the two.
func TestAckShutdownHandover(t *testing.T) {
	leakCheck(t)
	for _, buf := range []int{0, 16 << 10} {
		t.Run(fmt.Sprintf("buf=%d", buf), func(t *testing.T) {
			oc := newOrderCheck()
			l1 := listen(t, bs.TCPListenerConfig{Callback: oc.callback, Acks: &bs.AckConfig{}})
			addr := l1.Addr().String()
			var failed atomic.Int64
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, WriteBufferSize: buf, Retry: ackRetry(), Acks: &bs.AckConfig{},
				OnWriteError: func([]byte, error) { failed.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const n = 30000
			done := make(chan error, 1)
			go func() {
				for i := range n {
					if _, err := c.Write(numbered(0, i)); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			eventually(t, "a third delivered", func() bool { return oc.count() >= n/3 })
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := l1.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Errorf("Shutdown took %v", d)
			}
			listen(t, bs.TCPListenerConfig{Address: addr, Callback: oc.callback, Acks: &bs.AckConfig{}})
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			oc.mu.Lock()
			total, bad := oc.total, oc.bad
			oc.mu.Unlock()
			if total != n || len(bad) != 0 || failed.Load() != 0 {
				t.Fatalf("%d deliveries (want %d), %d failed, %v", total, n, failed.Load(), bad)
			}
		})
	}
}

// TestAckHostileDialer sends broken hellos to a listener with acks and
// checks that it refuses each in the protocol's words, counts it and
// closes the connection, delivering nothing.
func TestAckHostileDialer(t *testing.T) {
	leakCheck(t)
	hello := func(version, typ byte, first uint64, heartbeat uint32, nameLen uint16, name string) []byte {
		b := append(append([]byte(nil), magic...), version, typ)
		b = append(b, make([]byte, 16)...)
		b = binary.BigEndian.AppendUint64(b, first)
		b = binary.BigEndian.AppendUint32(b, 4096)
		b = binary.BigEndian.AppendUint32(b, heartbeat)
		b = binary.BigEndian.AppendUint16(b, nameLen)
		return append(b, name...)
	}
	cases := []struct {
		name   string
		in     []byte
		reason byte
	}{
		{"wrong type", hello(ackVersion, 0x07, 1, 0, 11, "buffstreams"), 11},
		{"giant framing name", hello(ackVersion, 0x01, 1, 0, 0xffff, "buffstreams"), 11},
		{"first zero", hello(ackVersion, 0x01, 0, 0, 11, "buffstreams"), 11},
		{"heartbeat of 10 ms", hello(ackVersion, 0x01, 1, 10, 11, "buffstreams"), 11},
		{"version 9", hello(9, 0x01, 1, 0, 11, "buffstreams"), 1},
		{"framing", hello(ackVersion, 0x01, 1, 5000, 6, "fixed4"), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSink()
			l := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{}})
			nc := rawDial(t, l.Addr())
			nc.Write(c.in)
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(nc)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) < 11 || !bytes.Equal(got[:8], magic) || got[9] != 0x03 || got[10] != c.reason {
				t.Fatalf("answer % x; want a refusal with reason %d", got, c.reason)
			}
			if s.len() != 0 || l.Stats().Messages != 0 {
				t.Fatal("delivered something")
			}
		})
	}
}

// TestAckListenerMeetsVersion1 sends the hello of protocol version 1,
// which has no heartbeat timeout, and checks that the listener refuses it
// with reason 1 in an answer of its own version, naming both versions, and
// ends the connection with ErrAckMismatch, delivering nothing.
func TestAckListenerMeetsVersion1(t *testing.T) {
	leakCheck(t)
	s := newSink()
	ended := make(chan error, 1)
	l := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{},
		OnConnEnd: func(_ *bs.TCPConn, err error) { ended <- err }})
	hello := append(append([]byte(nil), magic...), 1, 0x01)
	hello = append(hello, make([]byte, 16)...)
	hello = binary.BigEndian.AppendUint64(hello, 1)
	hello = binary.BigEndian.AppendUint32(hello, 4096)
	hello = binary.BigEndian.AppendUint16(hello, 3) // a short name: the hello is shorter than one of version 2
	hello = append(hello, "bs2"...)
	nc := rawDial(t, l.Addr())
	nc.Write(hello)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(nc)
	if err != nil {
		t.Fatal(err)
	}
	const saying = "protocol version 1, this side speaks 2"
	if len(got) < 13 || !bytes.Equal(got[:8], magic) || got[8] != ackVersion || got[9] != 0x03 || got[10] != 1 ||
		!strings.Contains(string(got[13:]), saying) {
		t.Fatalf("answer % x (%q); want a refusal of version %d with reason 1 saying %q", got, got, ackVersion, saying)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, bs.ErrAckMismatch) || !strings.Contains(err.Error(), saying) {
			t.Fatalf("the connection ended with %v; want ErrAckMismatch saying %q", err, saying)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnConnEnd not called within 10 s")
	}
	if s.len() != 0 {
		t.Fatalf("the callback got %d messages", s.len())
	}
}
