package buffstreams_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
			bg := streamInBackground(t, c, 5_000_000, 64, func(int) []byte { return msg })

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
			bg.end()
			eventually(t, "every good message", func() bool { return good.Load() == uint64(bg.sent.Load()) })
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

// TestConnCallbackEcho: a server replies through ConnCallback and the
// client reads every reply, in order, over 10,000 round trips.
func TestConnCallbackEcho(t *testing.T) {
	l := apiStart(t, bs.TCPListenerConfig{ConnCallback: apiEcho}, nil)
	c := dial(t, l, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	const n = 10_000
	apiRoundTrip(t, c, n)
	if st := c.Stats(); st.MessagesWritten != n || st.MessagesRead != n || st.WriteErrors != 0 {
		t.Errorf("client stats %+v, want %d written and read", st, n)
	}
	eventually(t, "the listener to count every message", func() bool { return l.Stats().Messages == n })
}

// TestBroadcastChat: every message a client sends is relayed with
// Broadcast to every other client, never back to its sender, in the order
// the sender wrote them.
func TestBroadcastChat(t *testing.T) {
	const clients, each = 5, 200
	var badCount atomic.Int64
	var l *bs.TCPListener // set before the listener accepts
	apiStart(t, bs.TCPListenerConfig{ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		n, err := l.Broadcast(msg, conn)
		if n != clients-1 {
			badCount.Add(1)
		}
		return err
	}}, func(x *bs.TCPListener) { l = x })
	cs := make([]*bs.TCPConn, clients)
	for i := range cs {
		cs[i] = dial(t, l, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	}
	eventually(t, "every client to be served", func() bool { return l.Conns() == clients })

	var wg sync.WaitGroup
	for id, c := range cs {
		wg.Go(func() {
			for i := range each {
				if _, err := c.Write([]byte(fmt.Sprintf("%d:%d", id, i))); err != nil {
					t.Errorf("client %d write %d: %v", id, i, err)
					return
				}
			}
		})
		wg.Go(func() {
			next := make([]int, clients)
			for k := 0; k < (clients-1)*each; k++ {
				msg, err := readOne(c)
				if err != nil {
					t.Errorf("client %d after %d messages: %v", id, k, err)
					return
				}
				var from, i int
				if _, err := fmt.Sscanf(msg, "%d:%d", &from, &i); err != nil {
					t.Errorf("client %d got %q", id, msg)
					return
				}
				if from == id {
					t.Errorf("client %d got its own message %q", id, msg)
					return
				}
				if i != next[from] {
					t.Errorf("client %d got %q, want %d:%d", id, msg, from, next[from])
					return
				}
				next[from]++
			}
		})
	}
	wg.Wait()
	if n := badCount.Load(); n != 0 {
		t.Errorf("%d Broadcasts did not reach %d clients", n, clients-1)
	}
	// A Broadcast with no exception reaches everyone, and is the next
	// message each reads: nobody got an echo of its own.
	n, err := l.Broadcast([]byte("bye"), nil)
	if n != clients || err != nil {
		t.Fatalf("Broadcast = %d, %v; want %d", n, err, clients)
	}
	for id, c := range cs {
		if msg, err := readOne(c); msg != "bye" || err != nil {
			t.Errorf("client %d: %q, %v; want bye", id, msg, err)
		}
	}
}

// TestBroadcastSkipsClosed: a connection closed by its peer is no longer
// counted by Broadcast, and a Broadcast with no connection is not an error.
func TestBroadcastSkipsClosed(t *testing.T) {
	l := apiStart(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }}, nil)
	if n, err := l.Broadcast([]byte("nobody"), nil); n != 0 || err != nil {
		t.Fatalf("Broadcast to nobody = %d, %v", n, err)
	}
	a := dial(t, l, bs.TCPConnConfig{ReadTimeout: 10 * time.Second})
	b := dial(t, l, bs.TCPConnConfig{})
	eventually(t, "two connections", func() bool { return l.Conns() == 2 })
	b.Close()
	eventually(t, "one connection", func() bool { return l.Conns() == 1 && l.Stats().Active == 1 })
	if n, err := l.Broadcast([]byte("left"), nil); n != 1 || err != nil {
		t.Fatalf("Broadcast = %d, %v; want 1", n, err)
	}
	if msg, err := readOne(a); msg != "left" || err != nil {
		t.Fatalf("read %q, %v", msg, err)
	}
}

// TestNewListenerUnix serves a Unix socket listener made by the caller;
// clients reach it with Network "unix" and with NewConn.
func TestNewListenerUnix(t *testing.T) {
	path := apiSocketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l := apiServe(t, ln, bs.TCPListenerConfig{ConnCallback: apiEcho})
	if l.Addr().Network() != "unix" || l.Addr().String() != path {
		t.Errorf("Addr = %v %v", l.Addr().Network(), l.Addr())
	}
	c, err := bs.DialTCP(&bs.TCPConnConfig{Network: "unix", Address: path, ReadTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	apiRoundTrip(t, c, 100)

	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	w := apiWrap(t, nc, &bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	apiRoundTrip(t, w, 100)
	if st := l.Stats(); st.Accepted != 2 || st.Active != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestNewListenerTLS serves a tls.Listener made by the caller: its
// connections complete the handshake, and the callback sees the TLS state.
func TestNewListenerTLS(t *testing.T) {
	srv, cli := apiTLS(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var plain atomic.Int64
	l := apiServe(t, tls.NewListener(raw, srv), bs.TCPListenerConfig{ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		if st, ok := conn.ConnectionState(); !ok || !st.HandshakeComplete {
			plain.Add(1)
		}
		return apiEcho(conn, msg)
	}})
	c := dial(t, l, bs.TCPConnConfig{TLSConfig: cli, ReadTimeout: 20 * time.Second})
	apiRoundTrip(t, c, 500)
	if _, ok := c.ConnectionState(); !ok {
		t.Error("the client connection is not TLS")
	}

	// A TLS connection dialed by the caller, wrapped with NewConn.
	tc, err := tls.Dial("tcp", l.Addr().String(), cli)
	if err != nil {
		t.Fatal(err)
	}
	w := apiWrap(t, tc, &bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	apiRoundTrip(t, w, 500)
	if n := plain.Load(); n != 0 {
		t.Errorf("%d callbacks saw a connection without a completed handshake", n)
	}
	if st := l.Stats(); st.Messages == 0 || st.TLSErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestNetworkUnix listens and dials with Network "unix". Closing the
// listener removes the socket file, so the path can be listened on again.
func TestNetworkUnix(t *testing.T) {
	path := apiSocketPath(t)
	for round := range 2 {
		l, err := bs.ListenTCPContext(context.Background(), bs.TCPListenerConfig{Network: "unix", Address: path, ConnCallback: apiEcho})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := l.StartListeningAsync(); err != nil {
			t.Fatal(err)
		}
		if a := l.Addr(); a.Network() != "unix" || a.String() != path {
			t.Errorf("Addr = %s %s", a.Network(), a)
		}
		c, err := bs.DialTCPContext(context.Background(), &bs.TCPConnConfig{Network: "unix", Address: path, ReadTimeout: 20 * time.Second})
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		apiRoundTrip(t, c, 100)
		c.Close()
		l.Close()
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file after Close: %v", err)
		}
	}
	if _, err := bs.DialTCP(&bs.TCPConnConfig{Network: "unix", Address: path}); err == nil {
		t.Error("dialed a closed Unix socket")
	}
}

// TestStatsUnderTraffic reads the counters at least 10,000 times, and
// until the clients are done, while they stream, a callback fails now and then and a connection sends garbage,
// and checks that every read is consistent and none waits; then it checks
// the final counts. A connection whose Write is stuck on a peer that does
// not read must answer Stats too.
func TestStatsUnderTraffic(t *testing.T) {
	const clients, each, size, failEvery = 4, 5000, 100, 50
	l := apiStart(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: func(p []byte) error {
		if p[0] == 'E' {
			return errors.New("refused")
		}
		return nil
	}}, nil)
	cs := make([]*bs.TCPConn, clients)
	for i := range cs {
		cs[i] = dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4})
	}

	// A writer stuck on a peer that accepted but never reads.
	stuckPeer := newRawListener(t)
	stuck := dialAddr(t, stuckPeer.Addr().String(), bs.TCPConnConfig{MaxMessageSize: 1 << 20})
	stuckNC := stuckPeer.accept(t)
	stuckDone := make(chan struct{})
	go func() {
		defer close(stuckDone)
		big := make([]byte, 1<<20)
		for range 1000 {
			if _, err := stuck.Write(big); err != nil {
				return
			}
		}
	}()

	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			msg := make([]byte, size)
			for i := range each {
				msg[0] = 'g'
				if i%failEvery == 0 {
					msg[0] = 'E'
				}
				if _, err := c.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	bad := rawDial(t, l.Addr())
	if _, err := bad.Write([]byte{0x80, 0, 0, 0}); err != nil { // declares 2 GiB
		t.Fatal(err)
	}

	var streaming atomic.Bool
	streaming.Store(true)
	go func() { wg.Wait(); streaming.Store(false) }()
	reads := make(chan error, 1)
	var during atomic.Int64 // reads that saw the stream under way
	go func() {
		var last bs.ListenerStats
		lastOut := make([]uint64, clients)
		for i := 0; i < 10_000 || streaming.Load(); i++ {
			st := l.Stats()
			if st.Messages > 0 && st.Messages < clients*each {
				during.Add(1)
			}
			switch {
			case st.Messages < last.Messages || st.Bytes < last.Bytes || st.Accepted < last.Accepted:
				reads <- fmt.Errorf("read %d: counters went back: %+v after %+v", i, st, last)
				return
			case st.Bytes < st.Messages*size:
				reads <- fmt.Errorf("read %d: %d messages but only %d bytes", i, st.Messages, st.Bytes)
				return
			case st.Active < 0 || st.Active > clients+1:
				reads <- fmt.Errorf("read %d: %d active of %d accepted", i, st.Active, st.Accepted)
				return
			}
			last = st
			for k, c := range cs {
				out := c.Stats().MessagesWritten
				if out < lastOut[k] {
					reads <- fmt.Errorf("read %d: client %d went back", i, k)
					return
				}
				lastOut[k] = out
			}
			_ = stuck.Stats()
		}
		reads <- nil
	}()
	select {
	case err := <-reads:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("10,000 reads of Stats did not finish: Stats blocks")
	}
	wg.Wait()
	t.Logf("%d reads of Stats saw the stream under way", during.Load())

	const total = clients * each
	eventually(t, "the final counts", func() bool {
		st := l.Stats()
		return st.Messages == total && st.BadInput == 1 && st.Active == clients
	})
	st := l.Stats()
	want := bs.ListenerStats{
		Accepted:       clients + 1,
		Active:         clients,
		Messages:       total,
		Bytes:          total * size,
		CallbackErrors: total / failEvery,
		BadInput:       1,
	}
	if st != want {
		t.Errorf("listener stats\n%+v, want\n%+v", st, want)
	}
	if _, err := cs[0].Write(make([]byte, 5000)); !errors.Is(err, bs.ErrMessageTooLarge) {
		t.Errorf("oversized Write: %v", err)
	}
	for k, c := range cs {
		want := bs.ConnStats{MessagesWritten: each, BytesWritten: each * size}
		if k == 0 {
			want.WriteErrors = 1
		}
		if got := c.Stats(); got != want {
			t.Errorf("client %d: %+v, want %+v", k, got, want)
		}
		c.Close()
	}
	eventually(t, "no active connection", func() bool { return l.Stats().Active == 0 })
	select {
	case <-stuckDone:
		t.Error("the stuck writer was not stuck")
	default:
	}
	// The peer reads at last, so that Close need not wait out its
	// WriteTimeout for the peer's TCP to acknowledge what it holds.
	go io.Copy(io.Discard, stuckNC)
	stuck.Close()
	<-stuckDone
}

// TestReplyFailsInCallback: a reply that fails inside the callback (by
// WriteTimeout, the peer not reading) is returned to the callback as
// ErrWriteTimeout, and the read loop then ends cleanly: it is not counted
// as a panic, and the connection is closed.
func TestReplyFailsInCallback(t *testing.T) {
	errs := make(chan error, 1)
	l := apiStart(t, bs.TCPListenerConfig{
		MaxMessageSize: 1 << 20,
		IdleTimeout:    time.Minute,
		WriteTimeout:   100 * time.Millisecond,
		ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
			big := make([]byte, 1<<20)
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				_, err = conn.Write(big)
			}
			errs <- err
			return err
		},
	}, nil)
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 1 << 20}) // never reads
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, bs.ErrWriteTimeout) {
		t.Errorf("reply to a peer that does not read: %v; want ErrWriteTimeout", err)
	}
	eventually(t, "the connection to be dropped", func() bool { return l.Stats().Active == 0 })
	if st := l.Stats(); st.Panics != 0 || st.CallbackErrors != 1 {
		t.Errorf("stats %+v; want no panic and 1 callback error", st)
	}
}

