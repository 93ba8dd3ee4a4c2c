package buffstreams_test

// Reliability: timeouts and limits on the listener (slowloris, idle
// connections, MaxConns, reply deadlines), Shutdown, and faults on the
// client's side (a server that restarts, a peer that stops reading, a full
// write buffer, retries that give up), each with the accounting invariant:
// every message given to Write or WriteBatch is counted once, in
// ConnStats.MessagesWritten or in OnWriteError.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// seqMsg returns a message of size bytes (at least 4) that starts with seq.
func seqMsg(seq uint32, size int) []byte {
	p := payload(int(seq), size)
	binary.BigEndian.PutUint32(p, seq)
	return p
}

// seqLog records sequence numbers: the messages a server received, or the
// ones a client's OnWriteError was given.
type seqLog struct {
	mu   sync.Mutex
	seen map[uint32]int
	errs []error
	n    atomic.Int64
}

func newSeqLog() *seqLog { return &seqLog{seen: make(map[uint32]int)} }

func (s *seqLog) add(p []byte, err error) {
	seq := binary.BigEndian.Uint32(p)
	s.mu.Lock()
	s.seen[seq]++
	if err != nil {
		s.errs = append(s.errs, err)
	}
	s.mu.Unlock()
	s.n.Add(1)
}

// callback is a ListenCallback that records messages.
func (s *seqLog) callback(p []byte) error { s.add(p, nil); return nil }

// hook is an OnWriteError that records messages and errors.
func (s *seqLog) hook(p []byte, err error) { s.add(p, err) }

func (s *seqLog) snapshot() (map[uint32]int, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[uint32]int, len(s.seen))
	for k, v := range s.seen {
		m[k] = v
	}
	return m, append([]error(nil), s.errs...)
}

// checkAccounting checks the invariant of OnWriteError: every one of given
// messages was counted as written or passed to the hook, once; none that
// reached the hook arrived at the server; none arrived twice.
func checkAccounting(t *testing.T, c *bs.TCPConn, given int, hooked, received *seqLog) {
	t.Helper()
	st := c.Stats()
	failed, _ := hooked.snapshot()
	got, _ := received.snapshot()
	if st.MessagesWritten+uint64(hooked.n.Load()) != uint64(given) {
		t.Errorf("%d messages given, %d written + %d passed to OnWriteError", given, st.MessagesWritten, hooked.n.Load())
	}
	if st.WriteErrors != uint64(hooked.n.Load()) {
		t.Errorf("WriteErrors = %d, OnWriteError called %d times", st.WriteErrors, hooked.n.Load())
	}
	for seq, n := range failed {
		if n != 1 {
			t.Errorf("message %d passed to OnWriteError %d times", seq, n)
		}
		if got[seq] != 0 {
			t.Errorf("message %d passed to OnWriteError but received by the server", seq)
		}
	}
	for seq, n := range got {
		if n != 1 {
			t.Errorf("message %d received %d times", seq, n)
		}
	}
	if uint64(len(got)) > st.MessagesWritten {
		t.Errorf("server received %d messages, client counted %d written", len(got), st.MessagesWritten)
	}
}

// stallPeer accepts connections on 127.0.0.1 and never reads from them.
type stallPeer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newStallPeer(t testing.TB) *stallPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stallPeer{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, nc)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, nc := range s.conns {
			nc.Close()
		}
	})
	return s
}

func (s *stallPeer) addr() string { return s.ln.Addr().String() }

