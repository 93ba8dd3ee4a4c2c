package buffstreams_test

// Benchmarks of the write path, the read path and a raw net.Conn ceiling,
// all over 127.0.0.1:
//
//	go test -run XXX -bench . -benchmem .
//
// BenchmarkWrite and BenchmarkWriteParallel time Write calls: a Write returns
// once its frame is handed to the kernel, so they measure the sender's side
// (with the listener reading concurrently, as it always does).
// BenchmarkEndToEnd times writing b.N messages until the listener's callback
// has received the last of them: that is the read path, which should not
// allocate in steady state. BenchmarkRawTCP is the same end-to-end
// measurement for pre-framed bytes written in large chunks on a net.Conn and
// parsed in place by the server: the ceiling no library can beat.
//
// Each reports msgs/s besides ns/op and MB/s (payload bytes only). Every
// benchmark closes its listener and connections in b.Cleanup and fails if
// goroutines are left behind.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buffstreams/buffstreams"
)

// benchSizes are the payload sizes of every benchmark: a small protobuf
// message, 1 KiB and 64 KiB.
var benchSizes = []int{110, 1024, 65536}

// benchMaxMessageSize is the MaxMessageSize of both ends: room for 64 KiB
// payloads.
const benchMaxMessageSize = 1 << 20

// benchDeliveryTimeout bounds every wait for delivery.
const benchDeliveryTimeout = time.Minute

func benchPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return p
}

// benchCheckGoroutines fails b if, once every cleanup registered after it
// has run, more goroutines are running than now.
func benchCheckGoroutines(b *testing.B) {
	before := runtime.NumGoroutine()
	b.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				b.Errorf("%d goroutines left behind (%d before):\n%s", runtime.NumGoroutine()-before, before, buf)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// benchRate reports the message rate of the timed part of the benchmark.
func benchRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "msgs/s")
	}
}

// benchCounter counts received messages and signals when a target is
// reached. It is reset between the warm-up and the timed part, while nothing
// is in flight.
type benchCounter struct {
	got, want atomic.Int64
	done      chan struct{}
}

func newBenchCounter() *benchCounter {
	return &benchCounter{done: make(chan struct{}, 1)}
}

// add counts n messages.
func (c *benchCounter) add(n int64) {
	got := c.got.Add(n)
	if w := c.want.Load(); got >= w && got-n < w {
		select {
		case c.done <- struct{}{}:
		default: // cannot happen: the target is crossed once per expect
		}
	}
}

// expect resets the count and sets the target.
func (c *benchCounter) expect(n int) {
	c.got.Store(0)
	c.want.Store(int64(n))
}

// wait waits until the target is reached, or t fires.
func (c *benchCounter) wait(b *testing.B, t *time.Timer) {
	select {
	case <-c.done:
	case <-t.C:
		b.Fatalf("timeout: received %d of %d messages", c.got.Load(), c.want.Load())
	}
}

