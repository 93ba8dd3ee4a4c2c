package buffstreams_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestRoundTrip sends every size from empty to MaxMessageSize in every
// framing and checks each message arrives intact and in order.
func TestRoundTrip(t *testing.T) {
	for _, fr := range framings {
		t.Run(fr.name, func(t *testing.T) {
			const max = 4096
			s := newSink()
			l := listen(t, bs.TCPListenerConfig{MaxMessageSize: max, Framing: fr.f, Callback: s.callback})
			c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: max, Framing: fr.f})
			limit := c.MaxMessageSize()
			var sent [][]byte
			for _, n := range []int{0, 1, 63, 64, 127, 128, 255, 256, 1000, 4095, 4096} {
				if n > limit {
					continue
				}
				p := payload(n, n)
				if got, err := c.Write(p); err != nil || got != n {
					t.Fatalf("Write(%d bytes) = %d, %v", n, got, err)
				}
				sent = append(sent, p)
			}
			got := s.wait(t, len(sent))
			for i := range sent {
				if !bytes.Equal(got[i], sent[i]) {
					t.Fatalf("message %d: got %d bytes, want %d bytes", i, len(got[i]), len(sent[i]))
				}
			}
		})
	}
}

// TestOrderPerConnection checks that the messages of one connection reach
// the callback in the order they were written.
func TestOrderPerConnection(t *testing.T) {
	const n = 20000
	var next atomic.Uint64
	var bad atomic.Bool
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Uvarint, Callback: func(p []byte) error {
		if binary.BigEndian.Uint64(p) != next.Load() {
			bad.Store(true)
		}
		next.Add(1)
		return nil
	}})
	c := dial(t, l, bs.TCPConnConfig{Framing: bs.Uvarint})
	msg := make([]byte, 110)
	for i := range n {
		binary.BigEndian.PutUint64(msg, uint64(i))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "all messages", func() bool { return next.Load() == n })
	if bad.Load() {
		t.Fatal("messages arrived out of order")
	}
}

// TestConcurrentWriters has 1,000 goroutines write on one connection and
// checks that every message arrives whole, none interleaved with another,
// and each writer's messages in its order.
func TestConcurrentWriters(t *testing.T) {
	const writers, each = 1000, 20
	var mu sync.Mutex
	seen := make(map[uint32]uint32) // writer -> next sequence number
	var bad atomic.Value
	l := listen(t, bs.TCPListenerConfig{MaxMessageSize: 1 << 16, Framing: bs.Fixed4, Callback: func(p []byte) error {
		if len(p) < 8 {
			bad.Store("short message")
			return nil
		}
		w, seq := binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])
		if !bytes.Equal(p[8:], payload(int(w+seq), len(p)-8)) {
			bad.Store("corrupt message")
		}
		mu.Lock()
		if seen[w] != seq {
			bad.Store("out of order")
		}
		seen[w] = seq + 1
		mu.Unlock()
		return nil
	}})
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 1 << 16, Framing: bs.Fixed4})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for seq := range each {
				// Sizes from 8 bytes to 40 KiB, so some take the vectored path.
				n := 8 + (w*each+seq)%97*421
				p := append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(w)), uint32(seq)), payload(w+seq, n-8)...)
				if _, err := c.Write(p); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "all messages", func() bool { return l.Stats().Messages == writers*each })
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if st := c.Stats(); st.MessagesWritten != writers*each || st.WriteErrors != 0 {
		t.Fatalf("connection stats %+v", st)
	}
}