// within fails t unless d lies in [lo, hi].
func within(t *testing.T, what string, d, lo, hi time.Duration) {
	t.Helper()
	if d < lo || d > hi {
		t.Errorf("%s took %v, want between %v and %v", what, d, lo, hi)
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

// TestRetryServerRestart closes the server in the middle of a stream and
// starts a new one on the same port: a client with a Retry policy
// reconnects and carries on, and every message is accounted for, none twice.
func TestRetryServerRestart(t *testing.T) {
	for _, mode := range []struct {
		name    string
		bufSize int
		writers int  // goroutines writing at once
		batch   int  // messages per WriteBatch; 0 for Write
		noRetry bool // no Retry policy: Writes fail until the new server is up
	}{
		{"default mode", 0, 1, 0, false},
		{"batching mode", 16 << 10, 1, 0, false},
		{"default mode, 8 writers", 0, 8, 0, false},
		{"default mode, WriteBatch, 4 writers", 0, 4, 7, false},
		{"batching mode, WriteBatch, 4 writers", 16 << 10, 4, 7, false},
		{"default mode, 8 writers, no Retry", 0, 8, 0, true},
		{"batching mode, WriteBatch, 4 writers, no Retry", 16 << 10, 4, 7, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			leakCheck(t)
			const n = 3000
			received, hooked := newSeqLog(), newSeqLog()
			l1 := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: received.callback})
			addr := l1.Addr().String()
			retry := &bs.RetryPolicy{MaxAttempts: 200, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxWait: 20 * time.Second}
			if mode.noRetry {
				retry = nil
			}
			c := dial(t, l1, bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: mode.bufSize, OnWriteError: hooked.hook, Retry: retry})
			restart, up := make(chan struct{}), make(chan struct{})
			var writeErrs atomic.Int64
			var next atomic.Int64 // the next sequence number to give
			var waiting atomic.Int64 // writers that wait for the new server
			var wg sync.WaitGroup
			for range mode.writers {
				wg.Go(func() {
					for {
						k := max(mode.batch, 1)
						first := next.Add(int64(k)) - int64(k)
						if first >= n {
							return
						}
						k = min(k, n-int(first))
						if first <= n/3 && n/3 < first+int64(k) {
							close(restart)
						}
						if first >= n/2 {
							waiting.Add(1)
							<-up // the second half goes to the new server
						}
						if mode.batch == 0 {
							if _, err := c.Write(seqMsg(uint32(first), 64)); err != nil {
								writeErrs.Add(1)
							}
						} else {
							batch := make([][]byte, k)
							for j := range batch {
								batch[j] = seqMsg(uint32(first)+uint32(j), 64)
							}
							if m, err := c.WriteBatch(batch); err != nil {
								writeErrs.Add(int64(k - m))
							}
						}
						if first%10 < int64(k) {
							time.Sleep(time.Millisecond)
						}
					}
				})
			}
			<-restart
			l1.Close()
			// The server stays down until the client has seen it gone (a
			// failed write or dial), or until every writer has written its
			// part of the first half and waits.
			eventually(t, "the client to see the server gone", func() bool {
				st := c.Stats()
				return hooked.n.Load() > 0 || st.WriteErrors > 0 || st.DialFailures > 0 || waiting.Load() == int64(mode.writers)
			})
			before := received.n.Load()
			l2 := listen(t, bs.TCPListenerConfig{Address: addr, Framing: bs.Fixed4, Callback: received.callback})
			close(up)
			wg.Wait()
			if err := c.Flush(); err != nil {
				t.Logf("Flush: %v", err)
			}
			c.Close()
			eventually(t, "the second server done", func() bool { st := l2.Stats(); return st.Accepted >= 1 && st.Active == 0 })
			st := c.Stats()
			if mode.noRetry && hooked.n.Load() == 0 {
				t.Errorf("no message failed while the server was down")
			}
			if st.Reconnects < 1 || received.n.Load() == before {
				t.Fatalf("stats %+v: the client did not reconnect to the new server", st)
			}
			if writeErrs.Load() > hooked.n.Load() {
				t.Errorf("%d Writes failed but OnWriteError was called %d times", writeErrs.Load(), hooked.n.Load())
			}
			checkAccounting(t, c, n, hooked, received)
			t.Logf("%d messages: %d received (%d by the new server), %d passed to OnWriteError, %d written but lost in the dead server's buffers; %d reconnects, %d failed dials",
				n, received.n.Load(), received.n.Load()-before, hooked.n.Load(), int64(st.MessagesWritten)-received.n.Load(), st.Reconnects, st.DialFailures)
		})
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
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		msg := append([]byte{'g'}, make([]byte, 63)...)
		for i := 0; i < 1_000_000; i++ {
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
			if i%32 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
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
	close(stop)
	wg.Wait()
	eventually(t, "every good message", func() bool { return good.Load() == sent.Load() })
	if st := l.Stats(); st.BadInput != 3 || st.Active != 1 || st.Panics != 0 {
		t.Fatalf("stats %+v: want the three clean truncations counted as bad input", st)
	}
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
		if _, errs := hooked.snapshot(); hooked.n.Load() != 1 || !errors.Is(errs[0], bs.ErrWriteTimeout) {
			t.Fatalf("OnWriteError got %d messages (%v), want the one that timed out", hooked.n.Load(), errs)
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

// gatedListener starts a listener whose callback records the messages and
// waits while the gate is shut.
type gatedListener struct {
	*bs.TCPListener
	received *seqLog
	open     chan struct{}
	once     sync.Once
}

func newGatedListener(t *testing.T) *gatedListener {
	g := &gatedListener{received: newSeqLog(), open: make(chan struct{})}
	g.TCPListener = listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: func(p []byte) error {
		<-g.open
		return g.received.callback(p)
	}})
	t.Cleanup(g.release) // before the listener's Close, which waits for callbacks
	return g
}