// benchPipe starts a listener calling cb and dials one connection to it.
// Both are closed by b.Cleanup, which also checks for leaked goroutines.
func benchPipe(b *testing.B, cb buffstreams.ListenCallback) (*buffstreams.TCPListener, *buffstreams.TCPConn) {
	b.Helper()
	benchCheckGoroutines(b)
	ln, err := buffstreams.ListenTCP(buffstreams.TCPListenerConfig{
		Address:        "127.0.0.1:0",
		MaxMessageSize: benchMaxMessageSize,
		Callback:       cb,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ln.Close)
	if err := ln.StartListeningAsync(); err != nil {
		b.Fatal(err)
	}
	c, err := buffstreams.DialTCP(&buffstreams.TCPConnConfig{
		Address:        ln.Addr().String(),
		MaxMessageSize: benchMaxMessageSize,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return ln, c
}

func benchNoop([]byte) error { return nil }

// benchWarmUp writes a few messages, so that buffers allocated on first use
// on both ends are not counted in the timed part.
func benchWarmUp(b *testing.B, c *buffstreams.TCPConn, p []byte) {
	b.Helper()
	for range 100 {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite times Write calls on one connection to a live listener.
func BenchmarkWrite(b *testing.B) {
	benchWrites(b, func(b *testing.B, c *buffstreams.TCPConn, p []byte) {
		for range b.N {
			if _, err := c.Write(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWriteParallel times concurrent Write calls on one connection.
func BenchmarkWriteParallel(b *testing.B) {
	benchWrites(b, func(b *testing.B, c *buffstreams.TCPConn, p []byte) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Write(p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// benchWrites runs a sub-benchmark per payload size that times only timed,
// which writes b.N messages of payload p on c, a warmed-up connection to a
// listener that discards what it receives.
func benchWrites(b *testing.B, timed func(b *testing.B, c *buffstreams.TCPConn, p []byte)) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			_, c := benchPipe(b, benchNoop)
			p := benchPayload(size)
			benchWarmUp(b, c, p)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			timed(b, c, p)
			b.StopTimer()
			benchRate(b)
		})
	}
}

// BenchmarkEndToEnd times writing b.N messages until the listener's callback
// has received all of them.
func BenchmarkEndToEnd(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			cnt := newBenchCounter()
			ln, c := benchPipe(b, func([]byte) error { cnt.add(1); return nil })
			p := benchPayload(size)
			timer := time.NewTimer(benchDeliveryTimeout)
			defer timer.Stop()

			// Warm up: start the read loop and size its buffer.
			const warm = 100
			cnt.expect(warm)
			for range warm {
				if _, err := c.Write(p); err != nil {
					b.Fatal(err)
				}
			}
			cnt.wait(b, timer)
			benchWaitCounted(b, ln, warm)

			cnt.expect(b.N)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(p); err != nil {
					b.Fatal(err)
				}
			}
			cnt.wait(b, timer)
			b.StopTimer()
			benchRate(b)
			if st := ln.Stats(); st.BadInput+st.CallbackErrors+st.Panics != 0 {
				b.Fatalf("listener stats: %+v", st)
			}
			benchWaitCounted(b, ln, warm+uint64(b.N))
		})
	}
}

// benchWaitCounted waits until the listener's Stats count n messages. The
// listener publishes its counts once per read, after the callbacks of that
// read, so they can lag behind the callback for a moment.
func benchWaitCounted(b *testing.B, ln *buffstreams.TCPListener, n uint64) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := ln.Stats().Messages
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			b.Fatalf("listener counted %d messages, want %d", got, n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// BenchmarkRawTCP is BenchmarkEndToEnd's ceiling: the client writes
// pre-framed bytes (4-byte big-endian length + payload, repeated) in large
// chunks, and the server reads into a large buffer and counts the frames in
// place.
func BenchmarkRawTCP(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			frame := 4 + size
			chunkSize := 256 << 10
			if size >= 32<<10 {
				chunkSize = 1 << 20
			}
			chunkSize = max(chunkSize, frame)
			perChunk := chunkSize / frame
			p := benchPayload(size)
			chunk := make([]byte, 0, perChunk*frame)
			for range perChunk {
				chunk = binary.BigEndian.AppendUint32(chunk, uint32(size))
				chunk = append(chunk, p...)
			}

			cnt := newBenchCounter()
			c := benchRawPipe(b, chunkSize, cnt)
			send := func(n int) {
				for n > 0 {
					k := min(perChunk, n)
					if _, err := c.Write(chunk[:k*frame]); err != nil {
						b.Fatal(err)
					}
					n -= k
				}
			}
			timer := time.NewTimer(benchDeliveryTimeout)
			defer timer.Stop()

			const warm = 100
			cnt.expect(warm)
			send(warm)
			cnt.wait(b, timer)

			cnt.expect(b.N)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			send(b.N)
			cnt.wait(b, timer)
			b.StopTimer()
			benchRate(b)
		})
	}
}

// benchRawPipe starts a raw TCP server counting frames into cnt, reading
// with a buffer of bufSize bytes, and dials one connection to it. Both are
// closed by b.Cleanup, which waits for the server's goroutines and checks
// for leaks.
func benchRawPipe(b *testing.B, bufSize int, cnt *benchCounter) net.Conn {
	b.Helper()
	benchCheckGoroutines(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		served []net.Conn
		closed bool
		srvErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			sc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				sc.Close()
				return
			}
			served = append(served, sc)
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				if err := benchRawServe(sc, bufSize, cnt); err != nil {
					mu.Lock()
					if !closed {
						srvErr = err
					}
					mu.Unlock()
				}
			}()
		}
	}()
	b.Cleanup(func() {
		mu.Lock()
		closed = true
		for _, sc := range served {
			sc.Close()
		}
		mu.Unlock()
		ln.Close()
		wg.Wait()
		if srvErr != nil {
			b.Error(srvErr)
		}
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// benchRawServe reads frames from c into one buffer, counting them in place
// and moving only a trailing incomplete frame to the front before the next
// read.
func benchRawServe(c net.Conn, bufSize int, cnt *benchCounter) error {
	defer c.Close()
	buf := make([]byte, bufSize)
	w := 0
	for {
		n, err := c.Read(buf[w:])
		w += n
		r := 0
		var msgs int64
		for w-r >= 4 {
			l := int(binary.BigEndian.Uint32(buf[r:]))
			if l > benchMaxMessageSize || 4+l > len(buf) {
				return fmt.Errorf("raw server: bad length %d", l)
			}
			if w-r-4 < l {
				break
			}
			r += 4 + l
			msgs++
		}
		if msgs > 0 {
			cnt.add(msgs)
		}
		if r > 0 {
			w = copy(buf, buf[r:w])
		}
		if err != nil {
			if err == io.EOF && w == 0 {
				return nil
			}
			return fmt.Errorf("raw server: %w (%d bytes pending)", err, w)
		}
	}
}
