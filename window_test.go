package buffstreams

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// testWindow returns a window of the given bound with the default framing.
func testWindow(t *testing.T, bound int) *window { return testWindowWith(t, bound, nil) }

// testWindowWith returns a window of the given bound with framing f, or
// the default framing if f is nil.
func testWindowWith(t *testing.T, bound int, f Framing) *window {
	t.Helper()
	wr, err := newWire(0, f)
	if err != nil {
		t.Fatal(err)
	}
	w := newWindow(wr.framing, bound)
	return &w
}

// frames returns the frames of msgs, one after another, as the window
// appends them.
func framesOf(w *window, msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b, _ = frameTo(w.framing, b, m)
	}
	return b
}

func msgN(i int) []byte { return fmt.Appendf(nil, "message %03d", i) }

// TestWindowPushAndAck checks that push numbers the messages from 1 and
// records their frames, that sentTo counts whole frames only, and that
// acknowledging settles them and empties the window.
func TestWindowPushAndAck(t *testing.T) {
	w := testWindow(t, 1<<20)
	for i := 1; i <= 3; i++ {
		if seq := w.push(msgN(i)); seq != uint64(i) {
			t.Fatalf("push %d: sequence %d", i, seq)
		}
	}
	want := framesOf(w, msgN(1), msgN(2), msgN(3))
	if w.pending() != 3 || w.last() != 3 || w.unsent() != len(want) {
		t.Fatalf("pending %d, last %d, unsent %d; want 3, 3, %d", w.pending(), w.last(), w.unsent(), len(want))
	}
	if w.held() != len(want)+3*spanCost {
		t.Errorf("held %d, want %d", w.held(), len(want)+3*spanCost)
	}
	b, from := w.lend()
	if from != 0 || !bytes.Equal(b, want) {
		t.Fatalf("lend: %q at %d, want %q at 0", b, from, want)
	}
	one := len(framesOf(w, msgN(1)))
	// A write that stops inside the second frame delivered the first.
	w.unlend()
	if n, nb := w.sentTo(from + int64(one) + 2); n != 1 || nb != uint64(len(msgN(1))) {
		t.Fatalf("sentTo: %d messages, %d bytes; want 1, %d", n, nb, len(msgN(1)))
	}
	if !bytes.Equal(w.payload(2), msgN(2)) {
		t.Errorf("payload(2) = %q", w.payload(2))
	}
	// Acknowledging the second counts it as written too.
	if n, _ := w.ackUpTo(2); n != 1 || w.reached != 2 || w.acked != 2 || w.pending() != 1 {
		t.Fatalf("ackUpTo(2): %d newly written; reached %d, acked %d, pending %d", n, w.reached, w.acked, w.pending())
	}
	if n, _ := w.ackUpTo(3); n != 1 || w.pending() != 0 || w.held() != 0 {
		t.Fatalf("ackUpTo(3): %d newly written, pending %d, held %d", n, w.pending(), w.held())
	}
	if w.head != w.end || w.end != int64(len(want)) {
		t.Errorf("an empty window holds the stream from offset %d to %d, want nothing from %d", w.head, w.end, len(want))
	}
}

// TestWindowReplay checks that a new socket is given the window from the
// first unsettled frame, whatever the last socket had.
func TestWindowReplay(t *testing.T) {
	w := testWindow(t, 1<<20)
	for i := 1; i <= 4; i++ {
		w.push(msgN(i))
	}
	_, from := w.lend()
	w.unlend()
	w.sentTo(from + int64(w.unsent()))
	w.ackUpTo(1)
	if w.unsent() != 0 {
		t.Fatalf("unsent %d after everything was sent", w.unsent())
	}
	w.replay()
	b, _ := w.lend()
	w.unlend()
	if want := framesOf(w, msgN(2), msgN(3), msgN(4)); !bytes.Equal(b, want) {
		t.Fatalf("replay: %q, want %q", b, want)
	}
	// Replayed frames are not counted as written twice.
	if n, _ := w.sentTo(w.end); n != 0 {
		t.Errorf("replaying counted %d messages again", n)
	}
}