// TestSlowloris opens connections that each send one byte of a header and
// stall, while good clients stream: the good messages all arrive while the
// others stall, and every stalled connection is closed once ReadTimeout has
// passed since its byte, and counted in Timeouts.
func TestSlowloris(t *testing.T) {
	leakCheck(t)
	const readTimeout = 300 * time.Millisecond
	slow, goods, each := 200, 10, 50
	if testing.Short() {
		slow = 50
	}
	var good atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, ReadTimeout: readTimeout,
		Callback: func([]byte) error { good.Add(1); return nil }})
	gc := make([]*bs.TCPConn, goods)
	for i := range gc {
		gc[i] = dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4})
	}
	// Connected and idle is allowed (IdleTimeout is zero): only a frame
	// in progress is timed.
	raws := make([]net.Conn, slow)
	for i := range raws {
		raws[i] = rawDial(t, l.Addr())
	}
	eventually(t, "all connections accepted", func() bool { return l.Stats().Active == int64(slow+goods) })

	sentAt := make([]time.Time, slow)
	closed := make([]time.Duration, slow)
	var readers sync.WaitGroup
	for i, nc := range raws {
		sentAt[i] = time.Now()
		if _, err := nc.Write([]byte{0}); err != nil {
			t.Fatal(err)
		}
		readers.Go(func() {
			nc.SetReadDeadline(time.Now().Add(readTimeout + 10*time.Second))
			_, err := nc.Read(make([]byte, 1))
			closed[i] = time.Since(sentAt[i])
			if isTimeout(err) {
				closed[i] = -1
			}
		})
	}

	// The good clients, during the stall.
	var writers sync.WaitGroup
	for i, c := range gc {
		writers.Go(func() {
			for j := range each {
				if _, err := c.Write(seqMsg(uint32(i*each+j), 32)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	writers.Wait()
	eventually(t, "the good messages", func() bool { return good.Load() == int64(goods*each) })
	servedIn := time.Since(sentAt[slow-1])
	if st := l.Stats(); st.Timeouts != 0 || st.Active != int64(slow+goods) {
		t.Fatalf("the good messages took %v to arrive; by then stats were %+v: they were not served while the others stalled", servedIn, st)
	}

	readers.Wait()
	for i, d := range closed {
		if d < 0 {
			t.Fatalf("stalled connection %d still open %v after its byte", i, readTimeout+10*time.Second)
		}
		if d < readTimeout {
			t.Fatalf("stalled connection %d closed after %v, before ReadTimeout (%v)", i, d, readTimeout)
		}
	}
	eventually(t, "the timeouts counted", func() bool { return l.Stats().Timeouts == uint64(slow) })
	sorted := slices.Clone(closed)
	slices.Sort(sorted)
	t.Logf("%d stalled connections closed after %v (median) to %v (max) with ReadTimeout %v; %d good messages served in %v meanwhile",
		slow, sorted[slow/2].Round(time.Millisecond), sorted[slow-1].Round(time.Millisecond), readTimeout, goods*each, servedIn.Round(time.Millisecond))
	if max := sorted[slow-1]; max > readTimeout+5*time.Second {
		t.Errorf("the last stalled connection closed after %v", max)
	}
	eventually(t, "the stalled connections gone", func() bool { return l.Stats().Active == int64(goods) })
	if st := l.Stats(); st.BadInput != 0 {
		t.Fatalf("stats %+v: want no bad input", st)
	}
	if _, err := gc[0].Write(seqMsg(0, 32)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a good message after the timeouts", func() bool { return good.Load() == int64(goods*each+1) })
}

// TestReadTimeoutTrickle sends a frame one byte every 40 ms: bytes that keep
// arriving do not extend ReadTimeout, which bounds the whole frame.
func TestReadTimeoutTrickle(t *testing.T) {
	leakCheck(t)
	const readTimeout = 300 * time.Millisecond
	var calls atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, ReadTimeout: readTimeout,
		Callback: func([]byte) error { calls.Add(1); return nil }})
	nc := rawDial(t, l.Addr())
	frame := append([]byte{0, 0, 0, 30}, payload(1, 30)...) // 34 bytes: 1.3 s at this pace
	start := time.Now()
	var err error
	for i := 0; i < len(frame) && err == nil; i++ {
		_, err = nc.Write(frame[i : i+1])
		time.Sleep(40 * time.Millisecond)
	}
	if err == nil {
		t.Fatalf("the whole frame was accepted byte by byte over %v", time.Since(start))
	}
	within(t, "closing the trickling connection", time.Since(start), readTimeout, readTimeout+5*time.Second)
	if st := l.Stats(); st.Timeouts != 1 || calls.Load() != 0 {
		t.Fatalf("stats %+v, %d messages: want one timeout and no message", st, calls.Load())
	}
}

// TestReadTimeoutStreaming streams for several ReadTimeouts without a pause,
// to a server slower than the client, so that the kernel always holds more
// than a read takes and nearly every read ends inside a frame: ReadTimeout
// bounds each frame, not the stream, so the connection must stay up and
// every message arrive.
func TestReadTimeoutStreaming(t *testing.T) {
	leakCheck(t)
	const readTimeout = 200 * time.Millisecond
	var got atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, ReadTimeout: readTimeout, MaxMessageSize: 1 << 16,
		Callback: func(p []byte) error {
			if got.Add(1)%64 == 0 {
				time.Sleep(time.Millisecond) // slower than the writer: the reads are full
			}
			if len(p) != 1000 {
				return errors.New("bad length")
			}
			return nil
		}})
	c := dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4, MaxMessageSize: 1 << 16})
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = payload(i, 1000) // 1004-byte frames: reads of 64 KiB end inside one
	}
	var sent int64
	start := time.Now()
	for time.Since(start) < 6*readTimeout && sent < 2_000_000 {
		n, err := c.WriteBatch(batch)
		sent += int64(n)
		if err != nil {
			t.Fatalf("after %v of streaming, %d messages: %v", time.Since(start), sent, err)
		}
	}
	eventually(t, "every message", func() bool { return got.Load() == sent || l.Stats().Active == 0 })
	if st := l.Stats(); st.Timeouts != 0 || st.Active != 1 || got.Load() != sent {
		t.Fatalf("streamed %d messages for %v: server got %d, stats %+v; want no timeout", sent, time.Since(start), got.Load(), st)
	}
}

// TestIdleTimeout checks that a connection idle between frames is closed
// after IdleTimeout and counted, and that one sending more often is not.
func TestIdleTimeout(t *testing.T) {
	leakCheck(t)
	const idle = 250 * time.Millisecond
	s := newSink()
	l := listen(t, bs.TCPListenerConfig{IdleTimeout: idle, Callback: s.callback})
	quiet := dial(t, l, bs.TCPConnConfig{ReadTimeout: 10 * time.Second})
	busy := dial(t, l, bs.TCPConnConfig{})
	if _, err := quiet.Write([]byte("once")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			case <-time.After(idle / 5):
			}
			if _, err := busy.Write([]byte("tick")); err != nil {
				t.Errorf("busy client: %v", err)
				return
			}
		}
	})
	_, err := quiet.Read(make([]byte, 16))
	if !errors.Is(err, io.EOF) {
		t.Errorf("idle client: Read = %v, want io.EOF", err)
	}
	within(t, "closing the idle client", time.Since(start), idle, idle+5*time.Second)
	// The busy one stays up: ten more ticks, two idle periods' worth, reach
	// the server after the idle one was closed.
	s.wait(t, s.len()+10)
	if st := l.Stats(); st.Timeouts != 1 || st.Active != 1 {
		t.Fatalf("stats %+v: want the idle client closed and the busy one up", st)
	}
	close(stop)
	wg.Wait()
	eventually(t, "the busy client idle in turn", func() bool { return l.Stats().Timeouts == 2 && l.Stats().Active == 0 })
}

