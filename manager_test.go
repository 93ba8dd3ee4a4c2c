package buffstreams_test

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// freeAddr returns a 127.0.0.1 address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestManagerErrors(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	addr := freeAddr(t)
	if _, err := m.Write(addr, []byte("x")); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("Write before Dial: %v", err)
	}
	if err := m.CloseWriter(addr); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("CloseWriter before Dial: %v", err)
	}
	if err := m.CloseListener(addr); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("CloseListener before StartListening: %v", err)
	}

	s := newSink()
	lcfg := bs.TCPListenerConfig{Address: addr, Callback: s.callback}
	if err := m.StartListening(lcfg); err != nil {
		t.Fatal(err)
	}
	if err := m.StartListening(lcfg); !errors.Is(err, bs.ErrAlreadyOpened) {
		t.Errorf("second StartListening: %v", err)
	}
	ccfg := &bs.TCPConnConfig{Address: addr}
	if err := m.Dial(ccfg); err != nil {
		t.Fatal(err)
	}
	if err := m.Dial(ccfg); !errors.Is(err, bs.ErrAlreadyOpened) {
		t.Errorf("second Dial: %v", err)
	}
	if n, err := m.Write(addr, []byte("hello")); err != nil || n != 5 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	s.wait(t, 1)

	// Closing removes the entries: the address can be opened again.
	if err := m.CloseWriter(addr); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Write(addr, []byte("x")); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("Write after CloseWriter: %v", err)
	}
	if err := m.CloseListener(addr); err != nil {
		t.Fatal(err)
	}
	if err := m.StartListening(lcfg); err != nil {
		t.Fatalf("StartListening again: %v", err)
	}
	if err := m.Dial(ccfg); err != nil {
		t.Fatalf("Dial again: %v", err)
	}
	if _, err := m.Write(addr, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got := s.wait(t, 2); string(got[1]) != "again" {
		t.Fatalf("got %q", got)
	}

	// A failed open leaves no entry behind.
	if err := m.StartListening(bs.TCPListenerConfig{Address: "127.0.0.1:0"}); !errors.Is(err, bs.ErrInvalidConfig) {
		t.Errorf("StartListening without a callback: %v", err)
	}
	if err := m.StartListening(bs.TCPListenerConfig{Address: "127.0.0.1:0", Callback: s.callback}); err != nil {
		t.Errorf("StartListening after a failed one: %v", err)
	}
	if err := m.Dial(&bs.TCPConnConfig{Address: freeAddr(t)}); err == nil {
		t.Error("Dial to a closed port succeeded")
	}
}

// TestManagerConcurrent writes to several addresses from many goroutines
// while other goroutines dial and close a further address.
func TestManagerConcurrent(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	var got atomic.Int64
	cb := func([]byte) error { got.Add(1); return nil }
	var addrs []string
	for range 3 {
		addr := freeAddr(t)
		if err := m.StartListening(bs.TCPListenerConfig{Address: addr, Callback: cb}); err != nil {
			t.Fatal(err)
		}
		if err := m.Dial(&bs.TCPConnConfig{Address: addr}); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, addr)
	}
	churn := freeAddr(t)
	if err := m.StartListening(bs.TCPListenerConfig{Address: churn, Callback: func([]byte) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 32, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := m.Write(addrs[(w+i)%len(addrs)], []byte(fmt.Sprint(w, i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var opened atomic.Int64
	for range 4 {
		wg.Go(func() {
			for range 50 {
				err := m.Dial(&bs.TCPConnConfig{Address: churn})
				if err == nil {
					opened.Add(1)
					m.Write(churn, []byte("churn"))
					m.CloseWriter(churn)
				} else if !errors.Is(err, bs.ErrAlreadyOpened) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "every message", func() bool { return got.Load() == writers*each })
	if opened.Load() == 0 {
		t.Error("no churn dial succeeded")
	}
}

// TestManagerWriteNotBlockedByOtherAddress checks that a Write stuck on one
// address (its peer stopped reading) does not hold up writes to another.
func TestManagerWriteNotBlockedByOtherAddress(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	stuck := newRawListener(t)
	if err := m.Dial(&bs.TCPConnConfig{Address: stuck.Addr().String(), MaxMessageSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	stuck.accept(t) // accepted, never read
	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		big := make([]byte, 1<<20)
		for range 1000 { // far more than the socket buffers hold
			if _, err := m.Write(stuck.Addr().String(), big); err != nil {
				return
			}
		}
	}()
	// Wait until the socket buffers are full: no progress for 100 ms.
	w := m.Writer(stuck.Addr().String())
	for last := uint64(0); ; {
		time.Sleep(100 * time.Millisecond)
		n := w.Stats().MessagesWritten
		if n > 0 && n == last {
			break
		}
		last = n
	}

	s := newSink()
	free := freeAddr(t)
	if err := m.StartListening(bs.TCPListenerConfig{Address: free, Callback: s.callback}); err != nil {
		t.Fatal(err)
	}
	if err := m.Dial(&bs.TCPConnConfig{Address: free}); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		for i := range 100 {
			if _, err := m.Write(free, []byte{byte(i)}); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		m.CloseWriter(stuck.Addr().String())
		t.Fatal("writes to one address wait for a stuck write to another")
	}
	s.wait(t, 100)
	select {
	case <-blocked:
		t.Fatal("the stuck writer finished: the test did not block it")
	default:
	}
	// Closing the stuck writer unblocks it.
	if err := m.CloseWriter(stuck.Addr().String()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("CloseWriter did not unblock the stuck Write")
	}
}

func TestManagerClose(t *testing.T) {
	m := bs.NewManager()
	addr := freeAddr(t)
	if err := m.StartListening(bs.TCPListenerConfig{Address: addr, Callback: func([]byte) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	if err := m.Dial(&bs.TCPConnConfig{Address: addr}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoGoroutines(t)
	if _, err := m.Write(addr, nil); !errors.Is(err, bs.ErrNotOpened) {
		t.Fatalf("Write after Close: %v", err)
	}
	if m.Listener(addr) != nil || m.Writer(addr) != nil {
		t.Fatal("entries survive Close")
	}
}