// TestWindowLentStaysPut checks the window's promise to the owner of the
// socket: while it writes from what lend gave it, acknowledgements,
// appends and moves to a new ring leave those bytes alone, and the offset
// it reports afterwards counts the right frames.
func TestWindowLentStaysPut(t *testing.T) {
	w := testWindow(t, 1<<20)
	for i := 1; i <= 8; i++ {
		w.push(msgN(i))
	}
	b, from := w.lend()
	saved := bytes.Clone(b)
	// Messages 1 to 6 are acknowledged (over an earlier socket, say),
	// and the window appends, grows and moves while b is out.
	w.ackUpTo(6)
	for i := 9; i <= 200; i++ {
		w.push(msgN(i))
	}
	w.ackUpTo(7)
	w.regrow(64 << 10)
	if w.lent != lentOther {
		t.Fatalf("moving a lent ring left lendState %d", w.lent)
	}
	if !bytes.Equal(b, saved) {
		t.Fatal("the lent bytes changed under their owner")
	}
	w.unlend()
	// The owner wrote all it was lent: messages 7 and 8 reached the
	// kernel; 1 to 6 counted when they were acknowledged.
	if n, _ := w.sentTo(from + int64(len(b))); n != 1 || w.reached != 8 {
		t.Fatalf("sentTo: %d newly written, reached %d; want 1, 8", n, w.reached)
	}
	rest, _ := w.lend()
	w.unlend()
	var msgs [][]byte
	for i := 9; i <= 200; i++ {
		msgs = append(msgs, msgN(i))
	}
	if want := framesOf(w, msgs...); !bytes.Equal(rest, want) {
		t.Fatalf("after the owner came back, the socket is given %d bytes, want %d", len(rest), len(want))
	}
}

// TestWindowFailAll checks that failAll returns every unsettled payload,
// in order, that they stay intact while the window is used again, and
// that the window is then empty with every message settled.
func TestWindowFailAll(t *testing.T) {
	w := testWindow(t, 1<<20)
	for i := 1; i <= 5; i++ {
		w.push(msgN(i))
	}
	w.ackUpTo(2)
	failed := w.failAll()
	if len(failed) != 3 {
		t.Fatalf("failAll returned %d messages, want 3", len(failed))
	}
	if w.pending() != 0 || w.acked != 5 || w.reached != 5 || w.held() != 0 || w.unsent() != 0 {
		t.Fatalf("after failAll: pending %d, acked %d, reached %d, held %d, unsent %d", w.pending(), w.acked, w.reached, w.held(), w.unsent())
	}
	for i := 6; i <= 50; i++ {
		if seq := w.push(msgN(i)); seq != uint64(i) {
			t.Fatalf("push after failAll: sequence %d, want %d", seq, i)
		}
	}
	for i, m := range failed {
		if !bytes.Equal(m, msgN(i+3)) {
			t.Errorf("failed message %d is %q, want %q", i, m, msgN(i+3))
		}
	}
	if len(w.failAll()) != 45 || len(w.failAll()) != 0 {
		t.Error("failAll of an empty window returned messages")
	}
}

// TestWindowBound checks that fits follows the bound, that an empty
// window takes a message of any size, and that the buffer does not grow
// past what the bound needs.
func TestWindowBound(t *testing.T) {
	const bound = 4096
	w := testWindow(t, bound)
	big := make([]byte, 2*bound)
	if !w.fits(len(big)) {
		t.Fatal("an empty window refused a message")
	}
	w.push(big)
	if w.fits(1) {
		t.Fatal("a window past its bound has room")
	}
	w.ackUpTo(1)
	n := 0
	for w.fits(100) {
		w.push(make([]byte, 100))
		n++
	}
	if w.held() > bound {
		t.Errorf("held %d past the bound %d", w.held(), bound)
	}
	if len(w.ring) > 2*bound+maxHeaderLen+len(big) {
		t.Errorf("ring of %d bytes for a bound of %d", len(w.ring), bound)
	}
	if n == 0 {
		t.Error("the window took no message after it drained")
	}
}

// TestWindowSteadyStateAllocs checks that a window that has grown appends,
// a message or a run of frames at a time, lends and settles without
// allocating.
func TestWindowSteadyStateAllocs(t *testing.T) {
	t.Run("push", func(t *testing.T) {
		windowSteadyState(t, func(w *window, msg []byte) {
			for range 100 {
				w.push(msg)
			}
		})
	})
	t.Run("pushRun", func(t *testing.T) {
		var run []byte
		var spans []span
		windowSteadyState(t, func(w *window, msg []byte) {
			if run == nil {
				for range 100 {
					run, spans = appendFrame(w.framing, run, spans, msg)
				}
			}
			w.pushRun(run, spans)
		})
	})
}

func windowSteadyState(t *testing.T, add func(w *window, msg []byte)) {
	w := testWindow(t, 1<<20)
	msg := make([]byte, 110)
	round := func() {
		add(w, msg)
		_, from := w.lend()
		w.ackUpTo(w.acked + 50) // while lent
		w.unlend()
		w.sentTo(from + int64(w.unsent()))
		w.ackUpTo(w.last())
	}
	round()
	round()
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Errorf("%v allocations per round", n)
	}
	// The settled frames' records are dropped, not kept growing.
	if c := cap(w.frames); c > 1000 {
		t.Errorf("after 102 rounds of 100 messages the frame records take %d", c)
	}
}