// TestMaxConns checks that connections beyond MaxConns are closed at once
// and counted, that those within it are served throughout, and that a slot
// freed is used again.
func TestMaxConns(t *testing.T) {
	leakCheck(t)
	const max = 3
	s := newSink()
	var log logBuf
	l := listen(t, bs.TCPListenerConfig{MaxConns: max, Callback: s.callback, Logger: log.logger()})
	var cs []*bs.TCPConn
	for i := range max {
		c := dial(t, l, bs.TCPConnConfig{})
		if _, err := c.Write([]byte{'a' + byte(i)}); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	s.wait(t, max)
	// The read loops publish their counts after the callbacks return.
	eventually(t, "the messages counted", func() bool { return l.Stats().Messages == max })
	for i := range 3 {
		nc := rawDial(t, l.Addr())
		start := time.Now()
		if _, err := nc.Write([]byte{0, 0, 1}); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("connection %d beyond MaxConns: read %v, want it closed", max+1+i, err)
		}
		within(t, "refusing a connection", time.Since(start), 0, 5*time.Second)
		eventually(t, "the refusal counted", func() bool { return l.Stats().Refused == uint64(i+1) })
	}
	if st := l.Stats(); st.Active != max || st.Messages != max {
		t.Fatalf("stats %+v: the refused connections reached the callback or closed others", st)
	}
	if n := strings.Count(log.String(), bs.ErrTooManyConnections.Error()); n != 3 {
		t.Errorf("the log names ErrTooManyConnections %d times, want 3:\n%s", n, log.String())
	}
	cs[0].Close()
	eventually(t, "a slot freed", func() bool { return l.Stats().Active == max-1 })
	c := dial(t, l, bs.TCPConnConfig{})
	for _, c := range append(cs[1:], c) {
		if _, err := c.Write([]byte("z")); err != nil {
			t.Fatal(err)
		}
	}
	s.wait(t, max+3)
	if st := l.Stats(); st.Refused != 3 || st.Active != max {
		t.Fatalf("stats %+v", st)
	}
}

// TestListenerWriteTimeout checks that a peer that stops reading fails the
// server's writes within WriteTimeout, Broadcast's and a ConnCallback's
// replies, while a peer that reads keeps getting every broadcast.
func TestListenerWriteTimeout(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	const big = 1 << 20
	t.Run("Broadcast", func(t *testing.T) {
		leakCheck(t)
		l := listen(t, bs.TCPListenerConfig{MaxMessageSize: big, WriteTimeout: writeTimeout, IdleTimeout: time.Minute,
			Callback: func([]byte) error { return nil }})
		reader := dial(t, l, bs.TCPConnConfig{MaxMessageSize: big, ReadTimeout: 20 * time.Second})
		stuck := dial(t, l, bs.TCPConnConfig{MaxMessageSize: big}) // never reads
		for _, c := range []*bs.TCPConn{reader, stuck} {
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "both connections served", func() bool { return l.Stats().Messages == 2 })
		var received atomic.Int64
		readDone := make(chan error, 1)
		go func() {
			for msg, err := range reader.Messages() {
				if err != nil {
					readDone <- err
					return
				}
				if len(msg) != big {
					readDone <- errors.New("short broadcast")
					return
				}
				received.Add(1)
			}
		}()
		msg := payload(3, big)
		calls := 0
		var err error
		var took time.Duration
		for calls < 500 && err == nil {
			start := time.Now()
			var n int
			n, err = l.Broadcast(msg, nil)
			took = time.Since(start)
			calls++
			if err == nil && n != 2 || err != nil && n != 1 {
				t.Fatalf("Broadcast %d reached %d connections (%v)", calls, n, err)
			}
		}
		if !errors.Is(err, bs.ErrWriteTimeout) || !isTimeout(err) {
			t.Fatalf("after %d broadcasts: %v; want ErrWriteTimeout, a net.Error timeout", calls, err)
		}
		within(t, "the broadcast that timed out", took, writeTimeout, writeTimeout+5*time.Second)
		eventually(t, "the stuck connection dropped", func() bool { return l.Conns() == 1 })
		if n, err := l.Broadcast(msg, nil); n != 1 || err != nil {
			t.Fatalf("Broadcast after the drop = %d, %v", n, err)
		}
		eventually(t, "every broadcast at the reader", func() bool { return received.Load() == int64(calls+1) })
		if st := l.Stats(); st.Panics != 0 {
			t.Fatalf("stats %+v", st)
		}
		reader.Close()
		<-readDone
		t.Logf("%d broadcasts of 1 MiB before the stuck peer's buffers filled", calls)
	})
	t.Run("ConnCallback", func(t *testing.T) {
		leakCheck(t)
		type result struct {
			err  error
			took time.Duration
		}
		results := make(chan result, 1)
		reply := payload(5, 256<<10)
		l := listen(t, bs.TCPListenerConfig{MaxMessageSize: big, WriteTimeout: writeTimeout, ReadTimeout: time.Minute,
			ConnCallback: func(conn *bs.TCPConn, p []byte) error {
				start := time.Now()
				_, err := conn.Write(reply)
				if err != nil {
					select {
					case results <- result{err, time.Since(start)}:
					default:
					}
				}
				return nil
			}})
		c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: big}) // never reads
		var r result
	requests:
		for i := 0; i < 2000; i++ {
			if _, err := c.Write([]byte("request")); err != nil {
				break
			}
			select {
			case r = <-results:
				break requests
			case <-time.After(time.Millisecond):
			}
		}
		if r.err == nil {
			select {
			case r = <-results:
			case <-time.After(10 * time.Second):
				t.Fatal("no reply failed")
			}
		}
		if !errors.Is(r.err, bs.ErrWriteTimeout) || !isTimeout(r.err) {
			t.Fatalf("reply to a peer that does not read: %v; want ErrWriteTimeout", r.err)
		}
		within(t, "the reply that timed out", r.took, writeTimeout, writeTimeout+5*time.Second)
		eventually(t, "the connection dropped", func() bool { return l.Stats().Active == 0 })
		if st := l.Stats(); st.Panics != 0 {
			t.Fatalf("stats %+v: the failed reply broke the read loop", st)
		}
	})
}

// TestShutdown checks that Shutdown delivers what clients sent before it,
// refuses new connections, closes the idle ones and returns nil, leaving no
// goroutine; messages waiting in the kernel and in read buffers while the
// callback is busy are delivered too.
func TestShutdown(t *testing.T) {
	leakCheck(t)
	const clients, each = 5, 1000
	gate := make(chan struct{})
	var mu sync.Mutex
	next := make(map[uint32]uint32) // client -> next sequence number
	var bad atomic.Value
	var got atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Uvarint, Callback: func(p []byte) error {
		<-gate
		id, seq := binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])
		mu.Lock()
		if next[id] != seq {
			bad.Store("out of order")
		}
		next[id] = seq + 1
		mu.Unlock()
		got.Add(1)
		return nil
	}})
	cs := make([]*bs.TCPConn, clients)
	for i := range cs {
		cs[i] = dial(t, l, bs.TCPConnConfig{Framing: bs.Uvarint, ReadTimeout: 20 * time.Second})
	}
	for i, c := range cs {
		for j := range each {
			msg := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(i)), uint32(j))
			if _, err := c.Write(append(msg, payload(j, 92)...)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Every message is in the kernel or a read buffer; the callback waits.
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- l.Shutdown(context.Background()) }()
	// Once Shutdown waits, it has closed the socket and set the drain
	// deadlines, 50 ms from a moment before now: waiting 200 ms from now
	// makes sure they have passed, so the drain is tested after they expire.
	waitBlocked(t, "(*TCPListener).Shutdown")
	time.Sleep(200 * time.Millisecond)
	if nc, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second); err == nil {
		nc.Close()
		t.Fatal("a dial during Shutdown was accepted")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while the callback held undelivered messages", err)
	default:
	}
	close(gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	took := time.Since(start)
	if n := got.Load(); n != clients*each {
		t.Fatalf("Shutdown delivered %d of the %d messages sent before it", n, clients*each)
	}
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if g := listenerGoroutines(); g != "" {
		t.Fatalf("goroutines of the listener running after Shutdown returned:\n%s", g)
	}
	if nc, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second); err == nil {
		nc.Close()
		t.Fatal("a dial after Shutdown was accepted")
	}
	for i, c := range cs {
		if _, err := c.Read(make([]byte, 256)); !errors.Is(err, io.EOF) {
			t.Errorf("client %d: Read after Shutdown = %v, want io.EOF", i, err)
		}
	}
	if err := l.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
	t.Logf("Shutdown delivered %d messages held back by the callback, in %v", clients*each, took.Round(time.Millisecond))
}

