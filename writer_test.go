package buffstreams_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestBatchingRoundTrip writes in batching mode with Write, WriteBatch and
// large messages that bypass the buffer, Flushes half-way and Closes
// without flushing: every message arrives, in order, and MessagesWritten
// counts them all.
func TestBatchingRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bs.TCPConnConfig
	}{
		{"eager", bs.TCPConnConfig{WriteBufferSize: 4096}},
		{"linger", bs.TCPConnConfig{WriteBufferSize: 4096, FlushInterval: time.Millisecond}},
		{"small buffer", bs.TCPConnConfig{WriteBufferSize: 256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const max = 8 << 10
			s := newSink()
			l := apiStart(t, bs.TCPListenerConfig{MaxMessageSize: max, Callback: s.callback}, nil)
			cfg := tc.cfg
			cfg.Address = l.Addr().String()
			cfg.MaxMessageSize = max
			c, err := bs.DialTCP(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			msg := func(i int) []byte {
				if i%997 == 0 {
					return payload(i, 2000) // large: written from the caller's slice
				}
				return payload(i, 1+i%64)
			}
			const half, total = 5000, 10_000
			next := 0
			write := func(upTo int) {
				for next < upTo {
					if next%3 == 0 {
						if _, err := c.Write(msg(next)); err != nil {
							t.Fatal(err)
						}
						next++
						continue
					}
					var batch [][]byte
					for len(batch) < 10 && next < upTo {
						batch = append(batch, msg(next))
						next++
					}
					if n, err := c.WriteBatch(batch); n != len(batch) || err != nil {
						t.Fatalf("WriteBatch = %d, %v", n, err)
					}
				}
			}
			write(half)
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if st := c.Stats(); st.MessagesWritten != half {
				t.Fatalf("after Flush, MessagesWritten = %d, want %d", st.MessagesWritten, half)
			}
			write(total)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if st := c.Stats(); st.MessagesWritten != total || st.WriteErrors != 0 {
				t.Fatalf("after Close, stats %+v, want %d written", st, total)
			}
			got := s.wait(t, total)
			for i, m := range got {
				if !bytes.Equal(m, msg(i)) {
					t.Fatalf("message %d is %x, want %x", i, m, msg(i))
				}
			}
		})
	}
}

