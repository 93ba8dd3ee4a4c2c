package buffstreams_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

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
	// StallTimeout bounds how long CloseWriter waits for the peer's TCP to
	// take what the kernel holds: it never will.
	if err := m.Dial(&bs.TCPConnConfig{Address: stuck.Addr().String(), MaxMessageSize: 1 << 20, StallTimeout: 3 * time.Second}); err != nil {
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
	// Wait until the socket buffers are full: the Write waits for the socket.
	waitBlocked(t, "(*Manager).Write", "IO wait")

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
	// Closing the stuck writer unblocks it, failing the messages the peer
	// never took (on Linux; elsewhere they count as written).
	if err := m.CloseWriter(stuck.Addr().String()); err != nil && !errors.Is(err, bs.ErrUnacknowledged) && !errors.Is(err, bs.ErrPeerSilent) {
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

// TestManagerCloseConcurrent closes a Manager holding several
// acknowledging writers whose listeners never acknowledge. Each writer's
// Close waits WriteTimeout for an acknowledgement, then passes its message
// to OnWriteError, which holds it there until every writer's Close has
// come as far: they all do only if they run at once, not one after
// another.
func TestManagerCloseConcurrent(t *testing.T) {
	leakCheck(t)
	const n = 4
	const timeout = 100 * time.Millisecond
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	var inside atomic.Int32 // Closes in OnWriteError now
	all := make(chan struct{})
	giveUp := make(chan struct{})
	for range n {
		addr := fakeAckListener(t, neverAcks)
		err := m.Dial(&bs.TCPConnConfig{Address: addr, WriteTimeout: timeout, Acks: &bs.AckConfig{},
			OnWriteError: func(_ []byte, err error) {
				if !errors.Is(err, bs.ErrWriteTimeout) {
					t.Errorf("OnWriteError(%v), want ErrWriteTimeout", err)
				}
				if inside.Add(1) == n {
					close(all)
				}
				select {
				case <-all:
				case <-giveUp:
				}
				inside.Add(-1)
			}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Write(addr, []byte("never acknowledged")); err != nil {
			t.Fatal(err)
		}
	}
	timer := time.AfterFunc(10*time.Second, func() { close(giveUp) })
	defer timer.Stop()
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	default:
		t.Fatalf("the %d writers' Closes did not run at once: Close took %v", n, time.Since(start))
	}
}

// TestManagerNotOpened: every method that takes an address returns
// ErrNotOpened for one the Manager does not hold.
func TestManagerNotOpened(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	addr := freeAddr(t)
	if _, err := m.Broadcast(addr, []byte("x"), nil); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("Broadcast: %v", err)
	}
	if _, err := m.ListenerStats(addr); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("ListenerStats: %v", err)
	}
	if _, err := m.WriterStats(addr); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("WriterStats: %v", err)
	}
	if _, err := m.WriteBatch(addr, [][]byte{[]byte("x")}); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("WriteBatch: %v", err)
	}
	if err := m.Flush(addr); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("Flush: %v", err)
	}
	// A listener is not a writer, and the other way round.
	if err := m.StartListening(bs.TCPListenerConfig{Address: addr, Callback: func([]byte) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriterStats(addr); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("WriterStats of a listening address: %v", err)
	}
	if _, err := m.ListenerStats(addr); err != nil {
		t.Errorf("ListenerStats: %v", err)
	}
	if err := m.CloseListener(addr); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ListenerStats(addr); !errors.Is(err, bs.ErrNotOpened) {
		t.Errorf("ListenerStats after CloseListener: %v", err)
	}
}

