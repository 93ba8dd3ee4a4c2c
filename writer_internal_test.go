package buffstreams

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWriteBufferBound has eight goroutines write, in batching mode, to a
// server whose callback is held, with messages of every size up to past the
// large-message threshold, and samples the write buffer all along: it never
// grows beyond WriteBufferSize, whichever SlowConsumer policy applies.
func TestWriteBufferBound(t *testing.T) {
	const bufSize = 32 << 10
	for _, policy := range []SlowConsumerPolicy{SlowConsumerBlock, SlowConsumerError} {
		t.Run(policy.String(), func(t *testing.T) {
			gate := make(chan struct{})
			var release sync.Once
			open := func() { release.Do(func() { close(gate) }) }
			var received atomic.Int64
			l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0", Framing: Fixed4, MaxMessageSize: 64 << 10,
				Callback: func([]byte) error { <-gate; received.Add(1); return nil }})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			defer open()
			if err := l.StartListeningAsync(); err != nil {
				t.Fatal(err)
			}
			c, err := DialTCP(&TCPConnConfig{Address: l.Addr().String(), Framing: Fixed4, MaxMessageSize: 64 << 10,
				WriteBufferSize: bufSize, SlowConsumer: policy})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			var maxLen, maxCap int
			e := c.eng.(*batchEngine)
			sample := func() {
				e.mu.Lock()
				maxLen = max(maxLen, len(e.buf))
				maxCap = max(maxCap, cap(e.buf), cap(e.spareB))
				e.mu.Unlock()
			}
			var accepted, refused atomic.Int64
			var progress atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 8 {
				wg.Go(func() {
					for i := 0; i < 20_000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						n := 1 + (g*7919+i*104729)%(12<<10) // up to 12 KiB; 8 KiB and more bypass the buffer
						_, err := c.Write(make([]byte, n))
						switch {
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, ErrSlowConsumer):
							refused.Add(1)
						default:
							t.Error(err)
							return
						}
						progress.Add(1)
					}
				})
			}
			// Sample until the writers make no progress for 300 ms (blocked,
			// or refused over and over with the buffer full).
			last, still := int64(-1), time.Time{}
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
				sample()
				n := accepted.Load()
				if n != last {
					last, still = n, time.Now()
				} else if time.Since(still) > 300*time.Millisecond {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			close(stop)
			open()
			wg.Wait()
			sample()
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if maxLen > bufSize || maxCap > bufSize {
				t.Fatalf("write buffer reached %d bytes (capacity %d), above WriteBufferSize %d", maxLen, maxCap, bufSize)
			}
			deadline := time.Now().Add(30 * time.Second)
			for received.Load() != accepted.Load() && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if received.Load() != accepted.Load() || c.Stats().MessagesWritten != uint64(accepted.Load()) {
				t.Fatalf("%d accepted, %d written, %d received", accepted.Load(), c.Stats().MessagesWritten, received.Load())
			}
			if policy == SlowConsumerError && refused.Load() == 0 {
				t.Fatal("the buffer never filled")
			}
			t.Logf("%d messages accepted, %d refused; the buffer held at most %d bytes", accepted.Load(), refused.Load(), maxLen)
		})
	}
}

// TestAppendFrameSpans checks, for every framing, that the span appendFrame
// records for each frame is where the decoder finds that frame, and that
// whole counts the frames within every prefix of the stream.
func TestAppendFrameSpans(t *testing.T) {
	for _, f := range []Framing{BuffStreamsFraming(1 << 20), Uvarint, Fixed1, Fixed2, Fixed3, Fixed4, Fixed8, Fixed2LE, Fixed4LE, Fixed8LE, Fixed4Inclusive, Lines} {
		t.Run(f.String(), func(t *testing.T) {
			var buf []byte
			var spans []span
			var want [][]byte
			for i, n := range []int{0, 1, 110, 127, 128, 255, 300, 4096, 70000} {
				if n > f.maxLen() {
					continue
				}
				p := bytes.Repeat([]byte{byte('a' + i)}, n)
				buf, spans = appendFrame(f, buf, spans, p)
				want = append(want, p)
			}
			pos := 0
			for i, s := range spans {
				start, n, size, err := f.split(buf[pos:], 1<<20)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if s.at != pos+start || s.end != pos+size || !bytes.Equal(buf[s.at:s.end-len(f.trailer())], want[i]) || n != len(want[i]) {
					t.Fatalf("frame %d: span %+v, decoder says payload at %d, %d bytes, frame ends at %d", i, s, pos+start, n, pos+size)
				}
				pos += size
			}
			for n := 0; n <= len(buf); n++ {
				k := 0
				for k < len(spans) && spans[k].end <= n {
					k++
				}
				if got := whole(spans, n); got != k {
					t.Fatalf("whole(spans, %d) = %d, want %d", n, got, k)
				}
			}
		})
	}
}

// errCut is what a cutConn returns once its limit is reached.
var errCut = errors.New("cut")

// cutConn is a net.Conn that takes the first limit bytes written to it and
// then fails every write, as a socket does whose peer went away: what a
// write got in before the cut stays, and the rest of it is refused.
type cutConn struct {
	mu    sync.Mutex
	got   []byte
	limit int
}

func (c *cutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(max(c.limit-len(c.got), 0), len(p))
	c.got = append(c.got, p[:n]...)
	if n < len(p) {
		return n, errCut
	}
	return n, nil
}