// TestWindowModel drives windows with random pushes of random sizes,
// partial writes, acknowledgements, replays and failures, against a model
// that keeps the whole stream, so that the ring wraps, grows and moves in
// every order. After each step it checks what lend hands out, every
// unsettled payload, the bound, and that lent bytes stay put until unlend.
// It runs with framings whose frames are as long as the room the window
// asks for (Fixed8 is close) and shorter (the default), and with a
// trailer (Lines).
func TestWindowModel(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 30
	}
	for _, f := range []Framing{nil, Fixed8, Lines} {
		for seed := range seeds {
			windowModelRun(t, uint64(seed), f)
			if t.Failed() {
				t.Fatalf("framing %v, seed %d", f, seed)
			}
		}
	}
}

func windowModelRun(t *testing.T, seed uint64, f Framing) {
	rng := rand.New(rand.NewPCG(seed, 7))
	bound := 1<<10 + rng.IntN(16<<10)
	w := testWindowWith(t, bound, f)
	var (
		stream []byte     // every frame pushed, from offset 0
		frames []winFrame // where each message's frame lies in stream; message i+1 is frames[i]
		msgs   [][]byte
		out    bool   // the owner of the socket holds what lend handed out
		lent   []byte // what it handed out
		saved  []byte
		from   int64
		handed int64 // the furthest offset lend handed out: no peer acknowledges a byte beyond it
	)
	size := func() int {
		switch rng.IntN(10) {
		case 0:
			return rng.IntN(bound) // large for the bound: wraps and regrows
		case 1:
			return 0
		default:
			return rng.IntN(200)
		}
	}
	for step := range 400 {
		switch op := rng.IntN(10); {
		case op < 5: // push, as the engine does: only what fits
			n := size()
			if !w.fits(n) {
				continue
			}
			m := make([]byte, n)
			for i := range m {
				m[i] = byte(rng.Uint32())
			}
			seq := w.push(m)
			if seq != uint64(len(msgs)+1) {
				t.Fatalf("step %d: push numbered %d, want %d", step, seq, len(msgs)+1)
			}
			var at int
			before := len(stream)
			stream, at = frameTo(w.framing, stream, m)
			frames = append(frames, winFrame{int64(at), int64(len(stream))})
			msgs = append(msgs, m)
			if w.end != int64(len(stream)) {
				t.Fatalf("step %d: stream ends at %d, want %d (frame from %d)", step, w.end, len(stream), before)
			}
		case op == 5 && rng.IntN(2) == 0: // a BufferedWriter's run of frames, in one copy, when it fits
			var run []byte
			var spans []span
			var ms [][]byte
			for range 1 + rng.IntN(5) {
				m := make([]byte, rng.IntN(200))
				for i := range m {
					m[i] = byte(rng.Uint32())
				}
				run, spans = appendFrame(w.framing, run, spans, m)
				ms = append(ms, m)
			}
			if !w.fitsRun(len(run), len(spans)) {
				continue
			}
			if seq := w.pushRun(run, spans); seq != uint64(len(msgs)+len(ms)) {
				t.Fatalf("step %d: pushRun numbered its last %d, want %d", step, seq, len(msgs)+len(ms))
			}
			base := int64(len(stream))
			stream = append(stream, run...)
			for _, s := range spans {
				frames = append(frames, winFrame{base + int64(s.at), base + int64(s.end)})
			}
			msgs = append(msgs, ms...)
			if w.end != int64(len(stream)) {
				t.Fatalf("step %d: stream ends at %d after a run, want %d", step, w.end, len(stream))
			}
		case op < 7: // the owner of the socket takes, or gives back, what is unsent
			if !out {
				out = true
				lent, from = w.lend()
				handed = max(handed, from+int64(len(lent)))
				if from != w.sent || !bytes.Equal(lent, stream[from:from+int64(len(lent))]) {
					t.Fatalf("step %d: lend handed out %d bytes at %d that are not the stream's", step, len(lent), from)
				}
				if len(lent) == 0 && w.unsent() > 0 {
					t.Fatalf("step %d: lend handed out nothing with %d bytes unsent", step, w.unsent())
				}
				saved = bytes.Clone(lent)
				continue
			}
			if !bytes.Equal(lent, saved) {
				t.Fatalf("step %d: the lent bytes changed under their owner", step)
			}
			w.unlend()
			w.sentTo(from + int64(rng.IntN(len(lent)+1)))
			out = false
		case op < 9: // acknowledgements, of messages a socket was handed
			n := 0 // of the pending messages, how many were handed out
			for w.acked+uint64(n) < uint64(len(frames)) && frames[w.acked+uint64(n)].end <= handed {
				n++
			}
			if n > 0 {
				w.ackUpTo(w.acked + 1 + uint64(rng.IntN(n)))
			}
		case rng.IntN(4) == 0 && !out: // a new socket
			w.replay()
		case rng.IntN(8) == 0: // the window fails
			failed := w.failAll()
			first := len(msgs) - len(failed)
			for i, m := range failed {
				if !bytes.Equal(m, msgs[first+i]) {
					t.Fatalf("step %d: failAll's message %d is not message %d", step, i, first+i+1)
				}
			}
		}
		for seq := w.acked + 1; seq <= w.last(); seq++ {
			if !bytes.Equal(w.payload(seq), msgs[seq-1]) {
				t.Fatalf("step %d: payload(%d) is not message %d", step, seq, seq)
			}
		}
		if w.pending() > 1 && w.held() > bound {
			t.Fatalf("step %d: %d messages hold %d bytes, past the bound %d", step, w.pending(), w.held(), bound)
		}
		if len(w.ring) > 2*bound+maxHeaderLen {
			t.Fatalf("step %d: ring of %d bytes for a bound of %d", step, len(w.ring), bound)
		}
		if w.pending() > 0 && w.frames[w.k].end != frames[w.acked].end {
			t.Fatalf("step %d: the first unsettled frame ends at %d, want %d", step, w.frames[w.k].end, frames[w.acked].end)
		}
	}
}