// TestAcceptedWriteTimeout: a write on an accepted connection, from
// outside its read loop, to a peer that does not read fails with
// ErrWriteTimeout once WriteTimeout passes, by Write and by Broadcast,
// which counts the connection as not reached and reports the error. The
// connection is then closed and its read loop ends cleanly.
func TestAcceptedWriteTimeout(t *testing.T) {
	for _, how := range []string{"Write", "Broadcast"} {
		t.Run(how, func(t *testing.T) {
			conns := make(chan *bs.TCPConn, 1)
			l := apiStart(t, bs.TCPListenerConfig{
				MaxMessageSize: 1 << 20,
				IdleTimeout:    time.Minute,
				WriteTimeout:   100 * time.Millisecond,
				ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
					select {
					case conns <- conn:
					default:
					}
					return nil
				},
			}, nil)
			c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 1 << 20}) // never reads
			if _, err := c.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			conn := <-conns
			big := make([]byte, 1<<20)
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				if how == "Write" {
					_, err = conn.Write(big)
					continue
				}
				var n int
				n, err = l.Broadcast(big, nil)
				if err == nil && n != 1 {
					t.Fatalf("Broadcast %d reached %d connections and returned no error", i, n)
				}
				if err != nil && n != 0 {
					t.Fatalf("Broadcast %d failed (%v) but counts %d", i, err, n)
				}
			}
			if !errors.Is(err, bs.ErrWriteTimeout) {
				t.Fatalf("writes to a peer that does not read: %v; want ErrWriteTimeout", err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%v is not a net.Error with Timeout", err)
			}
			// Conns drops before Active: wait for both.
			eventually(t, "the connection to be dropped", func() bool { return l.Conns() == 0 && l.Stats().Active == 0 })
			if st := l.Stats(); st.Panics != 0 || st.Active != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestCloseWhileFlushing closes connections in batching mode while their
// flusher is writing: Close must write everything still buffered, so every
// message is counted as written and arrives.
func TestCloseWhileFlushing(t *testing.T) {
	var got atomic.Int64
	l := apiStart(t, bs.TCPListenerConfig{Callback: func([]byte) error { got.Add(1); return nil }}, nil)
	const rounds, each = 100, 500
	msg := make([]byte, 100)
	for round := range rounds {
		var failure atomic.Value
		c, err := bs.DialTCP(&bs.TCPConnConfig{
			Address:         l.Addr().String(),
			WriteBufferSize: 4096,
			OnWriteError:    func(_ []byte, err error) { failure.CompareAndSwap(nil, err) },
		})
		if err != nil {
			t.Fatal(err)
		}
		for range each {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.MessagesWritten != each {
			t.Fatalf("round %d: Close left %d of %d messages unwritten (first error: %v)", round, each-int(st.MessagesWritten), each, failure.Load())
		}
	}
	eventually(t, "every message", func() bool { return got.Load() == rounds*each })
}

// TestWriteTimeout writes to a peer that stopped reading: in the default
// mode the Write that cannot complete fails after WriteTimeout with
// ErrWriteTimeout; in batching mode with SlowConsumerBlock no Write waits
// much longer than WriteTimeout and the timeout reaches OnWriteError (or the
// Write); and Close, with messages buffered, returns within WriteTimeout and
// passes them to OnWriteError.
func TestWriteTimeout(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	t.Run("default mode", func(t *testing.T) {
		leakCheck(t)
		peer := newStallPeer(t)
		hooked := newSeqLog()
		c := dialAddr(t, peer.addr(), bs.TCPConnConfig{Framing: bs.Fixed4, MaxMessageSize: 1 << 20,
			WriteTimeout: writeTimeout, OnWriteError: hooked.hook})
		var err error
		var took time.Duration
		given := 0
		for given < 2000 && err == nil {
			start := time.Now()
			_, err = c.Write(seqMsg(uint32(given), 256<<10))
			took = time.Since(start)
			given++
		}
		if !errors.Is(err, bs.ErrWriteTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
			t.Fatalf("after %d writes of 256 KiB: %v; want ErrWriteTimeout, os.ErrDeadlineExceeded and a net.Error timeout", given, err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("%v: no net.Error with Timeout() in the chain", err)
		}
		within(t, "the Write that timed out", took, writeTimeout-10*time.Millisecond, writeTimeout+5*time.Second)
		// The message that timed out, and, on Linux, those the kernel
		// took but the peer's TCP never acknowledged.
		failed, errs := hooked.snapshot()
		if len(failed) != 1 || failed[uint32(given-1)] != 1 {
			t.Fatalf("OnWriteError got messages %v, want only the one that timed out, %d", failed, given-1)
		}
		for _, e := range errs {
			if !errors.Is(e, bs.ErrWriteTimeout) {
				t.Fatalf("OnWriteError got %v, want ErrWriteTimeout", e)
			}
		}
		if st := c.Stats(); st.Unacknowledged != uint64(hooked.unacked.Load()) || runtime.GOOS == "linux" && st.Unacknowledged == 0 {
			t.Fatalf("%d messages unacknowledged, %d passed to OnWriteError as such; want as many, and some on Linux: the peer never read", st.Unacknowledged, hooked.unacked.Load())
		}
		c.Close()
		checkAccounting(t, c, given, hooked, newSeqLog())
		t.Logf("%d MiB accepted by the kernel before the write blocked", (given-1)/4)
	})
	t.Run("batching mode", func(t *testing.T) {
		leakCheck(t)
		peer := newStallPeer(t)
		hooked := newSeqLog()
		const bufSize = 64 << 10
		c := dialAddr(t, peer.addr(), bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: bufSize,
			SlowConsumer: bs.SlowConsumerBlock, WriteTimeout: writeTimeout, OnWriteError: hooked.hook})
		var err error
		var longest time.Duration
		given := 0
		deadline := time.Now().Add(30 * time.Second)
		timedOut := func() bool {
			_, errs := hooked.snapshot()
			return slices.ContainsFunc(errs, func(e error) bool { return errors.Is(e, bs.ErrWriteTimeout) && isTimeout(e) })
		}
		for given < 200_000 && time.Now().Before(deadline) && !timedOut() {
			start := time.Now()
			_, err = c.Write(seqMsg(uint32(given), 1024))
			longest = max(longest, time.Since(start))
			given++
			if err != nil {
				break
			}
		}
		if err != nil && (!errors.Is(err, bs.ErrWriteTimeout) || !isTimeout(err)) {
			t.Fatalf("Write %d: %v; want ErrWriteTimeout", given, err)
		}
		if err == nil && !timedOut() {
			t.Fatalf("%d messages written to a peer that does not read, and no ErrWriteTimeout", given)
		}
		within(t, "the longest Write", longest, 0, writeTimeout+5*time.Second)
		// Fill the buffer again, then Close: it tries for WriteTimeout and
		// reports what it could not write.
		for i := 0; i < 2*bufSize/1024; i++ {
			start := time.Now()
			if _, err := c.Write(seqMsg(uint32(given), 1024)); err != nil {
				given++
				break
			}
			given++
			if time.Since(start) > writeTimeout/2 {
				break // the buffer is full
			}
		}
		start := time.Now()
		c.Close()
		within(t, "Close with a full buffer", time.Since(start), 0, writeTimeout+5*time.Second)
		checkAccounting(t, c, given, hooked, newSeqLog())
		t.Logf("%d messages given: %d written, %d passed to OnWriteError; the longest Write took %v", given, c.Stats().MessagesWritten, hooked.n.Load(), longest.Round(time.Millisecond))
	})
}

// TestSlowConsumer fills the write buffer of a batching connection whose
// server does not read: with SlowConsumerError the Write that finds it full
// fails at once with ErrSlowConsumer and the connection and its buffer are
// kept; with SlowConsumerClose the buffered messages go to OnWriteError and
// the next Write dials again.
func TestSlowConsumer(t *testing.T) {
	const bufSize, size = 32 << 10, 1024
	frame := 4 + size
	for _, policy := range []bs.SlowConsumerPolicy{bs.SlowConsumerError, bs.SlowConsumerClose} {
		t.Run(policy.String(), func(t *testing.T) {
			leakCheck(t)
			g := newGatedListener(t)
			hooked := newSeqLog()
			c := dial(t, g.TCPListener, bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: bufSize,
				SlowConsumer: policy, OnWriteError: hooked.hook})
			var err error
			var took time.Duration
			given := 0
			deadline := time.Now().Add(30 * time.Second)
			for given < 500_000 && err == nil && time.Now().Before(deadline) {
				start := time.Now()
				_, err = c.Write(seqMsg(uint32(given), size))
				took = time.Since(start)
				given++
			}
			if !errors.Is(err, bs.ErrSlowConsumer) {
				t.Fatalf("after %d messages to a server that does not read: %v, want ErrSlowConsumer", given, err)
			}
			within(t, "the Write that found the buffer full", took, 0, 100*time.Millisecond)
			st := c.Stats()
			buffered := int64(given) - int64(st.MessagesWritten) - hooked.n.Load()
			t.Logf("%d messages accepted before the buffer filled; %d in the library's buffers then", given-1, buffered)
			if buffered*int64(frame) > 2*bufSize {
				t.Errorf("%d messages (%d bytes) held by the library, beyond twice WriteBufferSize", buffered, buffered*int64(frame))
			}
			if policy == bs.SlowConsumerError {
				if hooked.n.Load() != 1 {
					t.Fatalf("OnWriteError called %d times, want once, for the refused message", hooked.n.Load())
				}
			} else {
				_, errs := hooked.snapshot()
				n := 0
				for _, e := range errs {
					if errors.Is(e, bs.ErrSlowConsumer) {
						n++
					}
				}
				if n < 2 {
					t.Fatalf("OnWriteError got %d messages with ErrSlowConsumer (%v), want the buffered ones and the refused one", n, errs)
				}
			}
			g.release()
			c.Flush() // may report the messages SlowConsumerClose failed
			for i := range 100 {
				if _, err := c.Write(seqMsg(uint32(given), size)); err != nil {
					t.Fatalf("Write %d after the server caught up: %v", i, err)
				}
				given++
				if i%10 == 9 {
					if err := c.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			wantReconnects := uint64(0)
			if policy == bs.SlowConsumerClose {
				wantReconnects = 1
			}
			if st := c.Stats(); st.Reconnects != wantReconnects {
				t.Errorf("Reconnects = %d, want %d", st.Reconnects, wantReconnects)
			}
			c.Close()
			eventually(t, "the server done", func() bool { return g.Stats().Active == 0 })
			checkAccounting(t, c, given, hooked, g.received)
			if policy == bs.SlowConsumerError && g.received.n.Load() != int64(c.Stats().MessagesWritten) {
				t.Errorf("server received %d of the %d messages written on a connection that never failed", g.received.n.Load(), c.Stats().MessagesWritten)
			}
		})
	}
}

// TestBackpressure streams from a batching connection to a server whose
// callback is held: SlowConsumerBlock makes the writer wait, the library
// holds at most two write buffers, the heap does not grow with what the
// writer offers, and once the server catches up every message arrives.
func TestBackpressure(t *testing.T) {
	leakCheck(t)
	const bufSize, size = 32 << 10, 1024
	total := 64 << 10 // 64 MiB offered
	if testing.Short() {
		total = 16 << 10
	}
	g := newGatedListener(t)
	c := dial(t, g.TCPListener, bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: bufSize})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var accepted atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := range total {
			if _, err := c.Write(seqMsg(uint32(i), size)); err != nil {
				done <- err
				return
			}
			accepted.Add(1)
		}
		done <- nil
	}()
	// Wait until the writer is blocked: its Write is parked.
	waitBlocked(t, "(*TCPConn).Write")
	if last := accepted.Load(); last >= int64(total) {
		t.Fatalf("the writer never blocked (%d of %d messages accepted)", last, total)
	}
	st := c.Stats()
	inLibrary := accepted.Load() - int64(st.MessagesWritten) - int64(st.WriteErrors)
	if inLibrary*(size+4) > 2*bufSize+size+4 {
		t.Errorf("%d messages (%d KiB) held by the library while blocked, beyond two buffers of %d KiB", inLibrary, inLibrary*(size+4)>>10, bufSize>>10)
	}
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	if grew := int64(during.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Errorf("heap grew by %d MiB while the writer was blocked", grew>>20)
	}
	t.Logf("writer blocked after %d of %d messages (%d KiB in the kernel, %d messages in the library); heap %+d KiB",
		accepted.Load(), total, int64(st.MessagesWritten)*(size+4)>>10, inLibrary, (int64(during.HeapAlloc)-int64(before.HeapAlloc))>>10)
	g.release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the writer did not finish after the server caught up (%d of %d)", accepted.Load(), total)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every message", func() bool { return g.received.n.Load() == int64(total) })
	if st := c.Stats(); st.MessagesWritten != uint64(total) || st.WriteErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
	got, _ := g.received.snapshot()
	if len(got) != total {
		t.Fatalf("%d distinct messages received, want %d", len(got), total)
	}
}

