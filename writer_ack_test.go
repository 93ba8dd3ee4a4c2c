package buffstreams_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// numbered is a message naming its writer and its number for that writer.
func numbered(writer, n int) []byte {
	b := make([]byte, 16, 40)
	binary.BigEndian.PutUint64(b, uint64(writer))
	binary.BigEndian.PutUint64(b[8:], uint64(n))
	return append(b, "some payload bytes"...)
}

// orderCheck is a listener callback that checks that each writer's
// messages arrive exactly once and in order.
type orderCheck struct {
	mu    sync.Mutex
	next  map[uint64]uint64
	total int
	bad   []string
}

func newOrderCheck() *orderCheck { return &orderCheck{next: make(map[uint64]uint64)} }

func (o *orderCheck) callback(p []byte) error {
	w, n := binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:])
	o.mu.Lock()
	defer o.mu.Unlock()
	if n != o.next[w] && len(o.bad) < 10 {
		o.bad = append(o.bad, fmt.Sprintf("writer %d: got message %d, want %d", w, n, o.next[w]))
	}
	o.next[w] = n + 1
	o.total++
	return nil
}

func (o *orderCheck) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total
}

func ackRetry() *bs.RetryPolicy {
	return &bs.RetryPolicy{MaxAttempts: 50, InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxWait: 10 * time.Second}
}

func TestAckDeliversAndAcknowledges(t *testing.T) {
	leakCheck(t)
	for _, mode := range []struct {
		name string
		buf  int
	}{{"default", 0}, {"batching", 64 << 10}} {
		t.Run(mode.name, func(t *testing.T) {
			s := newSink()
			l := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{}})
			c := dial(t, l, bs.TCPConnConfig{WriteBufferSize: mode.buf, Acks: &bs.AckConfig{}})
			const n = 1000
			for i := range n {
				if _, err := c.Write(payload(i, 100)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if got := c.Stats().MessagesAcked; got != n {
				t.Fatalf("MessagesAcked = %d, want %d", got, n)
			}
			if s.len() != n {
				t.Fatalf("callback got %d messages, want %d", s.len(), n)
			}
			if _, err := c.Read(make([]byte, 10)); err == nil {
				t.Fatal("Read on an acknowledging connection succeeded")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAckExactlyOnceAcrossCuts cuts a proxy between the ends many times
// while several goroutines write numbered messages, and checks that the
// callback sees every message exactly once, in each writer's order.
func TestAckExactlyOnceAcrossCuts(t *testing.T) {
	leakCheck(t)
	for _, mode := range []struct {
		name    string
		buf     int
		writers int
	}{{"default-1", 0, 1}, {"default-8", 0, 8}, {"batching-1", 32 << 10, 1}, {"batching-8", 32 << 10, 8}} {
		t.Run(mode.name, func(t *testing.T) {
			oc := newOrderCheck()
			// Cut at random points of the stream: the callback cuts the
			// proxy when the count of deliveries reaches each point, so
			// that even a writer far faster than the cuts meets them all.
			const cuts = 12
			total := 20000 * mode.writers
			points := make([]int, cuts)
			for k := range points {
				points[k] = 1 + rand.IntN(total*9/10)
			}
			slices.Sort(points)
			t.Logf("cutting after %v deliveries", points)
			var px *proxy
			var cutMu sync.Mutex // guards next
			next := 0
			l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func(p []byte) error {
				err := oc.callback(p)
				cutMu.Lock()
				for n := oc.count(); next < cuts && n >= points[next]; next++ {
					px.cut()
				}
				cutMu.Unlock()
				return err
			}})
			px = newProxy(t, l.Addr().String())
			var failed atomic.Int64
			c, err := bs.DialTCP(&bs.TCPConnConfig{
				Address:         px.addr(),
				WriteBufferSize: mode.buf,
				Retry:           ackRetry(),
				Acks:            &bs.AckConfig{Window: 256 << 10},
				OnWriteError:    func([]byte, error) { failed.Add(1) },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const perWriter = 20000
			done := make(chan struct{})
			var wg sync.WaitGroup
			for w := range mode.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perWriter {
						if _, err := c.Write(numbered(w, i)); err != nil {
							t.Errorf("writer %d, message %d: %v", w, i, err)
							return
						}
					}
				}()
			}
			go func() { wg.Wait(); close(done) }()
			<-done
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			oc.mu.Lock()
			bad := oc.bad
			oc.mu.Unlock()
			if len(bad) > 0 {
				t.Fatalf("order or duplicates: %v", bad)
			}
			if got := oc.count(); got != total {
				t.Fatalf("callback got %d messages, want %d", got, total)
			}
			st := c.Stats()
			if st.MessagesAcked != uint64(total) || failed.Load() != 0 || st.WriteErrors != 0 {
				t.Fatalf("acked %d, failed %d (%d), want %d and 0", st.MessagesAcked, failed.Load(), st.WriteErrors, total)
			}
			if px.cuts.Load() != cuts || st.Reconnects == 0 {
				t.Fatalf("%d cuts, %d reconnects: want %d cuts and reconnects after them", px.cuts.Load(), st.Reconnects, cuts)
			}
		})
	}
}

func record(typ byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{typ}, seq)
}

// TestAckWindowFull checks each SlowConsumer policy against a listener
// that never acknowledges, and that the window never holds more than its
// bound.
func TestAckWindowFull(t *testing.T) {
	leakCheck(t)
	addr := fakeAckListener(t, neverAcks)
	const window = 16 << 10
	const size = 100
	frame := size + 3 + 16 // the BuffStreams header of MaxMessageSize 4096, and the window's bookkeeping
	for _, pol := range []bs.SlowConsumerPolicy{bs.SlowConsumerError, bs.SlowConsumerBlock, bs.SlowConsumerClose} {
		for _, buf := range []int{0, 4 << 10} {
			t.Run(fmt.Sprintf("%v/buf=%d", pol, buf), func(t *testing.T) {
				var failed atomic.Int64
				c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, WriteBufferSize: buf, SlowConsumer: pol,
					WriteTimeout: 50 * time.Millisecond, Acks: &bs.AckConfig{Window: window},
					OnWriteError: func([]byte, error) { failed.Add(1) }})
				if err != nil {
					t.Fatal(err)
				}
				accepted := 0
				var werr error
				for range 10 * window / size {
					if _, werr = c.Write(payload(accepted, size)); werr != nil {
						break
					}
					accepted++
				}
				if accepted*frame > window || accepted*frame < window-2*frame {
					t.Fatalf("%d messages of %d bytes accepted into a window of %d", accepted, frame, window)
				}
				switch pol {
				case bs.SlowConsumerError:
					if !errors.Is(werr, bs.ErrSlowConsumer) || failed.Load() != 1 {
						t.Fatalf("Write = %v, %d failed; want ErrSlowConsumer, 1", werr, failed.Load())
					}
				case bs.SlowConsumerBlock:
					if !errors.Is(werr, bs.ErrWriteTimeout) || failed.Load() != 1 {
						t.Fatalf("Write = %v, %d failed; want ErrWriteTimeout, 1", werr, failed.Load())
					}
				case bs.SlowConsumerClose:
					if !errors.Is(werr, bs.ErrSlowConsumer) || failed.Load() != int64(accepted)+1 {
						t.Fatalf("Write = %v, %d failed; want ErrSlowConsumer, %d", werr, failed.Load(), accepted+1)
					}
				}
				c.Close()
				if st := c.Stats(); st.MessagesAcked != 0 || failed.Load() != int64(accepted)+1 || st.WriteErrors != uint64(accepted)+1 {
					t.Fatalf("after Close: acked %d, failed %d, WriteErrors %d; want 0, %d", st.MessagesAcked, failed.Load(), st.WriteErrors, accepted+1)
				}
			})
		}
	}
}