// TestWindowWrapsWithoutCopying checks the point of the ring: frames that
// are acknowledged as they stream are written round and round the same
// memory, never moved.
func TestWindowWrapsWithoutCopying(t *testing.T) {
	w := testWindow(t, 64<<10)
	msg := make([]byte, 110)
	for range 200 { // grow to what this stream needs
		w.push(msg)
	}
	w.ackUpTo(w.last())
	mem, wraps := &w.ring[0], 0
	for i := range 20000 {
		w.push(msg)
		if w.wrap != noWrap && w.frames[len(w.frames)-1].at-w.wrap < int64(maxHeaderLen) {
			wraps++ // this frame went to the ring's start
		}
		b, from := w.lend()
		w.unlend()
		w.sentTo(from + int64(len(b)))
		if i%100 == 99 {
			w.ackUpTo(w.last() - 50) // acknowledgements lag behind
		}
		if &w.ring[0] != mem {
			t.Fatalf("frame %d: the window moved its frames to a new ring", i)
		}
	}
	if wraps == 0 {
		t.Fatal("the frames never wrapped round the ring")
	}
}

// TestWindowWrapBoundary checks where the ring's start takes the next
// frame: when the room the frame asks for (its payload, the longest header
// and the trailer) fits before the oldest byte held, and not when it is
// one byte short, in which case the window moves to a new ring.
func TestWindowWrapBoundary(t *testing.T) {
	for _, short := range []bool{false, true} {
		w := testWindowWith(t, 1<<20, Fixed8)
		w.ring = make([]byte, 1000)
		a, b := bytes.Repeat([]byte{'a'}, 480), bytes.Repeat([]byte{'b'}, 480)
		w.push(a) // a frame of 488 bytes at 0
		w.push(b) // and one at 488
		w.ackUpTo(1)
		// The next frame does not fit before the ring's end; the room it
		// asks for is 488 bytes, as many as lie before b, or one more.
		n := 488 - maxHeaderLen
		if short {
			n++
		}
		c := bytes.Repeat([]byte{'c'}, n)
		mem := &w.ring[0]
		w.push(c)
		if moved := &w.ring[0] != mem; moved != short {
			t.Errorf("room short by a byte %v: moved to a new ring %v", short, moved)
		}
		if !short && w.wrap == noWrap {
			t.Error("the frame did not go to the ring's start")
		}
		if !bytes.Equal(w.payload(2), b) || !bytes.Equal(w.payload(3), c) {
			t.Errorf("room short by a byte %v: the payloads changed", short)
		}
	}
}

// TestWindowGrowsWhileLent checks that frames the peer settled while their
// bytes are still lent, which hold the ring past the bound until the owner
// of the socket gives them back, do not make every append move the ring.
func TestWindowGrowsWhileLent(t *testing.T) {
	const bound = 8 << 10
	w := testWindow(t, bound)
	msg := make([]byte, 100)
	for w.fits(len(msg)) {
		w.push(msg)
	}
	w.lend()
	w.ackUpTo(w.last()) // over an earlier socket, say: the bytes stay lent
	moves := 0
	for w.fits(len(msg)) {
		mem := &w.ring[0]
		w.push(msg)
		if &w.ring[0] != mem {
			moves++
		}
	}
	pushed := w.pending()
	if moves > 8 {
		t.Errorf("%d appends while the settled bytes were lent moved the ring %d times", pushed, moves)
	}
	t.Logf("%d appends while the settled bytes were lent moved the ring %d times", pushed, moves)
	w.unlend()
	if w.head != w.start {
		t.Errorf("after unlend the ring holds the stream from %d, want %d", w.head, w.start)
	}
}