// TestWriteBatchAccounting checks that WriteBatch passes the messages it
// refuses to OnWriteError and writes the others, in order.
func TestWriteBatchAccounting(t *testing.T) {
	for _, bufSize := range []int{0, 4096} {
		t.Run(map[int]string{0: "default mode", 4096: "batching mode"}[bufSize], func(t *testing.T) {
			leakCheck(t)
			received, hooked := newSeqLog(), newSeqLog()
			var order []uint32
			var mu sync.Mutex
			l := listen(t, bs.TCPListenerConfig{MaxMessageSize: 100, Framing: bs.Uvarint, Callback: func(p []byte) error {
				mu.Lock()
				order = append(order, binary.BigEndian.Uint32(p))
				mu.Unlock()
				return received.callback(p)
			}})
			c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 100, Framing: bs.Uvarint, WriteBufferSize: bufSize, OnWriteError: hooked.hook})
			batch := [][]byte{seqMsg(0, 10), seqMsg(1, 101), seqMsg(2, 100), seqMsg(3, 500), seqMsg(4, 4)}
			n, err := c.WriteBatch(batch)
			if n != 3 || !errors.Is(err, bs.ErrMessageTooLarge) {
				t.Fatalf("WriteBatch = %d, %v; want 3 and ErrMessageTooLarge", n, err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "three messages", func() bool { return received.n.Load() == 3 })
			c.Close()
			checkAccounting(t, c, len(batch), hooked, received)
			failed, _ := hooked.snapshot()
			mu.Lock()
			defer mu.Unlock()
			if failed[1] != 1 || failed[3] != 1 || !slices.Equal(order, []uint32{0, 2, 4}) {
				t.Fatalf("refused %v, received %v", failed, order)
			}
		})
	}
}