// TestShutdownDeadline has clients that never pause: Shutdown returns
// ctx.Err() when ctx expires, and leaves nothing running.
func TestShutdownDeadline(t *testing.T) {
	leakCheck(t)
	var got, late atomic.Int64
	var returned atomic.Bool // set once Shutdown has returned
	l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error {
		if returned.Load() {
			late.Add(1)
		}
		if got.Add(1)%64 == 0 {
			runtime.Gosched()
		}
		return nil
	}})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		c := dial(t, l, bs.TCPConnConfig{})
		wg.Go(func() {
			batch := make([][]byte, 200)
			for i := range batch {
				batch[i] = payload(i, 100)
			}
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.WriteBatch(batch); err != nil {
					return // the server closed the connection
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	eventually(t, "traffic", func() bool { return got.Load() > 10_000 })
	const wait = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	err := l.Shutdown(ctx)
	returned.Store(true)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with clients that never pause = %v, want context.DeadlineExceeded", err)
	}
	within(t, "Shutdown", took, wait, wait+5*time.Second)
	if g := listenerGoroutines(); g != "" {
		t.Fatalf("goroutines of the listener running after Shutdown returned:\n%s", g)
	}
	// No read loop is left to call the callback later, and none called it
	// between Shutdown's return and now.
	if n := late.Load(); n != 0 {
		t.Fatalf("the callback ran %d times after Shutdown returned", n)
	}
}

// TestClientDiesMidFrame has raw clients stop inside a frame, by closing or
// by resetting the connection, while a good client streams: only their
// connections close, the clean closes count as bad input, and every good
// message arrives.
func TestClientDiesMidFrame(t *testing.T) {
	leakCheck(t)
	var good atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: func(p []byte) error {
		if len(p) == 64 && p[0] == 'g' {
			good.Add(1)
		}
		return nil
	}})
	c := dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4})
	msg := append([]byte{'g'}, make([]byte, 63)...)
	bg := streamInBackground(t, c, 1_000_000, 32, func(int) []byte { return msg })
	for i, tc := range []struct {
		name  string
		bytes []byte
		reset bool
	}{
		{"half a payload", append([]byte{0, 0, 3, 0xe8}, make([]byte, 500)...), false},
		{"half a header", []byte{0, 0}, false},
		{"whole frame then half", append([]byte{0, 0, 0, 1, 'x', 0, 0, 0, 9}, "half"...), false},
		{"half a payload, reset", append([]byte{0, 0, 3, 0xe8}, make([]byte, 500)...), true},
	} {
		nc := rawDial(t, l.Addr())
		eventually(t, "the connection accepted", func() bool { return l.Stats().Accepted == uint64(2+i) })
		if _, err := nc.Write(tc.bytes); err != nil {
			t.Fatal(err)
		}
		if tc.reset {
			// Likely, not certain, to let the server read the bytes first:
			// nothing outside the read loop shows a partial frame. The
			// expected outcome is the same either way (a reset is not bad
			// input), so the pause only picks the likelier path.
			time.Sleep(20 * time.Millisecond)
			nc.(*net.TCPConn).SetLinger(0)
		}
		nc.Close()
		eventually(t, tc.name+": the connection closed", func() bool { return l.Stats().Active == 1 })
	}
	mark := good.Load()
	eventually(t, "good messages after the dead clients", func() bool { return good.Load() > mark+50 })
	bg.end()
	eventually(t, "every good message", func() bool { return good.Load() == bg.sent.Load() })
	if st := l.Stats(); st.BadInput != 3 || st.Active != 1 || st.Panics != 0 {
		t.Fatalf("stats %+v: want the three clean truncations counted as bad input", st)
	}
}

// TestTLSRoundTrip sends messages of every size class over TLS, in both
// modes, and reads the server's echoes; the client derives ServerName from
// the address and leaves its configuration untouched.
func TestTLSRoundTrip(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	const max = 64 << 10
	var rec tlsRecorder
	l := listen(t, bs.TCPListenerConfig{MaxMessageSize: max, Framing: bs.Uvarint,
		TLSConfig: serverTLS(p.server), ConnCallback: rec.callback})
	clientCfg := &tls.Config{RootCAs: p.roots}
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: max, Framing: bs.Uvarint, TLSConfig: clientCfg, ReadTimeout: 10 * time.Second})
	if clientCfg.ServerName != "" {
		t.Errorf("DialTCP wrote ServerName %q into the caller's tls.Config", clientCfg.ServerName)
	}
	st, ok := c.ConnectionState()
	if !ok || !st.HandshakeComplete || len(st.PeerCertificates) == 0 ||
		!st.PeerCertificates[0].Equal(p.server.Leaf) {
		t.Fatalf("ConnectionState = %+v, %v: want a completed handshake with the server's certificate", st, ok)
	}
	buf := make([]byte, max)
	for _, n := range []int{0, 1, 127, 128, 4096, 16383, 16384, 16385, 40000, max} {
		msg := payload(n, n)
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("Write(%d bytes): %v", n, err)
		}
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("Read echo of %d bytes: %v", n, err)
		}
		if !bytes.Equal(buf[:k], msg) {
			t.Fatalf("echo of %d bytes came back as %d different bytes", n, k)
		}
	}

	// Batching mode over TLS, with an explicit ServerName.
	b := dial(t, l, bs.TCPConnConfig{MaxMessageSize: max, Framing: bs.Uvarint, WriteBufferSize: 8 << 10,
		TLSConfig: &tls.Config{RootCAs: p.roots, ServerName: "localhost"}})
	const batched = 500
	for i := range batched {
		if _, err := b.Write(payload(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the batched messages", func() bool { return rec.n.Load() == 10+batched })
	if st := b.Stats(); st.MessagesWritten != batched || st.WriteErrors != 0 {
		t.Fatalf("batching client stats %+v", st)
	}
	msgs, cns := rec.got()
	for i, m := range msgs[10:] {
		if m != string(payload(i, 100)) {
			t.Fatalf("batched message %d corrupted", i)
		}
	}
	if cns[0] != "-" {
		t.Errorf("server saw a client certificate %q, want none", cns[0])
	}

	// Reopen makes a new handshake.
	if err := c.Reopen(); err != nil {
		t.Fatal(err)
	}
	if st, ok := c.ConnectionState(); !ok || !st.HandshakeComplete {
		t.Fatal("no TLS state after Reopen")
	}
	if _, err := c.Write([]byte("after reopen")); err != nil {
		t.Fatal(err)
	}
	if k, err := c.Read(buf); err != nil || string(buf[:k]) != "after reopen" {
		t.Fatalf("echo after Reopen: %q, %v", buf[:k], err)
	}
	if st := l.Stats(); st.TLSErrors != 0 {
		t.Errorf("TLSErrors = %d, want 0", st.TLSErrors)
	}

	// A plain connection reports no TLS state.
	pl := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }})
	if _, ok := dial(t, pl, bs.TCPConnConfig{}).ConnectionState(); ok {
		t.Error("ConnectionState reports TLS on a plain connection")
	}
}

// TestTLSMutual requires client certificates signed by the test CA: a client
// presenting one is served and identified, a client without one or with a
// self-signed one is refused, and nothing it sends reaches the callback.
func TestTLSMutual(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	var rec tlsRecorder
	srv := serverTLS(p.server)
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = p.roots
	l := listen(t, bs.TCPListenerConfig{TLSConfig: srv, ConnCallback: rec.callback})

	good := dial(t, l, bs.TCPConnConfig{ReadTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client}}})
	if _, err := good.Write([]byte("with certificate")); err != nil {
		t.Fatal(err)
	}
	if _, err := recvOne(good); err != nil {
		t.Fatalf("echo to the client with a certificate: %v", err)
	}

	// Each connection a refused client makes is one TLS error: the first,
	// and any it dials again after a failure. Its Write fails once the
	// peer watch has seen the alert, and the Read after it then dials
	// again (see TCPConn.Read); whether the watch sees it first is a race.
	var refusedConns uint64
	refused := 0
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no certificate", nil},
		{"self-signed certificate", &p.rogue},
	} {
		ccfg := &tls.Config{RootCAs: p.roots}
		if tc.cert != nil {
			// Presented whatever CAs the server names, so that the server
			// has to verify it.
			ccfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tc.cert, nil }
		}
		cfg := bs.TCPConnConfig{Address: l.Addr().String(), ReadTimeout: 10 * time.Second, TLSConfig: ccfg}
		c, err := bs.DialTCP(&cfg)
		refusedConns++
		if err == nil {
			// With TLS 1.3 the client finishes its handshake before the
			// server has checked its certificate: the refusal arrives as an
			// alert on the first read, or, once the peer watch has seen
			// the server close, fails the first write. A Read after a
			// failed Write would dial again, and be refused again.
			if _, err = c.Write([]byte("must not arrive")); err == nil {
				_, err = recvOne(c)
			}
			c.Close()
			st := c.Stats()
			refusedConns += st.Reconnects + st.DialFailures
		}
		var ne net.Error
		switch {
		case err == nil:
			t.Errorf("%s: the server answered", tc.name)
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("%s: no refusal within 10 s: %v", tc.name, err)
		default:
			refused++
			t.Logf("%s: refused: %v", tc.name, err)
		}
	}
	if refused != 2 {
		t.Fatalf("%d of the 2 clients refused", refused)
	}
	eventually(t, fmt.Sprintf("%d TLS errors counted", refusedConns), func() bool { return l.Stats().TLSErrors == refusedConns })
	if _, err := good.Write([]byte("still served")); err != nil {
		t.Fatal(err)
	}
	if _, err := recvOne(good); err != nil {
		t.Fatal(err)
	}
	msgs, cns := rec.got()
	if len(msgs) != 2 || msgs[0] != "with certificate" || msgs[1] != "still served" {
		t.Fatalf("callback got %q, want only the messages of the client with a certificate", msgs)
	}
	for _, cn := range cns {
		if cn != "buffstreams test client" {
			t.Errorf("server saw client %q, want the common name of the client certificate", cn)
		}
	}
}

// TestTLSPlaintextRejected sends plaintext frames, and nothing at all, to a
// TLS listener while a TLS client streams: the plaintext connections are
// closed and counted in TLSErrors, the silent one after HandshakeTimeout,
// and the TLS client loses nothing.
func TestTLSPlaintextRejected(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	var rec tlsRecorder
	const handshakeTimeout = 300 * time.Millisecond
	l := listen(t, bs.TCPListenerConfig{TLSConfig: serverTLS(p.server), HandshakeTimeout: handshakeTimeout,
		ConnCallback: func(conn *bs.TCPConn, p []byte) error { rec.n.Add(1); return nil }})
	tc := dial(t, l, bs.TCPConnConfig{TLSConfig: &tls.Config{RootCAs: p.roots}})
	bg := streamInBackground(t, tc, 200_000, 32, func(i int) []byte { return payload(i, 64) })
	eventually(t, "TLS traffic", func() bool { return rec.n.Load() > 100 })

	// A plaintext buffstreams client: its frame is not a TLS record.
	pc := dial(t, l, bs.TCPConnConfig{ReadTimeout: 10 * time.Second})
	if _, err := pc.Write([]byte("plaintext")); err != nil {
		t.Fatal(err)
	}
	if _, err := recvOne(pc); err == nil || isTimeout(err) {
		t.Fatalf("plaintext client: read %v, want the connection closed", err)
	}
	eventually(t, "the plaintext client counted", func() bool { return l.Stats().TLSErrors == 1 })

	// A client that connects and says nothing is closed after HandshakeTimeout.
	silent := rawDial(t, l.Addr())
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent client: read %v, want the connection closed", err)
	}
	if d := time.Since(start); d < handshakeTimeout-10*time.Millisecond || d > handshakeTimeout+5*time.Second {
		t.Errorf("silent client closed after %v, want HandshakeTimeout (%v)", d, handshakeTimeout)
	}
	eventually(t, "the silent client counted", func() bool { return l.Stats().TLSErrors == 2 })

	mark := rec.n.Load()
	eventually(t, "TLS traffic after the rejections", func() bool { return rec.n.Load() > mark+100 })
	bg.end()
	eventually(t, "every TLS message", func() bool { return rec.n.Load() == bg.sent.Load() })
	// The read loop publishes its counts after the callbacks return.
	eventually(t, "the TLS client alone active, with every message counted", func() bool {
		st := l.Stats()
		return st.Active == 1 && st.Messages == uint64(bg.sent.Load())
	})
}

