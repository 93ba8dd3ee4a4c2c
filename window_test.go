package buffstreams

import (
	"bytes"
	"fmt"
	"testing"
)

// testWindow returns a window of the given bound with the default framing.
func testWindow(t *testing.T, bound int) *window {
	t.Helper()
	wr, err := newWire(0, nil)
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
	if len(w.buf) != 0 || w.base != int64(len(want)) {
		t.Errorf("an empty window keeps %d bytes from offset %d, want none from %d", len(w.buf), w.base, len(want))
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
	if n, _ := w.sentTo(w.streamEnd()); n != 0 {
		t.Errorf("replaying counted %d messages again", n)
	}
}

// TestWindowLentStaysPut checks the window's promise to the owner of the
// socket: while it writes from what lend gave it, acknowledgements,
// compaction, appends and growth leave those bytes alone, and the offset
// it reports afterwards counts the right frames.
func TestWindowLentStaysPut(t *testing.T) {
	w := testWindow(t, 1<<20)
	for i := 1; i <= 8; i++ {
		w.push(msgN(i))
	}
	b, from := w.lend()
	saved := bytes.Clone(b)
	// Messages 1 to 6 are acknowledged (over an earlier socket, say),
	// and the window compacts twice and grows while b is out.
	w.ackUpTo(6)
	w.compact()
	if w.lent != lentOther {
		t.Fatalf("compacting a lent buffer left lendState %d", w.lent)
	}
	for i := 9; i <= 200; i++ {
		w.push(msgN(i))
	}
	w.ackUpTo(7)
	w.compact()
	w.growFor(64 << 10)
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
	if cap(w.buf) > 2*bound+maxHeaderLen+len(big) {
		t.Errorf("buffer of %d bytes for a bound of %d", cap(w.buf), bound)
	}
	if n == 0 {
		t.Error("the window took no message after it drained")
	}
}

// TestWindowSteadyStateAllocs checks that a window that has grown appends,
// lends, compacts and settles without allocating.
func TestWindowSteadyStateAllocs(t *testing.T) {
	w := testWindow(t, 1<<20)
	msg := make([]byte, 110)
	round := func() {
		for range 100 {
			w.push(msg)
		}
		_, from := w.lend()
		w.ackUpTo(w.acked + 50) // while lent: compaction goes to spare
		w.compact()
		w.unlend()
		w.sentTo(from + int64(w.unsent()))
		w.ackUpTo(w.last())
	}
	round()
	round()
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Errorf("%v allocations per round", n)
	}
}