func (c *cutConn) Read([]byte) (int, error)         { return 0, errCut }
func (c *cutConn) Close() error                     { return nil }
func (c *cutConn) LocalAddr() net.Addr              { return nil }
func (c *cutConn) RemoteAddr() net.Addr             { return nil }
func (c *cutConn) SetDeadline(time.Time) error      { return nil }
func (c *cutConn) SetReadDeadline(time.Time) error  { return nil }
func (c *cutConn) SetWriteDeadline(time.Time) error { return nil }

// TestEngineAccountingAtACut has eight goroutines send numbered messages,
// by Write and by WriteBatch, or through a BufferedWriter each, small and
// large, through each engine to a connection that breaks after a given
// number of bytes, often inside a frame. Every message must then be in exactly one place: among the whole
// frames that reached the connection, counted in MessagesWritten, or passed
// to OnWriteError and counted in WriteErrors. Each goroutine's delivered
// messages must also arrive in the order it sent them.
func TestEngineAccountingAtACut(t *testing.T) {
	modes := []struct {
		name string
		buf  int
	}{{"sync", 0}, {"batch", 8 << 10}}
	for _, f := range []Framing{BuffStreamsFraming(1 << 20), Uvarint, Fixed4, Lines} {
		for _, m := range modes {
			for _, limit := range []int{0, 1, 777, 30011, 123457, 1 << 30} {
				t.Run(fmt.Sprintf("%s/%s/cut=%d", m.name, f, limit), func(t *testing.T) {
					engineAtACut(t, f, m.buf, limit)
				})
			}
		}
	}
}

func engineAtACut(t *testing.T, f Framing, bufSize, limit int) {
	const writers, perWriter = 8, 120
	nc := &cutConn{limit: limit}
	var mu sync.Mutex
	failed := map[string]int{}
	c, err := NewConn(nc, &TCPConnConfig{Framing: f, MaxMessageSize: 1 << 20, WriteBufferSize: bufSize,
		OnWriteError: func(p []byte, err error) {
			if err == nil {
				t.Error("OnWriteError with a nil error")
			}
			mu.Lock()
			failed[string(p)]++
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	// msg returns message i of writer g: its id, padded to a size that
	// is sometimes above the large-message threshold. No '\n', for Lines.
	msg := func(g, i int) []byte {
		id := strconv.Itoa(g) + "." + strconv.Itoa(i) + "."
		n := 20 + (g*131+i*71)%300
		if i%37 == 5 {
			n = largeWrite + 100
		}
		return append([]byte(id), bytes.Repeat([]byte{'x'}, n)...)
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			if g%2 == 1 {
				// Half the goroutines write through a BufferedWriter of their own,
				// whose buffer holds a few frames.
				w := c.NewBufferedWriter(2048)
				for i := range perWriter {
					w.Write(msg(g, i))
				}
				w.Flush()
				return
			}
			for i := 0; i < perWriter; {
				if i%10 == 3 && i+3 <= perWriter {
					c.WriteBatch([][]byte{msg(g, i), msg(g, i+1), msg(g, i+2)})
					i += 3
					continue
				}
				c.Write(msg(g, i))
				i++
			}
		})
	}
	wg.Wait()
	c.Flush()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Decode the whole frames that got in before the cut.
	delivered := map[string]int{}
	next := make([]int, writers) // the next message number each writer may deliver
	stream := nc.got
	for len(stream) > 0 {
		start, n, size, err := f.split(stream, 1<<20)
		if err != nil {
			t.Fatalf("the stream is corrupt: %v", err)
		}
		if size == 0 || size > len(stream) {
			break // the frame cut short
		}
		p := string(stream[start : start+n])
		delivered[p]++
		var g, i int
		if _, err := fmt.Sscanf(p, "%d.%d.", &g, &i); err != nil {
			t.Fatalf("unexpected payload %.20q", p)
		}
		if i < next[g] {
			t.Fatalf("writer %d: message %d arrived after message %d", g, i, next[g]-1)
		}
		next[g] = i + 1
		stream = stream[size:]
	}
	for g := range writers {
		for i := range perWriter {
			p := msg(g, i)
			if d, e := delivered[string(p)], failed[string(p)]; d+e != 1 {
				t.Fatalf("message %d.%d: delivered %d times, reported failed %d times", g, i, d, e)
			}
		}
	}
	st := c.Stats()
	if st.MessagesWritten != uint64(len(delivered)) || st.WriteErrors != uint64(len(failed)) {
		t.Fatalf("stats say %d written and %d failed; %d were delivered and %d reported", st.MessagesWritten, st.WriteErrors, len(delivered), len(failed))
	}
}

// TestWaitersSpinWithSpareProcessors checks when a waiting Write spins
// before it parks: only while fewer Writes are under way than processors,
// so that a spinning waiter never takes a processor the owner needs.
func TestWaitersSpinWithSpareProcessors(t *testing.T) {
	for _, c := range []struct {
		procs, active int
		spin          bool
	}{
		{2, 1, true}, {2, 2, false}, {2, 8, false}, {16, 8, true}, {16, 16, false},
	} {
		e := &syncEngine{procs: c.procs}
		e.state.Store(uint64(c.active) * writeOne)
		if got := e.spinning(); got != c.spin {
			t.Errorf("%d Writes under way on %d processors: spinning %v, want %v", c.active, c.procs, got, c.spin)
		}
	}
}