// TestTLSBadCertificates checks that DialTCP refuses an expired certificate,
// one for another host and one from an unknown CA, with the x509 error, and
// that the listener counts each failed handshake.
func TestTLSBadCertificates(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	for _, tc := range []struct {
		name  string
		cert  tls.Certificate
		roots *x509.CertPool
		check func(error) bool
	}{
		{"expired", p.expired, p.roots, func(err error) bool {
			var e x509.CertificateInvalidError
			return errors.As(err, &e) && e.Reason == x509.Expired
		}},
		{"wrong host", p.wrongHost, p.roots, func(err error) bool {
			var e x509.HostnameError
			return errors.As(err, &e) && e.Host == "127.0.0.1"
		}},
		{"unknown authority", p.server, x509.NewCertPool(), func(err error) bool {
			var e x509.UnknownAuthorityError
			return errors.As(err, &e)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			l := listen(t, bs.TCPListenerConfig{TLSConfig: serverTLS(tc.cert),
				Callback: func([]byte) error { calls.Add(1); return nil }})
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String(), DialTimeout: 10 * time.Second,
				TLSConfig: &tls.Config{RootCAs: tc.roots}})
			if err == nil {
				c.Close()
				t.Fatal("DialTCP accepted the certificate")
			}
			if !tc.check(err) {
				t.Fatalf("DialTCP: %v (%T), want the x509 error", err, errors.Unwrap(err))
			}
			// The read loop counts the failed handshake, then drops the
			// connection: wait for both rather than assume the order.
			eventually(t, "the failed handshake counted and the connection gone", func() bool {
				st := l.Stats()
				return st.TLSErrors == 1 && st.Active == 0
			})
			if st := l.Stats(); st.TLSErrors != 1 || st.Active != 0 || calls.Load() != 0 {
				t.Fatalf("stats %+v, %d callbacks: want the connection gone", st, calls.Load())
			}
		})
	}
}

// hostileInputs returns the inputs that must close the connection sending
// them (unless they happen to be whole frames of w), for a listener with
// w's settings.
func hostileInputs(w wireFormat) map[string][]byte {
	in := map[string][]byte{
		"http":      []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
		"tls hello": {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		"random":    random(4096),
	}
	limit := w.limit()
	if w.kind == "delim" {
		in["oversized"] = bytes.Repeat([]byte{'a'}, limit+len(w.delim)) // no delimiter where one must be
		in["unterminated"] = []byte("abc")
		if len(w.delim) > 1 {
			in["half a delimiter"] = append([]byte("abc"), w.delim[:len(w.delim)-1]...)
		}
		return in
	}
	in["oversized"] = w.header(uint64(limit) + 1)
	in["truncated payload"] = append(w.header(32), "12345"...)
	in["header only"] = w.header(uint64(min(100, limit)))
	if h := w.header(uint64(limit)); len(h) >= 2 {
		in["half a header"] = h[:1]
	}
	switch w.kind {
	case "buffstreams":
		in["negative"] = w.header(math.MaxUint64) // -1
		in["2 GiB"] = w.header(1 << 31)           // a 5-byte varint: does not end within the header
		in["padded"] = append(append(binary.AppendVarint(nil, 1), make([]byte, w.width-2)...), 1)
		in["unterminated"] = bytes.Repeat([]byte{0x80}, w.width)
		in["overlong"] = append([]byte{0x80, 0x00}, make([]byte, w.width-2)...)
	case "uvarint":
		in["negative"] = binary.AppendUvarint(nil, math.MaxUint64) // int64(-1), 10 bytes
		in["2 GiB"] = w.header(1 << 31)
		in["unterminated"] = bytes.Repeat([]byte{0xff}, 10)
		in["overlong"] = append(bytes.Repeat([]byte{0x80}, 10), 0) // 11 bytes
		in["endless varint"] = bytes.Repeat([]byte{0xff}, 64)
	case "fixed":
		in["negative"] = bytes.Repeat([]byte{0xff}, w.width) // -1 in two's complement
		if w.width >= 4 {
			in["2 GiB"] = w.header(1 << 31)
		}
		if w.incl {
			in["length below its header"] = w.rawFixed(uint64(w.width - 1))
			in["length zero"] = w.rawFixed(0)
		}
	}
	return in
}

// goodMsg returns a 16-byte message of connection id, numbered seq, in
// text, so that no delimiter can occur in it.
func goodMsg(id, seq uint32) []byte {
	return fmt.Appendf(nil, "GOOD%04x%08x", id, seq)
}

// orderedCounter counts the good messages of each connection and checks
// that they arrive in order.
type orderedCounter struct {
	next  []atomic.Uint32
	other atomic.Int64 // messages that are not good ones
	bad   atomic.Value
}

func newOrderedCounter(conns int) *orderedCounter {
	return &orderedCounter{next: make([]atomic.Uint32, conns)}
}

func (o *orderedCounter) callback(p []byte) error {
	if len(p) != 16 || string(p[:4]) != "GOOD" {
		o.other.Add(1)
		return nil
	}
	id, err1 := strconv.ParseUint(string(p[4:8]), 16, 32)
	seq, err2 := strconv.ParseUint(string(p[8:]), 16, 32)
	if err1 != nil || err2 != nil || int(id) >= len(o.next) {
		o.bad.Store("unknown connection")
		return nil
	}
	// One connection's callbacks run one at a time, so this is its only
	// writer; the atomic lets the test read it.
	if o.next[id].Load() != uint32(seq) {
		o.bad.Store("message out of order or lost")
	}
	o.next[id].Store(uint32(seq) + 1)
	return nil
}

func (o *orderedCounter) total() int64 {
	var n int64
	for i := range o.next {
		n += int64(o.next[i].Load())
	}
	return n
}

// heapNow returns the heap in use and obtained from the system, after a
// collection.
func heapNow() (alloc, sys uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.HeapSys
}

// TestHostileInputsUnderLoad sends every hostile input of every framing,
// each on its own connection, to a listener that 100 good connections
// stream to: each hostile connection is closed and counted, no good
// connection is, every good message arrives once and in order, and the heap
// does not follow the lengths declared (2 GiB among them), also on a
// listener whose limit allows them.
func TestHostileInputsUnderLoad(t *testing.T) {
	goods := 100
	if testing.Short() {
		goods = 10
	}
	start := time.Now()
	var tried int
	for _, fr := range append(framings[:len(framings):len(framings)], delimited...) {
		t.Run(fr.name, func(t *testing.T) {
			leakCheck(t)
			max := 4096
			if fr.name == "fixed1" {
				max = 200 // below 255, so that a length can exceed it
			}
			w := newWireFormat(t, fr.f, max)
			oc := newOrderedCounter(goods)
			l := listen(t, bs.TCPListenerConfig{Framing: w.f, MaxMessageSize: w.max, Callback: oc.callback})
			cs := make([]*bs.TCPConn, goods)
			for i := range cs {
				cs[i] = dial(t, l, bs.TCPConnConfig{Framing: w.f, MaxMessageSize: w.max})
			}
			if cs[0].MaxMessageSize() != w.limit() {
				t.Fatalf("MaxMessageSize() = %d, the test computes %d", cs[0].MaxMessageSize(), w.limit())
			}
			stop := make(chan struct{})
			sent := make([]atomic.Uint32, goods)
			var wg sync.WaitGroup
			for i, c := range cs {
				wg.Go(func() {
					deadline := time.Now().Add(60 * time.Second)
					for seq := uint32(0); seq < 1_000_000 && time.Now().Before(deadline); seq++ {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := c.Write(goodMsg(uint32(i), seq)); err != nil {
							t.Errorf("good connection %d: %v", i, err)
							return
						}
						sent[i].Store(seq + 1)
						time.Sleep(2 * time.Millisecond)
					}
				})
			}
			stopped := false
			halt := func() {
				if !stopped {
					stopped = true
					close(stop)
					wg.Wait()
				}
			}
			defer halt()
			eventually(t, "the good connections streaming", func() bool { return oc.total() > int64(10*goods) })

			alloc0, sys0 := heapNow()
			inputs := hostileInputs(w)
			wantBad := 0
			var wantOther int64
			for name, in := range inputs {
				frames, clean := refDecode(w, in)
				wantOther += int64(len(frames))
				if !clean {
					wantBad++
				}
				nc := rawDial(t, l.Addr())
				if _, err := nc.Write(in); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				// Inputs that are a valid start of a frame here become
				// truncated frames once the peer stops sending.
				nc.(*net.TCPConn).CloseWrite()
				nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, syscallReset) {
					t.Errorf("%s: connection not closed by the server: %v", name, err)
				}
				eventually(t, name+": only the hostile connection gone", func() bool { return l.Stats().Active == int64(goods) })
			}
			tried += len(inputs)

			// A listener whose limit is the largest the framing allows: a
			// header declaring it (2 GiB - 1 where the framing can) is
			// accepted, and the buffer grows only with the bytes that come.
			wide := newWireFormat(t, w.f, bs.MaxMessageSizeLimit)
			wl := listen(t, bs.TCPListenerConfig{Framing: wide.f, MaxMessageSize: wide.max, Callback: func([]byte) error { return nil }})
			nc := rawDial(t, wl.Addr())
			declared := wide.limit()
			huge := append(wide.header(uint64(declared)), bytes.Repeat([]byte{'a'}, 256<<10)...) // no delimiter either
			if _, err := nc.Write(huge); err != nil {
				t.Fatal(err)
			}
			nc.(*net.TCPConn).CloseWrite()
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, nc)
			eventually(t, "the huge declared length counted", func() bool { return wl.Stats().BadInput == 1 })

			alloc1, sys1 := heapNow()
			if grew := int64(sys1) - int64(sys0); grew > 64<<20 {
				t.Errorf("HeapSys grew by %d MiB during the hostile inputs", grew>>20)
			}
			if grew := int64(alloc1) - int64(alloc0); grew > 64<<20 {
				t.Errorf("HeapAlloc grew by %d MiB during the hostile inputs", grew>>20)
			}

			mark := oc.total()
			eventually(t, "good messages after the hostile ones", func() bool { return oc.total() > mark+int64(goods) })
			halt()
			var want int64
			for i := range sent {
				want += int64(sent[i].Load())
			}
			eventually(t, "every good message", func() bool { return oc.total() == want })
			for i := range sent {
				if got := oc.next[i].Load(); got != sent[i].Load() {
					t.Errorf("good connection %d: %d messages received, %d sent", i, got, sent[i].Load())
				}
			}
			if v := oc.bad.Load(); v != nil {
				t.Fatal(v)
			}
			st := l.Stats()
			if st.BadInput != uint64(wantBad) || st.Active != int64(goods) || st.Panics != 0 || oc.other.Load() != wantOther {
				t.Fatalf("stats %+v, %d other messages: want %d bad inputs, %d other messages and the %d good connections alone active",
					st, oc.other.Load(), wantBad, wantOther, goods)
			}
			for i, c := range cs {
				if cst := c.Stats(); cst.WriteErrors != 0 || cst.MessagesWritten != uint64(sent[i].Load()) {
					t.Fatalf("good connection %d: stats %+v", i, cst)
				}
			}
			t.Logf("%d hostile inputs, %d good messages on %d connections; declared %d bytes on the wide listener; heap %+d KiB in use, %+d KiB obtained",
				len(inputs), want, goods, declared, (int64(alloc1)-int64(alloc0))>>10, (int64(sys1)-int64(sys0))>>10)
		})
	}
	t.Logf("%d hostile inputs over %d framings in %v", tried, len(framings)+len(delimited), time.Since(start).Round(time.Millisecond))
}