// hostile lists inputs that must close the connection that sends them, per
// framing (MaxMessageSize 4096), with whether the server must count them as
// bad input once the sender stops.
func hostile(name string) map[string][]byte {
	huge := map[string][]byte{
		"buffstreams": {0x80, 0x80, 0x02}, // 2^14 > 4096
		"uvarint":     {0x80, 0x80, 0x80, 0x80, 0x08},
		"fixed1":      nil, // every length fits under the limit
		"fixed2":      {0xff, 0xff},
		"fixed3":      {0xff, 0xff, 0xff},
		"fixed4":      {0x80, 0, 0, 0}, // 2 GiB
		"fixed8":      {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"fixed2le":    {0xff, 0xff},
		"fixed4le":    {0, 0, 0, 0x80}, // 2 GiB
		"fixed8le":    {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"fixed4incl":  {0x80, 0, 0, 0},
	}
	in := map[string][]byte{
		"truncated":      {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 'x'},
		"http":           []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"tls hello":      {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		"random":         random(4096),
		"endless varint": bytes.Repeat([]byte{0xff}, 64),
	}
	if h := huge[name]; h != nil {
		in["declared too large"] = h
	}
	switch name {
	case "buffstreams":
		in["negative"] = []byte{0x01, 0x00, 0x00}
		in["padding"] = []byte{0x02, 0x00, 0x01}
		in["overlong"] = []byte{0x80, 0x00, 0x00}
		in["truncated"] = []byte{0xdc, 0x01, 0x00, 'x'}
		in["2 GiB"] = []byte{0x80, 0x80, 0x80, 0x80, 0x10}
	case "fixed4incl":
		in["below the header"] = []byte{0, 0, 0, 3}
	case "uvarint":
		in["11-byte varint"] = append(bytes.Repeat([]byte{0x80}, 10), 0)
		in["truncated"] = []byte{0xac, 0x02, 'x'}
	}
	return in
}

func random(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// TestBadInput sends each hostile input on its own connection while a good
// connection streams, and checks that only the hostile connection closes,
// that every good message arrives, and that no oversized buffer is
// allocated.
func TestBadInput(t *testing.T) {
	for _, fr := range framings {
		t.Run(fr.name, func(t *testing.T) {
			var good atomic.Uint64
			l := listen(t, bs.TCPListenerConfig{Framing: fr.f, Callback: func(p []byte) error {
				if len(p) == 100 && p[0] == 'g' {
					good.Add(1)
				}
				return nil
			}})
			c := dial(t, l, bs.TCPConnConfig{Framing: fr.f})
			msg := append([]byte{'g'}, make([]byte, 99)...)
			stop := make(chan struct{})
			var sent atomic.Uint64
			var wg sync.WaitGroup
			wg.Go(func() {
				deadline := time.Now().Add(60 * time.Second)
				for i := 0; i < 5_000_000 && time.Now().Before(deadline); i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c.Write(msg); err != nil {
						t.Error(err)
						return
					}
					sent.Add(1)
					if i%64 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			})

			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			for name, in := range hostile(fr.name) {
				nc := rawDial(t, l.Addr())
				if _, err := nc.Write(in); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				// Inputs that are a valid start of a frame in this framing
				// (HTTP read as a 71-byte uvarint frame, say) become
				// truncated frames once the peer stops sending.
				nc.(*net.TCPConn).CloseWrite()
				nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, syscallReset) {
					t.Errorf("%s: connection not closed by the server: %v", name, err)
				}
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Errorf("hostile inputs allocated %d MiB", grew>>20)
			}
			// The good connection is still up and delivering.
			mark := good.Load()
			eventually(t, "good messages after the hostile ones", func() bool { return good.Load() > mark+100 })
			close(stop)
			wg.Wait()
			eventually(t, "every good message", func() bool { return good.Load() == sent.Load() })
			if st := l.Stats(); st.BadInput < uint64(len(hostile(fr.name))-2) || st.Active != 1 {
				t.Errorf("stats %+v: want bad input counted and only the good connection active", st)
			}
		})
	}
}

// TestDeclaredHugeDoesNotAllocate checks the heap after a header declaring
// 2 GiB with the largest MaxMessageSize: the length is rejected or, when
// allowed, the buffer grows only with the bytes that actually arrive.
func TestDeclaredHugeDoesNotAllocate(t *testing.T) {
	l := listen(t, bs.TCPListenerConfig{MaxMessageSize: 1 << 20, Framing: bs.Fixed4, Callback: func([]byte) error { return nil }})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	nc := rawDial(t, l.Addr())
	if _, err := nc.Write([]byte{0x7f, 0xff, 0xff, 0xff, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, nc)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("a 2 GiB header cost %d MiB", grew>>20)
	}
	eventually(t, "bad input counted", func() bool { return l.Stats().BadInput == 1 })
}

// TestCallbackPanic checks that a panicking callback closes only its
// connection.
func TestCallbackPanic(t *testing.T) {
	s := newSink()
	l := listen(t, bs.TCPListenerConfig{Callback: func(p []byte) error {
		if string(p) == "boom" {
			panic("boom")
		}
		return s.callback(p)
	}})
	good := dial(t, l, bs.TCPConnConfig{})
	bad := dial(t, l, bs.TCPConnConfig{})
	if _, err := good.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	s.wait(t, 1)
	if _, err := bad.Write([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the panic", func() bool { return l.Stats().Panics == 1 })
	if _, err := bad.Read(make([]byte, 10)); err == nil {
		t.Fatal("the panicking connection is still open")
	}
	if _, err := good.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	if got := s.wait(t, 2); string(got[1]) != "two" {
		t.Fatalf("got %q", got)
	}
}

// TestCallbackError checks that an error from the callback is counted and
// the connection keeps reading, as in BuffStreams 2.0.
func TestCallbackError(t *testing.T) {
	var calls atomic.Int32
	l := listen(t, bs.TCPListenerConfig{Callback: func(p []byte) error {
		calls.Add(1)
		return errors.New("cannot parse")
	}})
	c := dial(t, l, bs.TCPConnConfig{})
	for range 3 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "three calls", func() bool { return calls.Load() == 3 })
	if st := l.Stats(); st.CallbackErrors != 3 || st.Active != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCloseDuringTraffic closes a listener while connections stream and
// checks that Close returns, that the callback is not called afterwards and
// that no goroutine of the listener survives.
func TestCloseDuringTraffic(t *testing.T) {
	var calls, late atomic.Int64
	var closed atomic.Bool // set once Close has returned
	l, err := bs.ListenTCP(bs.TCPListenerConfig{Address: "127.0.0.1:0", Callback: func([]byte) error {
		if closed.Load() {
			late.Add(1)
		}
		calls.Add(1)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		c := dial(t, l, bs.TCPConnConfig{})
		wg.Go(func() {
			msg := make([]byte, 110)
			for i := 0; i < 1_000_000; i++ {
				if _, err := c.Write(msg); err != nil {
					return
				}
			}
		})
	}
	eventually(t, "traffic", func() bool { return calls.Load() > 1000 })
	l.Close()
	closed.Store(true)
	// Once no read loop is left, nothing can call the callback any more.
	if g := listenerGoroutines(); g != "" {
		t.Fatalf("goroutines of the listener running after Close returned:\n%s", g)
	}
	if n := late.Load(); n != 0 {
		t.Fatalf("callback called %d times after Close returned", n)
	}
	wg.Wait() // writers fail once the server side is gone
	l.Close() // a second Close returns quietly
	if err := l.StartListeningAsync(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("StartListeningAsync after Close: %v, want net.ErrClosed", err)
	}
}

// TestStartListening checks the blocking and asynchronous starts.
func TestStartListening(t *testing.T) {
	l, err := bs.ListenTCP(bs.TCPListenerConfig{Address: "127.0.0.1:0", Callback: func([]byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.StartListening() }()
	c := dial(t, l, bs.TCPConnConfig{})
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message", func() bool { return l.Stats().Messages == 1 })
	if err := l.StartListeningAsync(); !errors.Is(err, bs.ErrAlreadyListening) {
		t.Fatalf("second start: %v, want ErrAlreadyListening", err)
	}
	l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("StartListening returned %v after Close, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("StartListening did not return after Close")
	}
	if err := l.StartListening(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("StartListening after Close: %v", err)
	}
}

// TestCloseBeforeStart closes a listener that never accepted.
func TestCloseBeforeStart(t *testing.T) {
	l, err := bs.ListenTCP(bs.TCPListenerConfig{Address: "127.0.0.1:0", Callback: func([]byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	l.Close()
	// The socket is released: the port can be bound again.
	l2, err := bs.ListenTCP(bs.TCPListenerConfig{Address: addr, Callback: func([]byte) error { return nil }})
	if err != nil {
		t.Fatalf("rebinding %s after Close: %v", addr, err)
	}
	l2.Close()
}

func TestListenTCPErrors(t *testing.T) {
	cb := func([]byte) error { return nil }
	for name, cfg := range map[string]bs.TCPListenerConfig{
		"no callback":     {Address: "127.0.0.1:0"},
		"negative max":    {Address: "127.0.0.1:0", Callback: cb, MaxMessageSize: -1},
		"max above limit": {Address: "127.0.0.1:0", Callback: cb, MaxMessageSize: bs.MaxMessageSizeLimit + 1},
	} {
		if _, err := bs.ListenTCP(cfg); !errors.Is(err, bs.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
	l := listen(t, bs.TCPListenerConfig{Callback: cb})
	if _, err := bs.ListenTCP(bs.TCPListenerConfig{Address: l.Addr().String(), Callback: cb}); err == nil {
		t.Error("a second listener bound the same address")
	}
}

// TestManyConnections opens and closes connections repeatedly and checks the
// listener forgets each one.
func TestManyConnections(t *testing.T) {
	l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }})
	for i := range 200 {
		c := dial(t, l, bs.TCPConnConfig{})
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	eventually(t, "all connections closed", func() bool {
		st := l.Stats()
		return st.Active == 0 && st.Accepted == 200 && st.Messages == 200
	})
}

// TestCloseDuringShutdown checks that Close is immediate even while
// Shutdown waits for a client that never pauses, and that Shutdown then
// returns too.
//
// The server is slower than the client, so once the client's Write blocks
// the kernel holds far more than the server reads in the 50 ms drain pause:
// a client descheduled for a while on a busy machine still never looks
// paused to Shutdown.
func TestCloseDuringShutdown(t *testing.T) {
	var calls atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error {
		if calls.Add(1)%8 == 0 {
			time.Sleep(time.Millisecond) // a slow consumer, about 800 bytes a millisecond
		}
		return nil
	}})
	c := dial(t, l, bs.TCPConnConfig{})
	stop := make(chan struct{})
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		msg := payload(1, 100)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write(msg); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-sending }()
	eventually(t, "messages flowing", func() bool { return l.Stats().Messages > 100 })
	waitBlocked(t, "(*TCPConn).Write", "IO wait") // the kernel's buffers are full

	shut := make(chan error, 1)
	go func() { shut <- l.Shutdown(t.Context()) }() // the client never pauses: this waits
	waitBlocked(t, "(*TCPListener).Shutdown")
	// Shutdown keeps waiting while 500 more messages are delivered.
	mark := calls.Load()
	eventually(t, "500 messages during Shutdown", func() bool {
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v while the client was still sending", err)
		default:
		}
		return calls.Load() >= mark+500
	})
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close during Shutdown did not return")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after Close")
	}
}