// TestAckSyncContext checks that Sync returns when its context ends while
// messages are unacknowledged.
func TestAckSyncContext(t *testing.T) {
	leakCheck(t)
	addr := fakeAckListener(t, neverAcks)
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, WriteTimeout: 50 * time.Millisecond, Acks: &bs.AckConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("one"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Sync(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync with a cancelled context = %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with a deadline = %v", err)
	}
}

// TestAckCloseReportsUnacknowledged checks that Close waits for
// acknowledgements up to its deadline and then passes exactly the
// messages never acknowledged to OnWriteError.
func TestAckCloseReportsUnacknowledged(t *testing.T) {
	leakCheck(t)
	addr := fakeAckListener(t, func(nc net.Conn) {
		nc.Write(acceptAnswer(0))
		// Read the ten frames of "m0".."m9" (3-byte header, 2 bytes),
		// acknowledge the first four, then nothing more.
		io.ReadFull(nc, make([]byte, 10*5))
		nc.Write(record(0x10, 4))
		io.Copy(io.Discard, nc)
	})
	var mu sync.Mutex
	var failed []string
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, WriteTimeout: 100 * time.Millisecond, Acks: &bs.AckConfig{},
		OnWriteError: func(m []byte, err error) {
			mu.Lock()
			failed = append(failed, string(m))
			mu.Unlock()
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("OnWriteError(%q, %v): want net.ErrClosed", m, err)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.Write(fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "four acknowledged", func() bool { return c.Stats().MessagesAcked == 4 })
	start := time.Now()
	c.Close()
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("Close took %v; want about WriteTimeout", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(failed, " "); got != "m4 m5 m6 m7 m8 m9" {
		t.Fatalf("OnWriteError got %q", got)
	}
}

// TestAckHostileListener checks that acknowledgements of messages never
// sent, acknowledgements going backwards and unknown records close the
// connection, without a panic.
func TestAckHostileListener(t *testing.T) {
	leakCheck(t)
	cases := map[string][]byte{
		"beyond":          record(0x10, 100),
		"backwards":       append(record(0x10, 2), record(0x10, 1)...),
		"unknown":         record(0x7e, 1),
		"rejected beyond": append(record(0x11, 50), 0, 1, 'x'),
	}
	for name, recs := range cases {
		t.Run(name, func(t *testing.T) {
			closed := make(chan struct{}, 10)
			addr := fakeAckListener(t, func(nc net.Conn) {
				nc.Write(acceptAnswer(0))
				io.ReadFull(nc, make([]byte, 3*5))
				nc.Write(recs)
				io.Copy(io.Discard, nc) // returns when the sender closes
				closed <- struct{}{}
			})
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, Acks: &bs.AckConfig{}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 3 {
				c.Write(fmt.Appendf(nil, "m%d", i))
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("the sender kept the connection")
			}
		})
	}
}

// TestAckWindowMemory fills the window of a connection whose listener
// never acknowledges and checks that the heap grew by no more than the
// window's bound and 1 MiB.
func TestAckWindowMemory(t *testing.T) {
	leakCheck(t)
	addr := fakeAckListener(t, neverAcks)
	const window = 8 << 20
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, WriteBufferSize: 64 << 10, SlowConsumer: bs.SlowConsumerError,
		WriteTimeout: 50 * time.Millisecond, Acks: &bs.AckConfig{Window: window}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p := payload(1, 110)
	n := 0
	for range 2 * window / 110 {
		if _, err := c.Write(p); err != nil {
			if !errors.Is(err, bs.ErrSlowConsumer) {
				t.Fatal(err)
			}
			break
		}
		n++
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d messages in the window; the heap grew by %d bytes", n, grew)
	if n == 2*window/110 || grew > window+1<<20 {
		t.Fatalf("%d messages accepted, heap grew by %d bytes; want a full window within %d bytes", n, grew, window+1<<20)
	}
}

// TestAckNoFDLeak dials, cuts and closes many sessions and checks that
// every socket is closed afterwards.
func TestAckNoFDLeak(t *testing.T) {
	leakCheck(t)
	if openFDs() < 0 {
		t.Skip("no /proc/self/fd")
	}
	oc := newOrderCheck()
	l := listen(t, bs.TCPListenerConfig{Callback: oc.callback, Acks: &bs.AckConfig{}})
	px := newProxy(t, l.Addr().String())
	before := openFDs()
	for i := range 20 {
		c, err := bs.DialTCP(&bs.TCPConnConfig{Address: px.addr(), Retry: ackRetry(), Acks: &bs.AckConfig{}})
		if err != nil {
			t.Fatal(err)
		}
		for j := range 50 {
			if j == 25 {
				px.cut()
			}
			if _, err := c.Write(numbered(i, j)); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.Sync(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	px.cut()
	eventually(t, "the listener's connections closed", func() bool { return l.Conns() == 0 })
	eventually(t, "descriptors closed", func() bool { return openFDs() <= before })
	if got := oc.count(); got != 20*50 {
		t.Fatalf("%d delivered, want %d", got, 20*50)
	}
}

// TestAckReopen checks that a connection closed and reopened keeps its
// session and numbering: the listener delivers what follows, once.
func TestAckReopen(t *testing.T) {
	leakCheck(t)
	oc := newOrderCheck()
	l := listen(t, bs.TCPListenerConfig{Callback: oc.callback, Acks: &bs.AckConfig{}})
	c := dial(t, l, bs.TCPConnConfig{WriteBufferSize: 4096, Acks: &bs.AckConfig{}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for round := range 3 {
		for i := range 100 {
			if _, err := c.Write(numbered(0, round*100+i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := c.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.total != 300 || len(oc.bad) > 0 || l.Sessions() != 1 {
		t.Fatalf("%d delivered, %v, %d sessions; want 300 in order, 1 session", oc.total, oc.bad, l.Sessions())
	}
}

// TestAckReopenAfterFailedReopen closes a connection and reopens it while
// the listener is down. As Reopen promises, the next Write then dials
// again, as after any failure, and its message is delivered; so is one
// written after a second Reopen that succeeds. In both write modes.
func TestAckReopenAfterFailedReopen(t *testing.T) {
	leakCheck(t)
	for _, buf := range []int{0, 4096} {
		t.Run(fmt.Sprintf("buf=%d", buf), func(t *testing.T) {
			s := newSink()
			cfg := bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{}}
			l := listen(t, cfg)
			cfg.Address = l.Addr().String() // each restart listens here again
			c := dial(t, l, bs.TCPConnConfig{WriteBufferSize: buf, Acks: &bs.AckConfig{}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// send writes msg and waits for its acknowledgement; a Write
			// that blocks, which Close (at cleanup) ends, fails the test
			// after 10 s.
			send := func(msg string) {
				t.Helper()
				done := make(chan error, 1)
				go func() {
					_, err := c.Write([]byte(msg))
					if err == nil {
						err = c.Sync(ctx)
					}
					done <- err
				}()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("%s: %v", msg, err)
					}
				case <-ctx.Done():
					t.Fatalf("%s: the Write still blocks after 10 s", msg)
				}
			}
			// closeAndFail closes c and its listener, and reopens c in
			// vain; then it starts the listener again.
			closeAndFail := func() {
				t.Helper()
				c.Close()
				l.Close()
				if err := c.Reopen(); err == nil {
					t.Fatal("Reopen with the listener down succeeded")
				}
				l = listen(t, cfg)
			}
			send("first")
			closeAndFail()
			send("after a failed Reopen")
			closeAndFail()
			if err := c.Reopen(); err != nil {
				t.Fatal(err)
			}
			send("after a failed Reopen and one that succeeded")
			got := s.all()
			if len(got) != 3 || string(got[1]) != "after a failed Reopen" || string(got[2]) != "after a failed Reopen and one that succeeded" {
				t.Fatalf("delivered %q", got)
			}
		})
	}
}

// TestAckRetriesGiveUp stops the listener for good and checks that the
// messages it never acknowledged, and only those, reach OnWriteError with
// ErrReconnectFailed once the Retry policy gives up, in both write modes.
func TestAckRetriesGiveUp(t *testing.T) {
	leakCheck(t)
	for _, buf := range []int{0, 4096} {
		t.Run(fmt.Sprintf("buf=%d", buf), func(t *testing.T) {
			s := newSink()
			l := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{}})
			var mu sync.Mutex
			var failed []string
			c := dial(t, l, bs.TCPConnConfig{WriteBufferSize: buf, Acks: &bs.AckConfig{},
				Retry: &bs.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxWait: 5 * time.Second},
				OnWriteError: func(m []byte, err error) {
					mu.Lock()
					failed = append(failed, string(m))
					mu.Unlock()
					if !errors.Is(err, bs.ErrReconnectFailed) {
						t.Errorf("OnWriteError(%q, %v): want ErrReconnectFailed", m, err)
					}
				}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 10 {
				c.Write(fmt.Appendf(nil, "a%d", i))
			}
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			l.Close()
			for i := range 5 {
				c.Write(fmt.Appendf(nil, "b%d", i))
			}
			eventually(t, "the five reported", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(failed) == 5
			})
			// The messages still in the window fail when the policy gives
			// up, and those written after fail at once, on their own
			// goroutine: the two may reach OnWriteError in either order.
			mu.Lock()
			slices.Sort(failed)
			got := strings.Join(failed, " ")
			mu.Unlock()
			if got != "b0 b1 b2 b3 b4" || c.Stats().MessagesAcked != 10 || s.len() != 10 {
				t.Fatalf("failed %q, acked %d, delivered %d", got, c.Stats().MessagesAcked, s.len())
			}
		})
	}
}

// Acknowledged delivery: the sender learns which messages the listener's
// callback has had, and Sync waits for it.
func ExampleAckConfig() {
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Callback: func(msg []byte) error { return nil },
		Acks:     &bs.AckConfig{},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	l.StartListeningAsync()

	c, err := bs.DialTCP(&bs.TCPConnConfig{
		Address: l.Addr().String(),
		Retry:   &bs.RetryPolicy{}, // reconnect and write again what was not delivered
		Acks:    &bs.AckConfig{},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	for _, m := range []string{"one", "two", "three"} {
		c.Write([]byte(m))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Sync(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("acknowledged:", c.Stats().MessagesAcked)
	// Output: acknowledged: 3
}

// Environment variables of the listener processes that
// TestAckAtLeastOnceAcrossKill starts: the file to record each delivered
// message in, and the address to listen on.
const (
	ackChildRecordEnv = "BUFFSTREAMS_ACK_CHILD"
	ackChildAddrEnv   = "BUFFSTREAMS_ACK_CHILD_ADDR"
	// ackChildStoreEnv, if set, makes the process commit its record with
	// its SessionStore: see fileStore.
	ackChildStoreEnv = "BUFFSTREAMS_ACK_CHILD_STORE"
)

// ackChild is the body of a listener process of
// TestAckAtLeastOnceAcrossKill, run by TestMain instead of the tests. It
// listens with acknowledged delivery and no SessionStore on the address in
// ackChildAddrEnv (127.0.0.1:0 if empty), prints the address it listens on,
// and appends the 8-byte number that opens each message to the file named
// record, in one unbuffered write, before the callback returns: since the
// listener acknowledges only after the callback, every message it
// acknowledged is in the file. It runs until it is killed or its standard
// input ends, and returns the process's exit status.
func ackChild(record string) int {
	f, err := os.OpenFile(record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer f.Close()
	addr := os.Getenv(ackChildAddrEnv)
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	acks := &bs.AckConfig{}
	keep := func(p []byte) error {
		_, err := f.Write(p[:8])
		return err
	}
	if name := os.Getenv(ackChildStoreEnv); name != "" {
		st := &fileStore{name: name}
		acks.Store = st
		keep = st.deliver
	}
	l, err := bs.ListenTCP(bs.TCPListenerConfig{Address: addr, Acks: acks, Callback: func(p []byte) error {
		if len(p) < 8 {
			return fmt.Errorf("a message of %d bytes has no number", len(p))
		}
		return keep(p)
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(l.Addr())
	io.Copy(io.Discard, os.Stdin) // until the parent closes it, or dies
	return 0
}

// fileStore is a SessionStore, for one session, that listener processes
// share through a file: the position delivered, then the 8-byte numbers
// of the messages delivered up to it, in order. The callback's effect,
// recording a number, is kept in memory until Save commits it together
// with the position, in one rename: so what a killed process delivered
// after its last Save is forgotten with it, as a database transaction
// would be, and the file holds each message once.
type fileStore struct {
	name    string
	mu      sync.Mutex
	pending []byte // numbers delivered since the last Save
}

func (s *fileStore) deliver(p []byte) error {
	s.mu.Lock()
	s.pending = append(s.pending, p[:8]...)
	s.mu.Unlock()
	return nil
}

func (s *fileStore) Load(bs.SessionID) (uint64, bool, error) {
	b, err := os.ReadFile(s.name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil || len(b) < 8 {
		return 0, false, fmt.Errorf("store of %d bytes: %v", len(b), err)
	}
	return binary.BigEndian.Uint64(b), true, nil
}

func (s *fileStore) Save(_ bs.SessionID, delivered uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(s.name)
	if errors.Is(err, fs.ErrNotExist) {
		b, err = make([]byte, 8), nil
	}
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint64(b, delivered)
	b = append(b, s.pending...)
	tmp := s.name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.name); err != nil {
		return err
	}
	s.pending = s.pending[:0]
	return nil
}

// ackChildProc is a listener process started by startAckChild.
type ackChildProc struct {
	addr   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer // written by the process; read once stop or end returned
	once   sync.Once
	err    error // Wait's
}

// startAckChild starts a listener process (see ackChild) that records
// into the file record and listens on addr, and returns once it listens.
// The process is killed when the test ends, if neither stop nor end was
// called.
func startAckChild(t *testing.T, record, addr string, env ...string) *ackChildProc {
	t.Helper()
	p := &ackChildProc{cmd: exec.Command(os.Args[0], "-test.run=^TestAckAtLeastOnceAcrossKill$")}
	p.cmd.Env = append(os.Environ(), ackChildRecordEnv+"="+record, ackChildAddrEnv+"="+addr)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Env = append(p.cmd.Env,
		"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0") // the race detector's exit waits 1 s by default
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil { // closed by end, Wait, or when this process dies
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() && p.stderr.Len() > 0 {
			t.Logf("the listener process at %s wrote:\n%s", p.addr, p.stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	var got string
	select {
	case got = <-line:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		got = <-line // the pipe ends with the process
	}
	if got == "" {
		p.stop()
		t.Fatalf("the listener process did not say where it listens; its standard error:\n%s", p.stderr.String())
	}
	p.addr = got
	return p
}

// stop kills the process with SIGKILL, where there are signals, and waits
// for it. It may be called more than once, and after end.
func (p *ackChildProc) stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		p.err = p.cmd.Wait()
	})
}

// end closes the process's standard input, which makes it close its
// listener and exit, and returns how it exited: an error if it failed,
// the race detector found a race in it, or it was still running after
// 10 s and was killed.
func (p *ackChildProc) end() error {
	p.once.Do(func() {
		p.stdin.Close()
		timer := time.AfterFunc(10*time.Second, func() { p.cmd.Process.Kill() })
		p.err = p.cmd.Wait()
		timer.Stop()
	})
	return p.err
}

// complained reports whether the process wrote of a race or a panic to
// its standard error, which the test logs when it fails. stop or end has
// returned.
func (p *ackChildProc) complained() bool {
	s := p.stderr.String()
	return strings.Contains(s, "DATA RACE") || strings.Contains(s, "panic:")
}

// checkEveryOnce fails the test unless the records of two listener
// processes, together, hold every message number below n at least once
// and nothing else.
func checkEveryOnce(t *testing.T, n int, ids1, ids2 []uint64) {
	t.Helper()
	seen := make([]int, n)
	for _, ids := range [][]uint64{ids1, ids2} {
		for _, id := range ids {
			if id >= uint64(n) {
				t.Fatalf("message %d recorded; only %d were written", id, n)
			}
			seen[id]++
		}
	}
	if i := slices.Index(seen, 0); i >= 0 {
		t.Fatalf("message %d never delivered (first listener: %d records, second: %d)", i, len(ids1), len(ids2))
	}
}

// readAckRecord returns the message numbers recorded in the file name, in
// the order the listener process delivered them.
func readAckRecord(t *testing.T, name string) []uint64 {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(b)%8 != 0 {
		t.Fatalf("%s holds %d bytes, not whole 8-byte numbers", filepath.Base(name), len(b))
	}
	ids := make([]uint64, 0, len(b)/8)
	for i := 0; i < len(b); i += 8 {
		ids = append(ids, binary.BigEndian.Uint64(b[i:]))
	}
	return ids
}

// TestAckAtLeastOnceAcrossKill writes numbered messages with acknowledged
// delivery to a listener in another process, kills that process with
// SIGKILL mid-stream, starts a new one on the same port that knows nothing
// of the session, and checks that every message was delivered at least
// once across the two processes: the duplicates, counted, are messages the
// first process delivered but had not yet acknowledged, and no more than
// the replay window holds.
func TestAckAtLeastOnceAcrossKill(t *testing.T) {
	switch runtime.GOOS {
	case "js", "wasip1", "ios":
		t.Skipf("no child processes on %s", runtime.GOOS)
	}
	leakCheck(t)
	for _, mode := range []struct {
		name string
		buf  int
	}{{"default", 0}, {"batching", 32 << 10}} {
		t.Run(mode.name, func(t *testing.T) {
			const (
				n      = 20000
				size   = 32 // the number and padding
				window = 64 << 10
			)
			// Open the runtime's poller, once per process, before counting
			// descriptors.
			if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
				ln.Close()
			}
			fds := openFDs()
			dir := t.TempDir()
			rec1, rec2 := filepath.Join(dir, "first"), filepath.Join(dir, "second")
			first := startAckChild(t, rec1, "127.0.0.1:0")

			var mu sync.Mutex
			var failed []error
			c, err := bs.DialTCP(&bs.TCPConnConfig{
				Address:         first.addr,
				WriteBufferSize: mode.buf,
				Retry:           &bs.RetryPolicy{MaxAttempts: 2000, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxWait: 30 * time.Second},
				Acks:            &bs.AckConfig{Window: window},
				OnWriteError: func(_ []byte, err error) {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			// The writer stops at two thirds until the first process is
			// dead, so that the kill falls mid-stream however slowly this
			// goroutine notices the third.
			killed, quit, wrote := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var werr error // set before wrote is closed
			go func() {
				defer close(wrote)
				werr = func() error {
					msg := make([]byte, size)
					for i := range n {
						if i == 2*n/3 {
							select {
							case <-killed:
							case <-quit:
								return errors.New("the test ended first")
							}
						}
						binary.BigEndian.PutUint64(msg, uint64(i))
						if _, err := c.Write(msg); err != nil {
							return fmt.Errorf("message %d: %w", i, err)
						}
					}
					return nil
				}()
			}()
			t.Cleanup(func() {
				close(quit)
				c.Close()
				<-wrote
			})

			eventually(t, "a third of the messages recorded by the first listener", func() bool {
				fi, err := os.Stat(rec1)
				return err == nil && fi.Size() >= 8*n/3
			})
			first.stop()
			close(killed)
			second := startAckChild(t, rec2, first.addr)
			select {
			case <-wrote:
			case <-time.After(60 * time.Second):
				t.Fatal("the writer did not finish within 60 s")
			}
			if werr != nil {
				t.Fatal(werr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Err(); err != nil {
				t.Fatalf("the connection failed: %v", err)
			}
			st := c.Stats()
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := second.end(); err != nil {
				t.Errorf("the second listener process: %v", err)
			}
			for k, p := range []*ackChildProc{first, second} {
				if p.complained() {
					t.Errorf("listener process %d reported a race or a panic", k+1)
				}
			}
			mu.Lock()
			if len(failed) > 0 {
				t.Errorf("OnWriteError got %d messages; the first with %v", len(failed), failed[0])
			}
			mu.Unlock()
			if st.MessagesAcked != n || st.WriteErrors != 0 || st.Reconnects == 0 {
				t.Errorf("acked %d, write errors %d, reconnects %d; want %d, 0, at least 1", st.MessagesAcked, st.WriteErrors, st.Reconnects, n)
			}

			// Each process delivers a session's messages once and in
			// order while it lives: its record counts up by one.
			ids1, ids2 := readAckRecord(t, rec1), readAckRecord(t, rec2)
			for k, ids := range [][]uint64{ids1, ids2} {
				for i := 1; i < len(ids); i++ {
					if ids[i] != ids[i-1]+1 {
						t.Fatalf("listener process %d recorded message %d after %d", k+1, ids[i], ids[i-1])
					}
				}
			}
			checkEveryOnce(t, n, ids1, ids2)
			if len(ids2) == 0 || ids2[len(ids2)-1] != n-1 {
				t.Fatalf("the second listener did not deliver the end of the stream")
			}
			// With every message delivered and each process's record
			// free of repeats, a duplicate is a message both recorded:
			// one the first delivered but had not acknowledged when it
			// died, all of which the window held at once.
			dups := len(ids1) + len(ids2) - n
			t.Logf("first listener: %d records, second: %d, from message %d; %d duplicates", len(ids1), len(ids2), ids2[0], dups)
			if most := window / (size + 16); dups > most {
				t.Fatalf("%d duplicates; the replay window holds at most %d messages", dups, most)
			}
			eventually(t, "descriptors closed", func() bool { return openFDs() <= fds })
		})
	}
}

// TestAckAllocs checks that acknowledged delivery allocates nothing per
// message once the window has grown, on either side, acknowledgements
// included: in the default mode a lone writer draws about one
// acknowledgement per message.
func TestAckAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations over 20,000 messages")
	}
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool allocate")
	}
	for _, buf := range []int{0, 64 << 10} {
		t.Run(fmt.Sprintf("WriteBufferSize=%d", buf), func(t *testing.T) {
			l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func([]byte) error { return nil }})
			c := dial(t, l, bs.TCPConnConfig{Acks: &bs.AckConfig{}, WriteBufferSize: buf})
			msg := make([]byte, 110)
			send := func(n int) {
				for range n {
					if _, err := c.Write(msg); err != nil {
						t.Fatal(err)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := c.Sync(ctx); err != nil {
					t.Fatal(err)
				}
			}
			const n = 20000
			send(n) // grows the window and the buffers
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			send(n)
			runtime.ReadMemStats(&after)
			// A few allocations are not per message: timers, a pause's
			// goroutine, the runtime's own.
			if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.02 {
				t.Errorf("%.3f allocations per message, want none (at most 0.02)", per)
			}
		})
	}
}

// TestAckBatchSlowConsumerErrorNeverBlocks checks that in batching mode
// with acknowledged delivery and SlowConsumerError, a Write never blocks
// on the socket: a listener that stops reading makes the window fill and
// Write return ErrSlowConsumer. The Write that finds WriteBufferSize bytes
// unsent must leave the socket to the pump under this policy, as the
// plain batching engine does.
func TestAckBatchSlowConsumerErrorNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func([]byte) error {
		select {
		case <-release:
		case <-time.After(60 * time.Second):
		}
		return nil
	}})
	c := dial(t, l, bs.TCPConnConfig{
		WriteBufferSize: 64 << 10,
		SlowConsumer:    bs.SlowConsumerError,
		Acks:            &bs.AckConfig{Window: 16 << 20},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			nc, err := d.DialContext(ctx, network, addr)
			if err == nil {
				nc.(*net.TCPConn).SetWriteBuffer(16 << 10)
			}
			return nc, err
		},
	})
	done := make(chan error, 1)
	go func() {
		msg := make([]byte, 1024)
		for range 64 << 10 { // four times the window
			if _, err := c.Write(msg); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if !errors.Is(err, bs.ErrSlowConsumer) {
			t.Fatalf("Write = %v, want ErrSlowConsumer", err)
		}
	case <-time.After(20 * time.Second):
		close(release)
		c.Close()
		<-done
		t.Fatal("a Write blocked on the socket for 20 s under SlowConsumerError")
	}
	close(release)
}

// TestAckFrozenProxy freezes a proxy between the ends in the middle of a
// stream: the connection stays open but nothing passes either way, as
// when a partition or a NAT entry gone dark leaves no FIN and no reset.
// The sender must hear no record for HeartbeatTimeout, declare the
// listener silent, dial again (through the proxy, which passes new
// connections) and replay; the callback must see every message exactly
// once, and the listener must hand the session to the new connection.
func TestAckFrozenProxy(t *testing.T) {
	leakCheck(t)
	const timeout = 300 * time.Millisecond
	for _, mode := range []struct {
		name string
		buf  int
	}{{"default", 0}, {"batching", 32 << 10}} {
		t.Run(mode.name, func(t *testing.T) {
			const n = 20000
			oc := newOrderCheck()
			point := n/4 + rand.IntN(n/2)
			var px *proxy
			var frozeAt atomic.Int64 // UnixNano
			l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func(p []byte) error {
				err := oc.callback(p)
				if oc.count() == point {
					px.freeze()
					frozeAt.Store(time.Now().UnixNano())
				}
				return err
			}})
			px = newProxy(t, l.Addr().String())
			var failed atomic.Int64
			c, err := bs.DialTCP(&bs.TCPConnConfig{
				Address:         px.addr(),
				WriteBufferSize: mode.buf,
				Retry:           ackRetry(),
				Acks:            &bs.AckConfig{HeartbeatTimeout: timeout},
				OnWriteError:    func([]byte, error) { failed.Add(1) },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			// Watch for the moment the sender declares the listener
			// silent, to measure how long it takes after the freeze.
			var silentAt atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				deadline := time.Now().Add(time.Minute)
				for c.Stats().SilentPeers == 0 && time.Now().Before(deadline) {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
				}
				silentAt.Store(time.Now().UnixNano())
			})
			defer wg.Wait()
			defer close(stop)

			start := time.Now()
			for i := range n {
				if _, err := c.Write(numbered(0, i)); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatalf("Sync: %v (frozen %d times, callback count %d, stats %+v)", err, px.freezes.Load(), oc.count(), c.Stats())
			}
			took := time.Since(start)
			oc.mu.Lock()
			bad := oc.bad
			oc.mu.Unlock()
			if len(bad) > 0 {
				t.Fatalf("order or duplicates: %v", bad)
			}
			st := c.Stats()
			if got := oc.count(); got != n || st.MessagesAcked != n || failed.Load() != 0 || st.WriteErrors != 0 {
				t.Fatalf("callback count %d, acked %d, failed %d (%d); want %d, %d, 0", got, st.MessagesAcked, failed.Load(), st.WriteErrors, n, n)
			}
			if px.freezes.Load() != 1 || st.SilentPeers == 0 || st.Reconnects == 0 {
				t.Fatalf("%d freezes, %d silent peers, %d reconnects; want 1 freeze, then a silent peer and a reconnect", px.freezes.Load(), st.SilentPeers, st.Reconnects)
			}
			eventually(t, "the silence measured", func() bool { return silentAt.Load() != 0 })
			detect := time.Duration(silentAt.Load() - frozeAt.Load())
			t.Logf("frozen after %d of %d messages; the sender declared the listener silent %v later (HeartbeatTimeout %v); %d silent peers, %d reconnects; all %d acknowledged in %v",
				point, n, detect.Round(time.Millisecond), timeout, st.SilentPeers, st.Reconnects, n, took.Round(time.Millisecond))
			within(t, "noticing the frozen proxy", detect, timeout/2, timeout+3*time.Second)
			// The session moved to the new connection: the listener closed
			// the frozen one, although no byte came from it.
			eventually(t, "the frozen connection closed", func() bool { return l.Conns() == 1 })
		})
	}
}

// TestAckSilentListener checks that a listener which accepts the session
// and then says nothing at all is declared silent within HeartbeatTimeout
// on every connection, and that the error the message fails with once the
// Retry policy sees no progress names the silence: it matches
// ErrPeerSilent and is a timeout.
func TestAckSilentListener(t *testing.T) {
	leakCheck(t)
	addr := fakeAckListener(t, neverAcks)
	const timeout = 200 * time.Millisecond
	failed := make(chan error, 2)
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr,
		Retry:        &bs.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxWait: 10 * time.Second},
		Acks:         &bs.AckConfig{HeartbeatTimeout: timeout},
		OnWriteError: func(_ []byte, err error) { failed <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("anyone there?")); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-failed:
	case <-time.After(20 * time.Second):
		t.Fatalf("the message did not fail within 20 s; stats %+v", c.Stats())
	}
	took := time.Since(start)
	var ne net.Error
	if !errors.Is(err, bs.ErrReconnectFailed) || !errors.Is(err, bs.ErrPeerSilent) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("OnWriteError got %v; want ErrReconnectFailed wrapping ErrPeerSilent, a timeout", err)
	}
	// Each connection the policy allows is declared silent in turn.
	st := c.Stats()
	if st.SilentPeers < 2 || took < time.Duration(st.SilentPeers)*timeout || st.WriteErrors != 1 || st.MessagesAcked != 0 {
		t.Fatalf("%d silent peers in %v, %d write errors, %d acked; want at least 2 silent peers, each after %v, and the one message failed",
			st.SilentPeers, took, st.WriteErrors, st.MessagesAcked, timeout)
	}
}

// TestAckHeartbeatTimeout checks the heartbeat timeout the hello carries,
// in milliseconds, for each setting of AckConfig.HeartbeatTimeout, and the
// settings DialTCP refuses.
func TestAckHeartbeatTimeout(t *testing.T) {
	leakCheck(t)
	for _, c := range []struct {
		set  time.Duration
		want uint32
	}{{0, 5000}, {300 * time.Millisecond, 300}, {time.Minute, 60000}, {-1, 0}} {
		rl := newRawListener(t)
		dialed := make(chan error, 1)
		go func() {
			conn, err := bs.DialTCP(&bs.TCPConnConfig{Address: rl.Addr().String(), Acks: &bs.AckConfig{HeartbeatTimeout: c.set}})
			if err == nil {
				err = conn.Close()
			}
			dialed <- err
		}()
		nc := rl.accept(t)
		h := make([]byte, 44)
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(nc, h); err != nil {
			t.Fatal(err)
		}
		nc.Write(acceptAnswer(0))
		if err := <-dialed; err != nil {
			t.Fatalf("HeartbeatTimeout %v: %v", c.set, err)
		}
		if got := binary.BigEndian.Uint32(h[38:42]); h[8] != ackVersion || got != c.want {
			t.Errorf("HeartbeatTimeout %v: hello of version %d with %d ms, want version %d with %d ms", c.set, h[8], got, ackVersion, c.want)
		}
	}
	for _, bad := range []time.Duration{time.Millisecond, 99 * time.Millisecond, 1 << 62} {
		_, err := bs.DialTCP(&bs.TCPConnConfig{Address: "127.0.0.1:1", Acks: &bs.AckConfig{HeartbeatTimeout: bad}})
		if !errors.Is(err, bs.ErrInvalidConfig) {
			t.Errorf("HeartbeatTimeout %v: %v, want ErrInvalidConfig", bad, err)
		}
	}
}

// TestAckDialerMeetsVersion1 checks that a dialer of this version fails at
// once, naming both versions, at a listener of protocol version 1, whether
// that listener accepts (it would not understand the hello, but one that
// skipped the check could) or refuses with reason 1 as version 1 does; and
// that the Retry policy does not try again.
func TestAckDialerMeetsVersion1(t *testing.T) {
	leakCheck(t)
	v1 := func(typ byte, rest ...byte) []byte {
		return append(append(append([]byte(nil), magic...), 1, typ), rest...)
	}
	for name, answer := range map[string][]byte{
		"accept": v1(0x02, 0, 0, 0, 0, 0, 0, 0, 0),
		"refuse": append(v1(0x03, 1, 0, 44), "buffstreams: protocol version 2, this side speaks 1"...),
	} {
		t.Run(name, func(t *testing.T) {
			addr := fakeAckListener(t, func(nc net.Conn) {
				nc.Write(answer)
				io.Copy(io.Discard, nc)
			})
			err := dialErr(t, addr, bs.TCPConnConfig{Acks: &bs.AckConfig{}, Retry: ackRetry()})
			if !errors.Is(err, bs.ErrAckMismatch) || !strings.Contains(err.Error(), "protocol version 1, this side speaks 2") {
				t.Fatalf("DialTCP: %v; want ErrAckMismatch saying protocol version 1, this side speaks 2", err)
			}
		})
	}
}