// TestManagerReplies: a listener opened by the Manager replies through the
// ConnCallback of its configuration; the reply is read on the Manager's
// writer, and both sides' counters are reachable through the Manager.
func TestManagerReplies(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	addr := freeAddr(t)
	err := m.StartListening(bs.TCPListenerConfig{Address: addr, ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		_, err := conn.Write(append([]byte("re: "), msg...))
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Dial(&bs.TCPConnConfig{Address: addr, ReadTimeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	w := m.Writer(addr)
	const n = 1000
	var nbytes uint64
	for i := range n {
		msg := []byte(strconv.Itoa(i))
		nbytes += uint64(len(msg))
		if _, err := m.Write(addr, msg); err != nil {
			t.Fatal(err)
		}
		if got, err := readOne(w); got != "re: "+string(msg) || err != nil {
			t.Fatalf("reply %d: %q, %v", i, got, err)
		}
	}
	ws, err := m.WriterStats(addr)
	want := bs.ConnStats{MessagesWritten: n, BytesWritten: nbytes, MessagesRead: n, BytesRead: nbytes + 4*n}
	if err != nil || ws != want {
		t.Errorf("WriterStats = %+v, %v; want %+v", ws, err, want)
	}
	eventually(t, "the listener's counts", func() bool {
		ls, err := m.ListenerStats(addr)
		return err == nil && ls.Messages == n && ls.Bytes == nbytes && ls.Accepted == 1 && ls.Active == 1
	})
}

// TestManagerBroadcast relays, from the callback, every message to the
// other clients of the listener with Manager.Broadcast, and broadcasts to
// everyone from outside.
func TestManagerBroadcast(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	addr := freeAddr(t)
	var relayed, short atomic.Int64
	err := m.StartListening(bs.TCPListenerConfig{Address: addr, ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		if string(msg) == "join" {
			return nil
		}
		n, err := m.Broadcast(addr, msg, conn)
		relayed.Add(1)
		if n != 2 {
			short.Add(1)
		}
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Dial(&bs.TCPConnConfig{Address: addr, ReadTimeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	a := dialAddr(t, addr, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	b := dialAddr(t, addr, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	eventually(t, "three connections", func() bool {
		ls, err := m.ListenerStats(addr)
		return err == nil && ls.Active == 3
	})
	if _, err := m.Write(addr, []byte("from the manager")); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*bs.TCPConn{"a": a, "b": b} {
		if got, err := readOne(c); got != "from the manager" || err != nil {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	if n, err := m.Broadcast(addr, []byte("to all"), nil); n != 3 || err != nil {
		t.Fatalf("Broadcast = %d, %v; want 3", n, err)
	}
	// The Manager's writer did not get its own message: "to all" is first.
	for name, c := range map[string]*bs.TCPConn{"manager": m.Writer(addr), "a": a, "b": b} {
		if got, err := readOne(c); got != "to all" || err != nil {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	if relayed.Load() != 1 || short.Load() != 0 {
		t.Errorf("%d relays, %d short", relayed.Load(), short.Load())
	}
}

// TestManagerBatching writes through the Manager to a connection in
// batching mode: WriteBatch, Flush, WriterStats.
func TestManagerBatching(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	addr := freeAddr(t)
	s := newSink()
	if err := m.StartListening(bs.TCPListenerConfig{Address: addr, Callback: s.callback}); err != nil {
		t.Fatal(err)
	}
	if err := m.Dial(&bs.TCPConnConfig{Address: addr, WriteBufferSize: 16 << 10, FlushInterval: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	const batches, each = 100, 20
	for i := range batches {
		batch := make([][]byte, each)
		for j := range batch {
			batch[j] = payload(i*each+j, 1+j)
		}
		if n, err := m.WriteBatch(addr, batch); n != each || err != nil {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
	}
	if err := m.Flush(addr); err != nil {
		t.Fatal(err)
	}
	if ws, err := m.WriterStats(addr); err != nil || ws.MessagesWritten != batches*each || ws.WriteErrors != 0 {
		t.Fatalf("after Flush: %+v, %v", ws, err)
	}
	got := s.wait(t, batches*each)
	for i, msg := range got {
		if !bytes.Equal(msg, payload(i, 1+i%each)) {
			t.Fatalf("message %d: %x", i, msg)
		}
	}
}

// TestManagerDialContext: a dial cut short by its context leaves no entry,
// so the address can be dialed again.
func TestManagerDialContext(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	addr := freeAddr(t)
	if err := m.StartListening(bs.TCPListenerConfig{Address: addr, Callback: func([]byte) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.DialContext(ctx, &bs.TCPConnConfig{Address: addr}); !errors.Is(err, context.Canceled) {
		t.Fatalf("DialContext with a cancelled context: %v", err)
	}
	if m.Writer(addr) != nil {
		t.Fatal("a failed dial left an entry")
	}
	if err := m.DialContext(context.Background(), &bs.TCPConnConfig{Address: addr}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Write(addr, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := m.DialContext(context.Background(), nil); !errors.Is(err, bs.ErrInvalidConfig) {
		t.Errorf("DialContext(nil): %v", err)
	}
}

// TestManagerUnix listens and dials a Unix domain socket through the
// Manager, keyed by its path.
func TestManagerUnix(t *testing.T) {
	path := apiSocketPath(t)
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	if err := m.StartListening(bs.TCPListenerConfig{Network: "unix", Address: path, ConnCallback: apiEcho}); err != nil {
		t.Fatal(err)
	}
	if err := m.Dial(&bs.TCPConnConfig{Network: "unix", Address: path, ReadTimeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	apiRoundTrip(t, m.Writer(path), 100)
	if n, err := m.Broadcast(path, []byte("all"), nil); n != 1 || err != nil {
		t.Fatalf("Broadcast = %d, %v", n, err)
	}
	if got, err := readOne(m.Writer(path)); got != "all" || err != nil {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestManagerBroadcastHoldsNoLock: a Broadcast stuck on one address (its
// only client stopped reading) holds no lock of the Manager. Everything
// else goes on meanwhile, including what takes the Manager's write lock
// (StartListening, Dial, CloseWriter, CloseListener), which would wait
// forever if the stuck Broadcast held even the read lock.
func TestManagerBroadcastHoldsNoLock(t *testing.T) {
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	stuck := freeAddr(t)
	conns := make(chan *bs.TCPConn, 1)
	err := m.StartListening(bs.TCPListenerConfig{Address: stuck, MaxMessageSize: 1 << 20, ConnCallback: func(conn *bs.TCPConn, _ []byte) error {
		select {
		case conns <- conn:
		default:
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	sleeper := dialAddr(t, stuck, bs.TCPConnConfig{MaxMessageSize: 1 << 20}) // never reads
	if _, err := sleeper.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	<-conns // served: Broadcast has a connection to write to
	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		big := make([]byte, 1<<20)
		for range 1000 { // far more than the socket buffers hold
			if _, err := m.Broadcast(stuck, big, nil); err != nil {
				return
			}
		}
	}()
	waitBlocked(t, "(*Manager).Broadcast", "IO wait") // the socket buffers are full

	done := make(chan error, 1)
	go func() { done <- managerOtherAddress(m, stuck) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the Manager waits for a Broadcast stuck on another address")
	}
	select {
	case <-blocked:
		t.Fatal("the Broadcast finished: the test did not block it")
	default:
	}
	// Closing the listener closes its connections, which unblocks it.
	if err := m.CloseListener(stuck); err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("CloseListener did not unblock the stuck Broadcast")
	}
}

// managerOtherAddress uses every method of m on a fresh address, and reads
// the counters of the stuck one.
func managerOtherAddress(m *bs.Manager, stuck string) error {
	if _, err := m.ListenerStats(stuck); err != nil {
		return err
	}
	free, got := "", make(chan struct{}, 200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	free = ln.Addr().String()
	ln.Close()
	err = m.StartListening(bs.TCPListenerConfig{Address: free, Callback: func([]byte) error { got <- struct{}{}; return nil }})
	if err != nil {
		return err
	}
	if err := m.Dial(&bs.TCPConnConfig{Address: free, ReadTimeout: 10 * time.Second}); err != nil {
		return err
	}
	for i := range 100 {
		if _, err := m.Write(free, []byte{byte(i)}); err != nil {
			return err
		}
	}
	if _, err := m.WriteBatch(free, [][]byte{{1}, {2}}); err != nil {
		return err
	}
	if err := m.Flush(free); err != nil {
		return err
	}
	for range 102 {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			return errors.New("messages to the free address did not arrive")
		}
	}
	// The listener has accepted the writer's connection: it read from it.
	if n, err := m.Broadcast(free, []byte("b"), nil); n != 1 || err != nil {
		return fmt.Errorf("Broadcast on the free address = %d, %v", n, err)
	}
	if _, err := readOne(m.Writer(free)); err != nil {
		return err
	}
	if ws, err := m.WriterStats(free); err != nil || ws.MessagesWritten != 102 {
		return fmt.Errorf("WriterStats = %+v, %v", ws, err)
	}
	if err := m.CloseWriter(free); err != nil {
		return err
	}
	return m.CloseListener(free)
}
