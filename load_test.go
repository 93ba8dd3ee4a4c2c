package buffstreams_test

// Load: hostile input in every framing while a hundred good connections
// stream, a thousand connections of a thousand messages each, and ten
// thousand connect/close cycles that must leave nothing behind.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

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
