package buffstreams_test

// Benchmarks of the write path, the read path and a raw net.Conn ceiling,
// all over 127.0.0.1:
//
//	go test -run '^$' -bench . -benchmem .
//
// BenchmarkWrite and BenchmarkWriteParallel time Write calls: a Write returns
// once its frame is handed to the kernel, so they measure the sender's side
// (with the listener reading concurrently, as it always does).
// BenchmarkEndToEnd times writing b.N messages until the listener's callback
// has received the last of them: that is the read path, which should not
// allocate in steady state. BenchmarkWriteBatching is the same in batching
// mode (Flush after the last Write), BenchmarkWriteGroupCommit with eight
// goroutines writing on one connection in the default mode.
//
// BenchmarkRawTCP is the same end-to-end measurement for pre-framed bytes
// written in large chunks on a net.Conn and parsed in place by the server:
// the ceiling no library can beat. BenchmarkBufio4Byte is the loop a Go
// developer writes by hand: a 4-byte big-endian header and the payload
// through a bufio.Writer of 64 KiB, read back through a bufio.Reader of
// 64 KiB with io.ReadFull into a reused buffer.
//
// BenchmarkRoundTrip times request-response rounds of 110 bytes, one
// outstanding (TCPConn.Write then TCPConn.Read, the listener's ConnCallback
// replying with conn.Write): ns/op is the latency of a round.
// BenchmarkRoundTripRaw is the same over a net.Conn (4-byte header,
// io.ReadFull at both ends).
//
// BenchmarkFraming times one header written and parsed through the Framing
// interface, the per-frame work of the write and read paths that depends on
// the wire format.
//
// The others report msgs/s (rounds/s for the round trips) besides ns/op
// and MB/s (payload bytes only). Each closes its listener and connections
// in b.Cleanup and fails if goroutines are left behind; every wait is
// bounded by benchDeliveryTimeout.

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
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
	return benchPipeWith(b, buffstreams.TCPListenerConfig{Callback: cb}, buffstreams.TCPConnConfig{})
}

// benchPipeWith is benchPipe with the listener's and the connection's
// configurations; their Address and MaxMessageSize are set here.
func benchPipeWith(b *testing.B, lcfg buffstreams.TCPListenerConfig, ccfg buffstreams.TCPConnConfig) (*buffstreams.TCPListener, *buffstreams.TCPConn) {
	b.Helper()
	benchCheckGoroutines(b)
	lcfg.Address = "127.0.0.1:0"
	lcfg.MaxMessageSize = benchMaxMessageSize
	ln, err := buffstreams.ListenTCP(lcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ln.Close)
	if err := ln.StartListeningAsync(); err != nil {
		b.Fatal(err)
	}
	ccfg.Address = ln.Addr().String()
	ccfg.MaxMessageSize = benchMaxMessageSize
	c, err := buffstreams.DialTCP(&ccfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return ln, c
}

func benchNoop([]byte) error { return nil }

// benchWarm is the number of messages sent before timing starts.
const benchWarm = 100

// benchWarmUp writes benchWarm messages, so that buffers allocated on first use
// on both ends are not counted in the timed part.
func benchWarmUp(b *testing.B, c *buffstreams.TCPConn, p []byte) {
	b.Helper()
	for range benchWarm {
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
			cnt.expect(benchWarm)
			benchWarmUp(b, c, p)
			cnt.wait(b, timer)
			benchWaitCounted(b, ln, benchWarm)

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
			benchWaitCounted(b, ln, benchWarm+uint64(b.N))
		})
	}
}