func (g *gatedListener) release() { g.once.Do(func() { close(g.open) }) }

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

// TestRetryGivesUp closes the server and checks that a Retry policy gives up
// with ErrReconnectFailed after MaxAttempts dials, or when MaxWait would be
// passed, with the failed dials counted and the message passed to
// OnWriteError.
func TestRetryGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name        string
		policy      bs.RetryPolicy
		dials       func(uint64) bool
		lo, hi      time.Duration
		description string
	}{
		{"MaxAttempts", bs.RetryPolicy{MaxAttempts: 4, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxWait: 20 * time.Second},
			func(n uint64) bool { return n == 4 }, 70 * time.Millisecond, 5 * time.Second, "4 dials"},
		{"MaxWait", bs.RetryPolicy{MaxAttempts: 10_000, InitialBackoff: 40 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxWait: 400 * time.Millisecond},
			func(n uint64) bool { return n >= 3 && n <= 20 }, 0, 400*time.Millisecond + 2*time.Second, "about 10 dials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			hooked := newSeqLog()
			l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }})
			policy := tc.policy
			c := dial(t, l, bs.TCPConnConfig{Retry: &policy, OnWriteError: hooked.hook})
			if _, err := c.Write(seqMsg(0, 8)); err != nil {
				t.Fatal(err)
			}
			l.Close()
			var err error
			var took time.Duration
			given := 1
			for deadline := time.Now().Add(20 * time.Second); err == nil && time.Now().Before(deadline); {
				start := time.Now()
				_, err = c.Write(seqMsg(uint32(given), 8))
				took = time.Since(start)
				given++
				time.Sleep(time.Millisecond)
			}
			if !errors.Is(err, bs.ErrReconnectFailed) {
				t.Fatalf("Write to a closed server: %v, want ErrReconnectFailed", err)
			}
			st := c.Stats()
			if !tc.dials(st.DialFailures) {
				t.Errorf("DialFailures = %d, want %s", st.DialFailures, tc.description)
			}
			within(t, "the Write that gave up", took, tc.lo, tc.hi)
			c.Close()
			checkAccounting(t, c, given, hooked, newSeqLog())
			t.Logf("gave up after %v and %d dials: %v", took.Round(time.Millisecond), st.DialFailures, err)
		})
	}
}

// TestDialTimeout checks that DialTimeout bounds the dial and the TLS
// handshake, and ReadTimeout a Read.
func TestDialTimeout(t *testing.T) {
	leakCheck(t)
	const timeout = 200 * time.Millisecond
	start := time.Now()
	_, err := bs.DialTCP(&bs.TCPConnConfig{Address: "127.0.0.1:1", DialTimeout: timeout,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial that hangs: %v, want context.DeadlineExceeded", err)
	}
	within(t, "the dial that hangs", time.Since(start), timeout, timeout+5*time.Second)

	peer := newStallPeer(t) // accepts, never answers the ClientHello
	start = time.Now()
	_, err = bs.DialTCP(&bs.TCPConnConfig{Address: peer.addr(), DialTimeout: timeout, TLSConfig: &tls.Config{}})
	if err == nil || !isTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("TLS handshake with a silent peer: %v, want a timeout", err)
	}
	within(t, "the handshake that hangs", time.Since(start), timeout, timeout+5*time.Second)

	c := dialAddr(t, peer.addr(), bs.TCPConnConfig{ReadTimeout: timeout})
	start = time.Now()
	if _, err := c.Read(make([]byte, 16)); !isTimeout(err) {
		t.Errorf("Read from a silent peer: %v, want a timeout", err)
	}
	within(t, "the Read", time.Since(start), timeout, timeout+5*time.Second)
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