// TestCloseDrains checks that Close in batching mode writes everything
// buffered before it closes.
func TestCloseDrains(t *testing.T) {
	leakCheck(t)
	received := newSeqLog()
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: received.callback})
	const n = 5000
	c := dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: 64 << 10, FlushInterval: time.Hour})
	for i := range n {
		if _, err := c.Write(seqMsg(uint32(i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every message", func() bool { return received.n.Load() == n || l.Stats().Active == 0 && l.Stats().Accepted == 1 })
	eventually(t, "the server done", func() bool { return l.Stats().Active == 0 })
	got, _ := received.snapshot()
	if len(got) != n || c.Stats().MessagesWritten != n {
		t.Fatalf("Close delivered %d of %d buffered messages (stats %+v)", len(got), n, c.Stats())
	}
}

// TestWireBytes checks the exact bytes Write puts on the wire.
func TestWireBytes(t *testing.T) {
	rl := newRawListener(t)
	hello := []byte("hello world")
	for _, tc := range []struct {
		name string
		cfg  bs.TCPConnConfig
		data []byte
		want string
	}{
		{"buffstreams 2.0, 110 bytes", bs.TCPConnConfig{}, make([]byte, 110), "dc0100" + hex.EncodeToString(make([]byte, 110))},
		{"buffstreams 2.0, max 255", bs.TCPConnConfig{MaxMessageSize: 255}, hello, "1600" + hex.EncodeToString(hello)},
		{"buffstreams 2.0, empty", bs.TCPConnConfig{}, nil, "000000"},
		{"uvarint", bs.TCPConnConfig{Framing: bs.Uvarint}, hello, "0b" + hex.EncodeToString(hello)},
		{"fixed4 (tokio, Netty)", bs.TCPConnConfig{Framing: bs.Fixed4}, hello, "0000000b" + hex.EncodeToString(hello)},
		{"fixed8", bs.TCPConnConfig{Framing: bs.Fixed8}, hello, "000000000000000b" + hex.EncodeToString(hello)},
		{"uvarint, vectored", bs.TCPConnConfig{Framing: bs.Uvarint, MaxMessageSize: 1 << 20}, bytes.Repeat([]byte{7}, 300000), "e0a712" + hex.EncodeToString(bytes.Repeat([]byte{7}, 300000))},
	} {
		c := dialAddr(t, rl.Addr().String(), tc.cfg)
		nc := rl.accept(t)
		read := make(chan []byte, 1)
		go func() { // Close waits for the peer's TCP: read meanwhile
			got, err := io.ReadAll(nc)
			if err != nil {
				t.Error(err)
			}
			read <- got
		}()
		if n, err := c.Write(tc.data); err != nil || n != len(tc.data) {
			t.Fatalf("%s: Write = %d, %v; want %d, nil", tc.name, n, err, len(tc.data))
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		got := <-read
		if g := hex.EncodeToString(got); g != tc.want {
			t.Errorf("%s: wire bytes %.40s..., want %.40s...", tc.name, g, tc.want)
		}
	}
}

// TestWriteTooLarge checks that an oversized message is refused and that
// nothing of it is sent.
func TestWriteTooLarge(t *testing.T) {
	rl := newRawListener(t)
	for _, tc := range []struct {
		cfg  bs.TCPConnConfig
		size int
	}{
		{bs.TCPConnConfig{}, 4097},
		{bs.TCPConnConfig{}, 2 << 20}, // BuffStreams 2.0 panicked here
		{bs.TCPConnConfig{Framing: bs.Fixed1, MaxMessageSize: 4096}, 256},
		{bs.TCPConnConfig{MaxMessageSize: 100, Framing: bs.Fixed4}, 101},
	} {
		c := dialAddr(t, rl.Addr().String(), tc.cfg)
		nc := rl.accept(t)
		if n, err := c.Write(make([]byte, tc.size)); !errors.Is(err, bs.ErrMessageTooLarge) || n != 0 {
			t.Fatalf("Write(%d bytes) = %d, %v; want ErrMessageTooLarge", tc.size, n, err)
		}
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatalf("the connection is unusable after a refused write: %v", err)
		}
		c.Close()
		got, _ := io.ReadAll(nc)
		if len(got) > 9 {
			t.Fatalf("%d bytes on the wire, want only the small message", len(got))
		}
		if st := c.Stats(); st.WriteErrors != 1 || st.MessagesWritten != 1 {
			t.Fatalf("stats %+v", st)
		}
	}
}

// TestWriteAllocs checks that Write allocates nothing, on the copying path
// and on the vectored one.
func TestWriteAllocs(t *testing.T) {
	l := listen(t, bs.TCPListenerConfig{MaxMessageSize: 1 << 20, Callback: func([]byte) error { return nil }})
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 1 << 20})
	for _, n := range []int{110, 4096, 64 << 10} {
		msg := make([]byte, n)
		if _, err := c.Write(msg); err != nil { // allocates the write buffer
			t.Fatal(err)
		}
		var failed error
		a := testing.AllocsPerRun(200, func() {
			if m, err := c.Write(msg); (err != nil || m != n) && failed == nil {
				failed = fmt.Errorf("Write of %d bytes = %d, %v", n, m, err)
			}
		})
		if failed != nil {
			t.Fatal(failed)
		}
		if a != 0 {
			t.Errorf("Write of %d bytes: %.1f allocations, want 0", n, a)
		}
	}
}