// TestLoad streams 1,000 messages on each of 1,000 concurrent connections,
// half in the default mode and half in batching mode, through one listener,
// and checks every message is counted once, in order, with no error.
func TestLoad(t *testing.T) {
	leakCheck(t)
	conns, each := 1000, 1000
	if testing.Short() {
		conns, each = 100, 100
	}
	oc := newOrderedCounter(conns)
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Uvarint, Callback: oc.callback})
	start := time.Now()
	cs := make([]*bs.TCPConn, conns)
	for i := range cs {
		cfg := bs.TCPConnConfig{Framing: bs.Uvarint}
		if i%2 == 1 {
			cfg.WriteBufferSize = 4096
		}
		cs[i] = dial(t, l, cfg)
	}
	dialed := time.Since(start)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, c := range cs {
		wg.Go(func() {
			<-gate
			for seq := range each {
				if _, err := c.Write(goodMsg(uint32(i), uint32(seq))); err != nil {
					t.Errorf("connection %d, message %d: %v", i, seq, err)
					return
				}
			}
			if err := c.Flush(); err != nil {
				t.Errorf("connection %d: Flush: %v", i, err)
			}
		})
	}
	close(gate)
	wg.Wait()
	written := time.Since(start)
	total := int64(conns * each)
	eventually(t, "every message", func() bool { return int64(l.Stats().Messages) == total })
	took := time.Since(start)
	if got := oc.total(); got != total {
		t.Fatalf("%d messages in order, want %d", got, total)
	}
	if v := oc.bad.Load(); v != nil {
		t.Fatal(v)
	}
	for i, c := range cs {
		if st := c.Stats(); st.MessagesWritten != uint64(each) || st.WriteErrors != 0 || st.Reconnects != 0 {
			t.Fatalf("connection %d: stats %+v", i, st)
		}
	}
	if st := l.Stats(); st.Active != int64(conns) || st.BadInput != 0 || st.CallbackErrors != 0 || oc.other.Load() != 0 {
		t.Fatalf("listener stats %+v", st)
	}
	t.Logf("%d connections × %d messages: dialed in %v, written in %v, all received in %v (%.0f messages/s)",
		conns, each, dialed.Round(time.Millisecond), written.Round(time.Millisecond), took.Round(time.Millisecond), float64(total)/took.Seconds())
}

// openFDs returns the number of open file descriptors, or -1 where
// /proc/self/fd does not exist.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestConnectCloseCycles connects and closes 10,000 times, in every way a
// client can (writing or not, default or batching mode, closing cleanly or
// resetting), and checks that the listener ends with no connection, no
// goroutine and no file descriptor more than it started with.
func TestConnectCloseCycles(t *testing.T) {
	leakCheck(t)
	cycles := 10_000
	if testing.Short() {
		cycles = 1000
	}
	var got, batched atomic.Int64
	l := listen(t, bs.TCPListenerConfig{Callback: func(p []byte) error {
		got.Add(1)
		if string(p) == "b" {
			batched.Add(1)
		}
		return nil
	}})
	addr := l.Addr().String()
	cycle := func(i int) error {
		switch i % 4 {
		case 0, 1: // default or batching mode, one message
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, WriteBufferSize: (i % 2) * 4096})
			if err != nil {
				return err
			}
			if _, err := c.Write([]byte{"db"[i%2]}); err != nil {
				c.Close()
				return err
			}
			if err := c.Close(); err != nil {
				return err
			}
			if st := c.Stats(); st.MessagesWritten != 1 || st.WriteErrors != 0 {
				return fmt.Errorf("mode %q: the message was not written: %+v", "db"[i%2], st)
			}
			return nil
		case 2: // connect and close without a message
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr})
			if err != nil {
				return err
			}
			return c.Close()
		default: // half a frame, then a reset
			nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return err
			}
			nc.Write([]byte{0x10})
			nc.(*net.TCPConn).SetLinger(0)
			return nc.Close()
		}
	}
	// Warm up, so that what the runtime allocates once is in the baseline.
	for i := range 8 {
		if err := cycle(i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the warm-up done", func() bool { return l.Stats().Active == 0 })
	fds0, g0 := openFDs(), runtime.NumGoroutine()
	start := time.Now()
	const workers = 8
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := w; i < cycles; i += workers {
				if err := cycle(i); err != nil {
					if failed.Add(1) <= 3 {
						t.Errorf("cycle %d: %v", i, err)
					}
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	eventually(t, "every connection gone", func() bool {
		st := l.Stats()
		return st.Active == 0 && st.Accepted == uint64(8+cycles)
	})
	wantMsgs := int64(4 + cycles/2) // cycles 0 and 1 of every 4, warm-up included
	for end := time.Now().Add(20 * time.Second); got.Load() != wantMsgs; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d messages received (%d of the %d from batching connections), %d written; listener stats %+v",
				got.Load(), batched.Load(), wantMsgs/2, wantMsgs, l.Stats())
		}
	}
	if fds0 >= 0 {
		eventually(t, "file descriptors back to the baseline", func() bool { return openFDs() <= fds0 })
	} else {
		t.Log("no /proc/self/fd: file descriptors not counted")
	}
	eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= g0 })
	if n := l.Conns(); n != 0 {
		t.Fatalf("%d connections still tracked", n)
	}
	t.Logf("%d connect/close cycles in %v; %d file descriptors and %d goroutines before and after",
		cycles, took.Round(time.Millisecond), fds0, g0)
}

// wireFormat is a framing with the MaxMessageSize a listener uses it with,
// described by its parameters, for the encoder and decoder written here
// from the formats' definitions, independently of the package's.
type wireFormat struct {
	f      bs.Framing
	max    int    // MaxMessageSize
	kind   string // "buffstreams", "uvarint", "fixed" or "delim"
	width  int    // header width of the fixed-width headers
	little bool   // fixed: little-endian
	incl   bool   // fixed: the length counts the header
	delim  []byte // delim: the delimiter
}

// newWireFormat describes f, from its name, for a listener with
// MaxMessageSize max. It fails t for a framing it does not know: the
// reference decoder must then learn it.
func newWireFormat(t testing.TB, f bs.Framing, max int) wireFormat {
	t.Helper()
	w := wireFormat{f: f, max: max}
	name := "buffstreams"
	if f != nil {
		name = f.String()
	}
	switch rest, fixed := strings.CutPrefix(name, "fixed"); {
	case name == "buffstreams":
		w.kind = name
		w.width = (bits.Len(uint(max))+7)/8 + 1
	case name == "uvarint":
		w.kind = name
	case fixed && rest != "" && rest[0] >= '1' && rest[0] <= '8':
		w.kind, w.width = "fixed", int(rest[0]-'0')
		rest, w.little = strings.CutPrefix(rest[1:], "le")
		rest, w.incl = strings.CutPrefix(rest, "incl")
		if rest != "" {
			t.Fatalf("the tests' reference decoder does not know the framing %q", name)
		}
	case strings.HasPrefix(name, "delim:"):
		d, err := strconv.Unquote(`"` + strings.TrimPrefix(name, "delim:") + `"`)
		if err != nil {
			t.Fatalf("framing %q: %v", name, err)
		}
		w.kind, w.delim = "delim", []byte(d)
	default:
		t.Fatalf("the tests' reference decoder does not know the framing %q", name)
	}
	return w
}

// limit returns the effective MaxMessageSize: the largest payload the
// framing can express, if that is less than max.
func (w wireFormat) limit() int {
	switch {
	case w.kind == "buffstreams" && 7*w.width-1 < 31:
		return min(w.max, 1<<(7*w.width-1)-1)
	case w.kind == "fixed" && w.width < 4 && w.incl:
		return min(w.max, 1<<(8*w.width)-1-w.width)
	case w.kind == "fixed" && w.width < 4:
		return min(w.max, 1<<(8*w.width)-1)
	}
	return w.max
}

// header returns the header of an n-byte payload (nil for a delimited
// framing). For the BuffStreams framing a varint longer than the header is
// returned whole; for a fixed one, bits beyond the width are dropped.
func (w wireFormat) header(n uint64) []byte {
	switch w.kind {
	case "buffstreams":
		h := binary.AppendVarint(nil, int64(n))
		for len(h) < w.width {
			h = append(h, 0)
		}
		return h
	case "uvarint":
		return binary.AppendUvarint(nil, n)
	case "fixed":
		if w.incl {
			n += uint64(w.width)
		}
		return w.rawFixed(n)
	}
	return nil
}