// benchDelivered warms up with benchWarm messages, then times send(b.N)
// until cnt has counted every message sent, and reports the rate. send
// writes n messages of size bytes and flushes whatever it buffers.
func benchDelivered(b *testing.B, cnt *benchCounter, size int, send func(n int)) {
	b.Helper()
	timer := time.NewTimer(benchDeliveryTimeout)
	defer timer.Stop()
	cnt.expect(benchWarm)
	send(benchWarm)
	cnt.wait(b, timer)

	cnt.expect(b.N)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	send(b.N)
	cnt.wait(b, timer)
	b.StopTimer()
	benchRate(b)
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
			benchDelivered(b, cnt, size, send)
		})
	}
}

// benchRawPipe starts a raw TCP server counting frames into cnt, reading
// with a buffer of bufSize bytes, and dials one connection to it (see
// benchPlainPipe).
func benchRawPipe(b *testing.B, bufSize int, cnt *benchCounter) net.Conn {
	b.Helper()
	return benchPlainPipe(b, func(c net.Conn) error { return benchRawServe(c, bufSize, cnt) })
}

// benchPlainPipe starts a TCP server running serve on every accepted
// connection (serve returns nil when its peer closed the connection
// cleanly), and dials one connection to it. Both are closed by b.Cleanup,
// which waits for the server's goroutines, reports serve's first error and
// checks for leaks.
func benchPlainPipe(b *testing.B, serve func(net.Conn) error) net.Conn {
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
				defer sc.Close()
				if err := serve(sc); err != nil {
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

// benchWriteBuffer is the WriteBufferSize of BenchmarkWriteBatching for
// small payloads; as in test/bench's batch transport, the buffer holds at
// least 16 payloads (1 MiB at 64 KiB).
const benchWriteBuffer = 64 << 10

// benchWriters is the number of goroutines of BenchmarkWriteGroupCommit.
const benchWriters = 8

// BenchmarkWriteBatching times writing b.N messages in batching mode, then
// Flush, until the listener's callback has received all of them.
func BenchmarkWriteBatching(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			cnt := newBenchCounter()
			_, c := benchPipeWith(b,
				buffstreams.TCPListenerConfig{Callback: func([]byte) error { cnt.add(1); return nil }},
				buffstreams.TCPConnConfig{WriteBufferSize: max(benchWriteBuffer, 16*size)})
			p := benchPayload(size)
			benchDelivered(b, cnt, size, func(n int) {
				for range n {
					if _, err := c.Write(p); err != nil {
						b.Fatal(err)
					}
				}
				if err := c.Flush(); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkBufferedWriter times one goroutine writing b.N messages through
// a BufferedWriter of benchWriteBuffer bytes (at least 16 payloads) on a
// connection in the default mode, then Flush, until the listener's
// callback has received all of them.
func BenchmarkBufferedWriter(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			cnt := newBenchCounter()
			_, c := benchPipe(b, func([]byte) error { cnt.add(1); return nil })
			w := c.NewBufferedWriter(max(benchWriteBuffer, 16*size))
			p := benchPayload(size)
			benchDelivered(b, cnt, size, func(n int) {
				for range n {
					if _, err := w.Write(p); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkWriteGroupCommit times benchWriters goroutines writing b.N
// messages in all on one connection in the default mode, until the
// listener's callback has received all of them: concurrent Writes share
// system calls.
func BenchmarkWriteGroupCommit(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			cnt := newBenchCounter()
			_, c := benchPipe(b, func([]byte) error { cnt.add(1); return nil })
			p := benchPayload(size)
			timer := time.NewTimer(benchDeliveryTimeout)
			defer timer.Stop()

			cnt.expect(benchWarm)
			benchWarmUp(b, c, p)
			cnt.wait(b, timer)

			// The writers start before the timer, and wait for start.
			cnt.expect(b.N)
			start := make(chan struct{})
			errs := make(chan error, benchWriters)
			var wg sync.WaitGroup
			for w := range benchWriters {
				n := b.N / benchWriters
				if w < b.N%benchWriters {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for range n {
						if _, err := c.Write(p); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			close(start)
			wg.Wait()
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			cnt.wait(b, timer)
			b.StopTimer()
			benchRate(b)
		})
	}
}

// BenchmarkBufio4Byte times the hand-written loop: a 4-byte big-endian
// header and the payload written through a bufio.Writer of 64 KiB for each
// of b.N messages, then Flush, until the server, reading through a
// bufio.Reader of 64 KiB with io.ReadFull, has received all of them.
func BenchmarkBufio4Byte(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			cnt := newBenchCounter()
			c := benchPlainPipe(b, func(c net.Conn) error { return benchBufioServe(c, cnt) })
			w := bufio.NewWriterSize(c, 64<<10)
			p := benchPayload(size)
			var hdr [4]byte
			send := func(n int) {
				for range n {
					binary.BigEndian.PutUint32(hdr[:], uint32(len(p)))
					if _, err := w.Write(hdr[:]); err != nil {
						b.Fatal(err)
					}
					if _, err := w.Write(p); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			benchDelivered(b, cnt, size, send)
		})
	}
}

// benchBufioServe reads frames of a 4-byte big-endian length and a payload
// through a bufio.Reader of 64 KiB, with io.ReadFull into a reused buffer.
// It counts the messages into cnt when the reader's buffer is empty, before
// a read that may block, rather than once per message.
func benchBufioServe(c net.Conn, cnt *benchCounter) error {
	r := bufio.NewReaderSize(c, 64<<10)
	var hdr [4]byte
	buf := make([]byte, benchMaxMessageSize)
	var msgs int64
	for {
		if msgs > 0 && r.Buffered() == 0 {
			cnt.add(msgs)
			msgs = 0
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("bufio server: %w", err)
		}
		l := binary.BigEndian.Uint32(hdr[:])
		if l > benchMaxMessageSize {
			return fmt.Errorf("bufio server: bad length %d", l)
		}
		if _, err := io.ReadFull(r, buf[:l]); err != nil {
			return fmt.Errorf("bufio server: %w", err)
		}
		msgs++
	}
}

// benchRoundTripSize is the payload of the requests and replies of the
// round-trip benchmarks.
const benchRoundTripSize = 110

// BenchmarkRoundTrip times request-response rounds with one request
// outstanding: TCPConn.Write, then TCPConn.Read of the reply, which the
// listener's ConnCallback writes with conn.Write.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run(fmt.Sprintf("size=%d", benchRoundTripSize), func(b *testing.B) {
		_, c := benchPipeWith(b, buffstreams.TCPListenerConfig{
			ConnCallback: func(conn *buffstreams.TCPConn, msg []byte) error {
				_, err := conn.Write(msg)
				return err
			},
		}, buffstreams.TCPConnConfig{})
		p := benchPayload(benchRoundTripSize)
		buf := make([]byte, benchMaxMessageSize)
		round := func() {
			if _, err := c.Write(p); err != nil {
				b.Fatal(err)
			}
			n, err := c.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			if n != len(p) {
				b.Fatalf("reply of %d bytes, want %d", n, len(p))
			}
		}
		benchRounds(b, round, func() { c.Close() })
	})
}

// BenchmarkRoundTripRaw is BenchmarkRoundTrip over a net.Conn: each end
// writes a frame (4-byte big-endian length and payload) with one Write and
// reads one with io.ReadFull of the header, then of the payload.
func BenchmarkRoundTripRaw(b *testing.B) {
	b.Run(fmt.Sprintf("size=%d", benchRoundTripSize), func(b *testing.B) {
		c := benchPlainPipe(b, benchEchoServe)
		frame := binary.BigEndian.AppendUint32(nil, benchRoundTripSize)
		frame = append(frame, benchPayload(benchRoundTripSize)...)
		buf := make([]byte, 4+benchMaxMessageSize)
		round := func() {
			if _, err := c.Write(frame); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:4]); err != nil {
				b.Fatal(err)
			}
			l := int(binary.BigEndian.Uint32(buf))
			if l != benchRoundTripSize {
				b.Fatalf("reply of %d bytes, want %d", l, benchRoundTripSize)
			}
			if _, err := io.ReadFull(c, buf[4:4+l]); err != nil {
				b.Fatal(err)
			}
		}
		benchRounds(b, round, func() { c.Close() })
	})
}

// benchRounds warms up with 100 rounds, then times b.N. If the rounds take
// longer than benchDeliveryTimeout, abort is called, which must make the
// round in progress fail.
func benchRounds(b *testing.B, round, abort func()) {
	b.Helper()
	for range 100 {
		round()
	}
	watchdog := time.AfterFunc(benchDeliveryTimeout, abort)
	defer watchdog.Stop()
	b.SetBytes(benchRoundTripSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		round()
	}
	b.StopTimer()
	benchRate(b)
}

// benchEchoServe writes every frame it reads (4-byte big-endian length and
// payload) back, reading the header and then the payload with io.ReadFull
// into one buffer and writing both with one Write.
func benchEchoServe(c net.Conn) error {
	buf := make([]byte, 4+benchMaxMessageSize)
	for {
		if _, err := io.ReadFull(c, buf[:4]); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		l := int(binary.BigEndian.Uint32(buf))
		if l > benchMaxMessageSize {
			return fmt.Errorf("echo server: bad length %d", l)
		}
		if _, err := io.ReadFull(c, buf[4:4+l]); err != nil {
			return err
		}
		if _, err := c.Write(buf[:4+l]); err != nil {
			return err
		}
	}
}

// BenchmarkAcks compares acknowledged delivery with plain delivery, in
// both write modes and through a BufferedWriter on a connection in the default
// mode, at 110 bytes: each run writes b.N messages until the
// listener's callback has them all and, with acks on, until Sync returns,
// so that every message is also acknowledged.
func BenchmarkAcks(b *testing.B) {
	const size = 110
	for _, mode := range []struct {
		name   string
		buf    int
		writer bool
	}{{"default", 0, false}, {"batching", benchWriteBuffer, false}, {"bufwriter", 0, true}} {
		for _, acks := range []bool{false, true} {
			b.Run(fmt.Sprintf("mode=%s/acks=%v", mode.name, acks), func(b *testing.B) {
				var lack, cack *buffstreams.AckConfig
				if acks {
					lack, cack = &buffstreams.AckConfig{}, &buffstreams.AckConfig{}
				}
				cnt := newBenchCounter()
				_, c := benchPipeWith(b,
					buffstreams.TCPListenerConfig{Callback: func([]byte) error { cnt.add(1); return nil }, Acks: lack},
					buffstreams.TCPConnConfig{WriteBufferSize: mode.buf, Acks: cack})
				p := benchPayload(size)
				write := c.Write
				var w *buffstreams.BufferedWriter
				if mode.writer {
					w = c.NewBufferedWriter(benchWriteBuffer)
					write = w.Write
				}
				benchDelivered(b, cnt, size, func(n int) {
					for range n {
						if _, err := write(p); err != nil {
							b.Fatal(err)
						}
					}
					if w != nil {
						if err := w.Flush(); err != nil {
							b.Fatal(err)
						}
					}
					ctx, cancel := context.WithTimeout(context.Background(), benchDeliveryTimeout)
					defer cancel()
					if err := c.Sync(ctx); err != nil {
						b.Fatal(err)
					}
				})
			})
		}
	}
}

// BenchmarkLockUnlock measures one uncontended sync.Mutex Lock and Unlock:
// the least a Write that is safe for concurrent use pays per message, and
// what a bufio.Writer, which is not, does not pay. It is the machine's
// figure, to set beside WriteBatching and Bufio4Byte.
func BenchmarkLockUnlock(b *testing.B) {
	var mu sync.Mutex
	for b.Loop() {
		mu.Lock()
		//lint:ignore SA2001 an empty critical section is what is measured
		mu.Unlock()
	}
}

// benchIdleGap is the pause before each Write of the lone-write
// benchmarks: long enough that the connection is idle again.
const benchIdleGap = time.Millisecond

// BenchmarkLoneWrite times a Write after an idle gap until the listener's
// callback runs with it: what a lone request or event pays. Each op sleeps
// benchIdleGap with the timer stopped, then times one Write and its
// delivery; p50-µs is the median of those times.
func BenchmarkLoneWrite(b *testing.B) {
	b.Run(fmt.Sprintf("size=%d", benchRoundTripSize), func(b *testing.B) {
		got := make(chan struct{}, 1)
		_, c := benchPipeWith(b, buffstreams.TCPListenerConfig{
			Callback: func([]byte) error { got <- struct{}{}; return nil },
		}, buffstreams.TCPConnConfig{})
		p := benchPayload(benchRoundTripSize)
		benchLoneWrites(b, func() {
			if _, err := c.Write(p); err != nil {
				b.Fatal(err)
			}
			<-got
		})
	})
}

// BenchmarkLoneWriteRaw is BenchmarkLoneWrite over a net.Conn: one Write
// of a framed message, and a reader that reads its header and then its
// payload with io.ReadFull.
func BenchmarkLoneWriteRaw(b *testing.B) {
	b.Run(fmt.Sprintf("size=%d", benchRoundTripSize), func(b *testing.B) {
		got := make(chan struct{}, 1)
		c := benchPlainPipe(b, func(c net.Conn) error {
			buf := make([]byte, 4+benchMaxMessageSize)
			for {
				if _, err := io.ReadFull(c, buf[:4]); err != nil {
					return nil
				}
				if _, err := io.ReadFull(c, buf[4:4+binary.BigEndian.Uint32(buf)]); err != nil {
					return err
				}
				got <- struct{}{}
			}
		})
		frame := binary.BigEndian.AppendUint32(nil, benchRoundTripSize)
		frame = append(frame, benchPayload(benchRoundTripSize)...)
		benchLoneWrites(b, func() {
			if _, err := c.Write(frame); err != nil {
				b.Fatal(err)
			}
			<-got
		})
		c.Close()
	})
}

// benchLoneWrites runs send, which writes one message and waits for its
// delivery, b.N times after a pause of benchIdleGap each, timing only the
// sends, and reports their median as p50-µs.
func benchLoneWrites(b *testing.B, send func()) {
	b.Helper()
	for range 10 {
		send()
	}
	took := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		time.Sleep(benchIdleGap)
		b.StartTimer()
		t0 := time.Now()
		send()
		took = append(took, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2])/1e3, "p50-µs")
}

// BenchmarkFraming times one header of a 110-byte payload, written
// (op=put) and parsed (op=split), through the Framing interface as the
// write and read paths call them, for the default framing (BuffStreams
// 2.0's, MaxMessageSize 1 MiB) and the two most common others.
func BenchmarkFraming(b *testing.B) {
	const size = 110
	for _, f := range []buffstreams.Framing{buffstreams.BuffStreamsFraming(benchMaxMessageSize), buffstreams.Uvarint, buffstreams.Fixed4} {
		dst := make([]byte, buffstreams.MaxHeaderLen+size)
		b.Run(fmt.Sprintf("framing=%s/op=put", f), func(b *testing.B) {
			for b.Loop() {
				buffstreams.PutHeader(f, dst, size)
			}
		})
		b.Run(fmt.Sprintf("framing=%s/op=split", f), func(b *testing.B) {
			h := buffstreams.PutHeader(f, dst, size)
			p := dst[:h+size]
			for b.Loop() {
				if _, n, _, err := buffstreams.Split(f, p, benchMaxMessageSize); n != size || err != nil {
					b.Fatalf("split: %d bytes, %v", n, err)
				}
			}
		})
	}
}
