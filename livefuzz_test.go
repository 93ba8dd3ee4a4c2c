package buffstreams_test

// FuzzLiveListener drives a real listener, over net.Pipe, with the fuzzer's
// bytes on one connection and a good message on another, and compares what
// it delivers with a reference decoder written here from the wire formats'
// definitions.

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

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

// pipeListener is an in-memory net.Listener: Accept returns the server ends
// of net.Pipe connections made by dial.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *pipeListener) Addr() net.Addr { return pipeAddr("listener") }

// dial returns the client end of a new connection, once the listener has
// accepted the server end, whose LocalAddr is name.
func (p *pipeListener) dial(name string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case p.conns <- namedConn{server, name}:
		return client, nil
	case <-p.closed:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	}
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// namedConn is a net.Conn whose LocalAddr names it, so that a ConnCallback
// can tell connections apart.
type namedConn struct {
	net.Conn
	name string
}

func (c namedConn) LocalAddr() net.Addr { return pipeAddr(c.name) }

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