// frame returns the frame of payload p.
func (w wireFormat) frame(p []byte) []byte {
	return append(append(w.header(uint64(len(p))), p...), w.delim...)
}

// rawFixed returns v as a fixed-width header, without adding the header's
// width for an inclusive framing.
func (w wireFormat) rawFixed(v uint64) []byte {
	h := make([]byte, w.width)
	for i := range h {
		if w.little {
			h[i] = byte(v)
		} else {
			h[w.width-1-i] = byte(v)
		}
		v >>= 8
	}
	return h
}

// Outcomes of refSplit.
const (
	refOK    = iota // a whole frame
	refShort        // too few bytes for a whole frame
	refBad          // the frame cannot be accepted
)

// refSplit finds the frame at the start of p: its payload p[start:start+n]
// and its size.
func refSplit(w wireFormat, p []byte) (start, n, size int, outcome int) {
	limit := uint64(w.limit())
	var hdr int
	var v uint64
	switch w.kind {
	case "delim":
		window := w.limit() + len(w.delim)
		if i := bytes.Index(p[:min(len(p), window)], w.delim); i >= 0 {
			return 0, i, i + len(w.delim), refOK
		}
		if len(p) >= window {
			return 0, 0, 0, refBad // no delimiter where the largest payload's would be
		}
		return 0, 0, 0, refShort
	case "buffstreams":
		if len(p) < w.width {
			return 0, 0, 0, refShort
		}
		h := p[:w.width]
		x, m := binary.Varint(h)
		if m <= 0 || m > 1 && h[m-1] == 0 || x < 0 {
			return 0, 0, 0, refBad // unterminated in the header, overlong or negative
		}
		for _, b := range h[m:] {
			if b != 0 {
				return 0, 0, 0, refBad // padding
			}
		}
		hdr, v = w.width, uint64(x)
	case "uvarint":
		x, m := binary.Uvarint(p[:min(len(p), binary.MaxVarintLen64)])
		switch {
		case m == 0 && len(p) >= binary.MaxVarintLen64, m < 0:
			return 0, 0, 0, refBad // longer than 10 bytes, or overflowing
		case m == 0:
			return 0, 0, 0, refShort
		}
		hdr, v = m, x
	case "fixed":
		if len(p) < w.width {
			return 0, 0, 0, refShort
		}
		for i := range w.width {
			b := p[i]
			if w.little {
				b = p[w.width-1-i]
			}
			v = v<<8 | uint64(b)
		}
		if w.incl {
			if v < uint64(w.width) {
				return 0, 0, 0, refBad // less than the header it counts
			}
			v -= uint64(w.width)
		}
		hdr = w.width
	}
	if v > limit {
		return 0, 0, 0, refBad
	}
	if uint64(len(p)-hdr) < v {
		return 0, 0, 0, refShort
	}
	return hdr, int(v), hdr + int(v), refOK
}

// refDecode returns the payloads of the whole frames at the start of data,
// up to the first bad one, and whether data is made of whole frames only
// (so that a connection sending it and closing ends cleanly).
func refDecode(w wireFormat, data []byte) (frames [][]byte, clean bool) {
	for len(data) > 0 {
		start, n, size, outcome := refSplit(w, data)
		if outcome != refOK {
			return frames, false
		}
		frames = append(frames, data[start:start+n])
		data = data[size:]
	}
	return frames, true
}

// fuzzMaxes are the MaxMessageSize settings the fuzzer chooses from.
var fuzzMaxes = [...]int{16, 300, 4096}

// fuzzFramings are the framings the fuzzer chooses from: all of them.
var fuzzFramings = append(framings[:len(framings):len(framings)], delimited...)

// fuzzWire returns the framing and limit selected by sel.
func fuzzWire(t testing.TB, sel byte) wireFormat {
	fr := fuzzFramings[int(sel)%len(fuzzFramings)]
	return newWireFormat(t, fr.f, fuzzMaxes[int(sel)/len(fuzzFramings)%len(fuzzMaxes)])
}

// FuzzLiveListener writes the fuzzer's bytes to a live listener on one
// connection, cut in two at cut with a good message sent on a second
// connection in between, then closes the first. The listener must deliver
// exactly the frames the reference decoder finds in the bytes, count the
// connection as bad input unless the bytes were whole frames, finish it,
// deliver the good message, never panic, and leave no goroutine once
// closed.
func FuzzLiveListener(f *testing.F) {
	for i := range len(fuzzFramings) * len(fuzzMaxes) {
		w := fuzzWire(f, byte(i))
		limit := w.limit()
		var valid []byte
		for _, n := range []int{0, 1, limit} {
			valid = append(valid, w.frame(bytes.Repeat([]byte{'p'}, n))...)
		}
		f.Add(byte(i), uint16(len(valid)/2), valid)
		f.Add(byte(i), uint16(3), append(valid, w.frame(bytes.Repeat([]byte{'q'}, limit+1))...))
		if w.max != 4096 {
			continue
		}
		for _, in := range hostileInputs(w) {
			f.Add(byte(i), uint16(len(in)/2), in)
		}
	}
	good := []byte("the good message") // 16 bytes: within every limit
	f.Fuzz(func(t *testing.T, sel byte, cut uint16, data []byte) {
		w := fuzzWire(t, sel)
		want, clean := refDecode(w, data)
		before := census()

		var mu sync.Mutex
		var got, goods [][]byte
		var others int
		ln := newPipeListener()
		l, err := bs.NewListener(ln, bs.TCPListenerConfig{Framing: w.f, MaxMessageSize: w.max,
			ConnCallback: func(conn *bs.TCPConn, p []byte) error {
				mu.Lock()
				defer mu.Unlock()
				switch conn.LocalAddr().String() {
				case "hostile":
					got = append(got, bytes.Clone(p))
				case "good":
					goods = append(goods, bytes.Clone(p))
				default:
					others++
				}
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.StartListeningAsync(); err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		hostile, err := ln.dial("hostile")
		if err != nil {
			t.Fatal(err)
		}
		defer hostile.Close()
		goodEnd, err := ln.dial("good")
		if err != nil {
			t.Fatal(err)
		}
		gc, err := bs.NewConn(goodEnd, &bs.TCPConnConfig{Framing: w.f, MaxMessageSize: w.max})
		if err != nil {
			t.Fatal(err)
		}
		defer gc.Close()
		if gc.MaxMessageSize() != w.limit() {
			t.Fatalf("MaxMessageSize() = %d, the reference decoder uses %d", gc.MaxMessageSize(), w.limit())
		}

		deadline := time.Now().Add(10 * time.Second)
		hostile.SetWriteDeadline(deadline)
		goodEnd.SetWriteDeadline(deadline)
		k := int(cut) % (len(data) + 1)
		for i, part := range [][]byte{data[:k], nil, data[k:]} {
			if i == 1 {
				if _, err := gc.Write(good); err != nil {
					t.Fatalf("good message: %v", err)
				}
				continue
			}
			if len(part) == 0 {
				continue
			}
			// An error means the listener closed the connection.
			if _, err := hostile.Write(part); isTimeout(err) {
				t.Fatal("the listener stopped reading the hostile connection without closing it")
			}
		}
		hostile.Close()
		if !poll(deadline, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(goods) > 0 && l.Conns() == 1
		}) {
			t.Fatalf("after 10 s: %d connections open, good messages %q; want the good message and the hostile connection finished", l.Conns(), goods)
		}
		gc.Close()
		l.Close()

		st := l.Stats()
		if st.Panics != 0 {
			t.Fatalf("the listener panicked: %+v", st)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(goods) != 1 || !bytes.Equal(goods[0], good) || others != 0 {
			t.Fatalf("good connection delivered %q (and %d from nowhere), want %q", goods, others, good)
		}
		if len(got) != len(want) {
			t.Fatalf("%v, limit %d: delivered %d frames, the reference decoder finds %d", w.f, w.limit(), len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d: delivered %x, want %x", i, got[i], want[i])
			}
		}
		wantBad := uint64(0)
		if !clean {
			wantBad = 1
		}
		if st.BadInput != wantBad {
			t.Fatalf("%v, limit %d: BadInput = %d, want %d (stats %+v)", w.f, w.limit(), st.BadInput, wantBad, st)
		}
		var left []string
		if !poll(time.Now().Add(5*time.Second), func() bool {
			left = left[:0]
			for id, g := range census() {
				if _, ok := before[id]; !ok {
					left = append(left, g)
				}
			}
			return len(left) == 0
		}) {
			t.Fatalf("goroutines left after Close:\n%s", left[0])
		}
	})
}

// poll calls cond until it returns true, and reports false if the deadline
// passes first. It yields rather than sleeps at first, since the fuzzer
// waits for goroutines that are about to finish.
func poll(deadline time.Time, cond func() bool) bool {
	for i := 0; !cond(); i++ {
		if time.Now().After(deadline) {
			return false
		}
		if i < 1000 {
			runtime.Gosched()
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
	return true
}

// TestDelimitedRoundTrip sends text messages in each delimited framing over
// a real socket and checks that each arrives whole and in order, that a
// payload holding the delimiter is refused before anything is sent, and
// that a line longer than MaxMessageSize closes the connection as bad input.
func TestDelimitedRoundTrip(t *testing.T) {
	for _, fr := range delimited {
		t.Run(fr.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			l := listen(t, bs.TCPListenerConfig{Framing: fr.f, MaxMessageSize: 64, Callback: func(p []byte) error {
				mu.Lock()
				got = append(got, string(p))
				mu.Unlock()
				return nil
			}})
			var failed []string
			c := dial(t, l, bs.TCPConnConfig{Framing: fr.f, MaxMessageSize: 64, OnWriteError: func(msg []byte, err error) {
				failed = append(failed, string(msg))
			}})
			var want []string
			for i := range 200 {
				msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i%40))
				if i%50 == 0 {
					msg = "" // empty messages are frames of the delimiter alone
				}
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				want = append(want, msg)
			}
			inside := []byte("before" + delimOf(t, fr.f) + "after")
			if _, err := c.Write(inside); !errors.Is(err, bs.ErrDelimiterInPayload) {
				t.Fatalf("Write of a payload holding the delimiter: %v, want ErrDelimiterInPayload", err)
			}
			if len(failed) != 1 || failed[0] != string(inside) {
				t.Fatalf("OnWriteError got %q, want the refused payload once", failed)
			}
			if _, err := c.Write([]byte("last")); err != nil {
				t.Fatal(err)
			}
			want = append(want, "last")
			eventually(t, "every message", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) >= len(want)
			})
			mu.Lock()
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("got %q\nwant %q", got, want)
			}
			mu.Unlock()

			// A raw peer sending 65 bytes without a delimiter exceeds the
			// limit of 64 and is closed.
			nc := rawDial(t, l.Addr())
			if _, err := nc.Write([]byte(strings.Repeat("y", 65+len(delimOf(t, fr.f))))); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the long line counted as bad input", func() bool { return l.Stats().BadInput == 1 })
		})
	}
}

// delimOf returns the delimiter of a delimited framing, from its name.
func delimOf(t *testing.T, f bs.Framing) string {
	t.Helper()
	name := f.String()
	if name == "lines" {
		return "\n"
	}
	g, err := bs.ParseFraming(name, 0)
	if err != nil || g.String() != name {
		t.Fatalf("framing %q does not parse back: %v", name, err)
	}
	for _, d := range []string{"\r\n", "\x00", "\n"} {
		if h, _ := bs.Delimited([]byte(d)); h.String() == name {
			return d
		}
	}
	t.Fatalf("unknown delimiter in %q", name)
	return ""
}

// endRecorder is an OnConnEnd hook that records every call.
type endRecorder struct {
	mu    sync.Mutex
	ends  []error
	conns map[*bs.TCPConn]int // calls per connection
}

func newEndRecorder() *endRecorder { return &endRecorder{conns: make(map[*bs.TCPConn]int)} }

func (r *endRecorder) hook(conn *bs.TCPConn, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ends = append(r.ends, err)
	r.conns[conn]++
}

func (r *endRecorder) errs() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.ends...)
}

// wait waits until the hook has been called n times.
func (r *endRecorder) wait(t testing.TB, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d calls of OnConnEnd", n), func() bool { return len(r.errs()) >= n })
}

// check fails t unless the hook was called once per connection, with one
// error matching each of want (nil for a clean end), in any order.
func (r *endRecorder) check(t testing.TB, want ...error) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for conn, n := range r.conns {
		if conn == nil || n != 1 {
			t.Errorf("OnConnEnd called %d times for connection %p", n, conn)
		}
	}
	if len(r.ends) != len(want) {
		t.Fatalf("OnConnEnd called with %v, want %d calls matching %v", r.ends, len(want), want)
	}
	used := make([]bool, len(r.ends))
next:
	for _, w := range want {
		for i, err := range r.ends {
			if !used[i] && (w == nil && err == nil || w != nil && errors.Is(err, w)) {
				used[i] = true
				continue next
			}
		}
		t.Errorf("OnConnEnd got %v: none matches %v", r.ends, w)
	}
}

// TestOnConnEnd ends connections in every way and checks that OnConnEnd is
// called exactly once for each accepted connection, with an error that
// matches the cause's sentinel.
func TestOnConnEnd(t *testing.T) {
	nothing := func([]byte) error { return nil }
	// rawSend opens a plain connection and sends b.
	rawSend := func(t *testing.T, l *bs.TCPListener, b []byte) net.Conn {
		nc := rawDial(t, l.Addr())
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
		return nc
	}
	for _, tc := range []struct {
		name string
		cfg  bs.TCPListenerConfig
		// run makes the connections end, or leaves them for Close; it
		// returns how many ends to wait for before Close.
		run  func(t *testing.T, l *bs.TCPListener) int
		want []error
		also func(t *testing.T, err error) // further checks of the first end
	}{
		{"clean EOF", bs.TCPListenerConfig{}, func(t *testing.T, l *bs.TCPListener) int {
			c := dial(t, l, bs.TCPConnConfig{})
			if _, err := c.Write([]byte("bye")); err != nil {
				t.Fatal(err)
			}
			c.Close()
			return 1
		}, []error{nil}, nil},
		{"message too large", bs.TCPListenerConfig{Framing: bs.Fixed4}, func(t *testing.T, l *bs.TCPListener) int {
			rawSend(t, l, []byte{0x7f, 0xff, 0xff, 0xff})
			return 1
		}, []error{bs.ErrMessageTooLarge}, nil},
		{"malformed header", bs.TCPListenerConfig{Framing: bs.Fixed4Inclusive}, func(t *testing.T, l *bs.TCPListener) int {
			rawSend(t, l, []byte{0, 0, 0, 2})
			return 1
		}, []error{bs.ErrMalformedHeader}, nil},
		{"frame cut short", bs.TCPListenerConfig{Framing: bs.Fixed4}, func(t *testing.T, l *bs.TCPListener) int {
			rawSend(t, l, []byte{0, 0, 0, 10, 1, 2, 3}).(*net.TCPConn).CloseWrite()
			return 1
		}, []error{io.ErrUnexpectedEOF}, nil},
		{"wrong protocol", bs.TCPListenerConfig{}, func(t *testing.T, l *bs.TCPListener) int {
			rawSend(t, l, []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
			return 1
		}, []error{bs.ErrWrongProtocol}, func(t *testing.T, err error) {
			// "GET" read as a zig-zag varint is negative.
			if !errors.Is(err, bs.ErrMalformedHeader) {
				t.Errorf("%v: want it to wrap the failure it explains, ErrMalformedHeader", err)
			}
		}},
		{"callback panic", bs.TCPListenerConfig{Callback: func([]byte) error { panic("boom") }}, func(t *testing.T, l *bs.TCPListener) int {
			if _, err := dial(t, l, bs.TCPConnConfig{}).Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			return 1
		}, []error{bs.ErrCallbackPanic}, nil},
		{"too many connections", bs.TCPListenerConfig{MaxConns: 1}, func(t *testing.T, l *bs.TCPListener) int {
			dial(t, l, bs.TCPConnConfig{})
			eventually(t, "the first connection served", func() bool { return l.Conns() == 1 })
			rawDial(t, l.Addr())
			return 1
		}, []error{bs.ErrTooManyConnections, net.ErrClosed}, nil},
		{"read timeout", bs.TCPListenerConfig{Framing: bs.Fixed4, ReadTimeout: 50 * time.Millisecond}, func(t *testing.T, l *bs.TCPListener) int {
			rawSend(t, l, []byte{0, 0, 0, 10, 1})
			return 1
		}, []error{os.ErrDeadlineExceeded}, nil},
		{"idle timeout", bs.TCPListenerConfig{IdleTimeout: 50 * time.Millisecond}, func(t *testing.T, l *bs.TCPListener) int {
			rawDial(t, l.Addr())
			return 1
		}, []error{os.ErrDeadlineExceeded}, func(t *testing.T, err error) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%v: want a net.Error whose Timeout is true", err)
			}
		}},
		{"TLS handshake: plaintext client", bs.TCPListenerConfig{TLSConfig: serverTLS(pki(t).server)}, func(t *testing.T, l *bs.TCPListener) int {
			rawSend(t, l, []byte{0, 0x0a, 0, 'p', 'l', 'a', 'i', 'n', 't', 'e', 'x', 't'})
			return 1
		}, []error{bs.ErrTLSHandshake}, func(t *testing.T, err error) {
			var rh tls.RecordHeaderError
			if !errors.As(err, &rh) {
				t.Errorf("%v: want a tls.RecordHeaderError wrapped", err)
			}
		}},
		{"TLS handshake: timeout", bs.TCPListenerConfig{TLSConfig: serverTLS(pki(t).server), HandshakeTimeout: 50 * time.Millisecond}, func(t *testing.T, l *bs.TCPListener) int {
			rawDial(t, l.Addr())
			return 1
		}, []error{bs.ErrTLSHandshake}, func(t *testing.T, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%v: want context.DeadlineExceeded wrapped", err)
			}
		}},
		{"conn.Close in the callback", bs.TCPListenerConfig{ConnCallback: func(conn *bs.TCPConn, p []byte) error { return conn.Close() }}, func(t *testing.T, l *bs.TCPListener) int {
			if _, err := dial(t, l, bs.TCPConnConfig{}).Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			return 1
		}, []error{net.ErrClosed}, nil},
		{"listener Close", bs.TCPListenerConfig{}, func(t *testing.T, l *bs.TCPListener) int {
			dial(t, l, bs.TCPConnConfig{})
			rawDial(t, l.Addr())
			eventually(t, "two connections served", func() bool { return l.Conns() == 2 })
			return 0
		}, []error{net.ErrClosed, net.ErrClosed}, nil},
		{"listener Shutdown", bs.TCPListenerConfig{}, func(t *testing.T, l *bs.TCPListener) int {
			if _, err := dial(t, l, bs.TCPConnConfig{}).Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the message delivered", func() bool { return l.Stats().Messages == 1 })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := l.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			return 1
		}, []error{net.ErrClosed}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			rec := newEndRecorder()
			cfg := tc.cfg
			cfg.OnConnEnd = rec.hook
			if cfg.Callback == nil && cfg.ConnCallback == nil {
				cfg.Callback = nothing
			}
			l := listen(t, cfg)
			rec.wait(t, tc.run(t, l))
			l.Close() // waits for every call of OnConnEnd
			rec.check(t, tc.want...)
			for _, err := range rec.errs() {
				t.Logf("OnConnEnd: %v", err)
			}
			if errs := rec.errs(); tc.also != nil && len(errs) > 0 {
				tc.also(t, errs[0])
			}
			if st := l.Stats(); st.Active != 0 || l.Conns() != 0 {
				t.Errorf("stats %+v, %d conns after Close", st, l.Conns())
			}
		})
	}
}

// TestOnConnEndPanic checks that a panic in OnConnEnd is recovered and the
// listener keeps serving.
func TestOnConnEndPanic(t *testing.T) {
	leakCheck(t)
	var calls atomic.Int32
	s := newSink()
	l := listen(t, bs.TCPListenerConfig{Callback: s.callback, OnConnEnd: func(*bs.TCPConn, error) {
		calls.Add(1)
		panic("in the hook")
	}})
	for i := range 2 {
		c := dial(t, l, bs.TCPConnConfig{})
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		s.wait(t, i+1)
		c.Close()
		eventually(t, "the hook called", func() bool { return calls.Load() == int32(i+1) })
	}
	eventually(t, "no connection left", func() bool { return l.Stats().Active == 0 })
}
