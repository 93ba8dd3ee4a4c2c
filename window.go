package buffstreams

import "math"

// This file holds the replay window of acknowledged delivery: the frames
// of the messages written but not yet settled, kept so that a new socket
// can be given them again. The engine that uses it is in writer_ack.go.

// A window holds the frames of a session's unsettled messages, in order.
// The frames are numbered implicitly, the first of the session 1: message
// acked+1 is frames[k], acked+2 is frames[k+1], and so on.
//
// Every byte has a fixed place in the session's stream, its offset,
// counted from the session's first byte. The window records each frame's
// offsets as it appends it, and never changes them. So the owner of the
// socket, which writes from a slice the window lent it, reports how far it
// got (sentTo) in offsets that still hold when it comes back, whatever was
// acknowledged or appended meanwhile.
//
// The frames lie in ring, a buffer used round and round: a frame goes
// after the last one if it fits before ring's end, and otherwise at ring's
// start, before the oldest byte held, so that no frame is split and
// settling a frame frees its bytes without moving any other. Only when
// neither place has room does the window copy what it holds into a new
// ring (regrow): it grows, as the bound allows, or it gathers the two
// pieces of a wrapped stream into one. A stream of frames whose
// acknowledgements keep up is written and settled without a copy.
//
// A window is not safe for concurrent use: the engine's mu guards it. The
// one exception is the memory lend hands out, which its owner reads
// without the lock until unlend: the window never writes to it meanwhile
// (see lendState).
type window struct {
	framing Framing
	tlen    int // length of the framing's trailer
	bound   int // AckConfig.Window, which held may reach

	// The stream from offset head to end lies in ring: from position
	// hpos on and, once the frames wrapped round to ring's start, the
	// offsets from wrap on at position 0. head is start, or the first
	// byte lent if that is earlier: the bytes before it are free.
	ring []byte
	head int64
	hpos int
	wrap int64 // the offset of the frame at ring's start after a wrap; noWrap when the stream held is in one piece
	end  int64 // offset just past the last frame

	start    int64      // offset of the first unsettled frame
	sent     int64      // the current socket has had the stream up to this offset
	frames   []winFrame // frames[k:] are the unsettled frames, in order
	k        int
	acked    uint64    // messages settled (acknowledged or failed), from the first
	reached  uint64    // the last message whose frame reached the kernel at least once
	lent     lendState // whose memory the owner of the socket writes from
	lentFrom int64     // while lent is lentBuf: the offset the lent bytes start at
}

// noWrap is window.wrap while the stream held lies in one piece.
const noWrap = math.MaxInt64

// A winFrame is where one frame lies in the session's stream: its payload
// starts at at and the frame ends at end.
type winFrame struct{ at, end int64 }

// spanCost is what the window counts for the bookkeeping of one message,
// the size of a winFrame.
const spanCost = 16

// A lendState says whose memory the owner of the socket is writing from.
// lend moves it to lentBuf and unlend back to lentNone; replacing ring
// while it is lent moves it to lentOther.
type lendState uint8

const (
	lentNone  lendState = iota // nobody
	lentBuf                    // ring's memory, from lentFrom on: the window keeps those bytes until unlend
	lentOther                  // memory ring no longer uses
)

func newWindow(f Framing, bound int) window {
	return window{framing: f, tlen: len(f.trailer()), bound: bound, wrap: noWrap}
}

// pending returns how many messages are unsettled.
func (w *window) pending() int { return len(w.frames) - w.k }

// last returns the sequence number of the last message appended.
func (w *window) last() uint64 { return w.acked + uint64(w.pending()) }

// held returns what counts against the bound: the frames of the unsettled
// messages and their bookkeeping.
func (w *window) held() int { return int(w.end-w.start) + spanCost*w.pending() }

// unsent returns how many bytes the current socket has not had.
func (w *window) unsent() int { return int(w.end - w.sent) }

// fits reports whether a message of n bytes fits within the bound. An
// empty window takes a message of any size.
func (w *window) fits(n int) bool {
	h := w.held()
	return h == 0 || h+maxHeaderLen+n+w.tlen+spanCost <= w.bound
}

// pos returns the position in ring of stream offset off, which is
// between head and end.
func (w *window) pos(off int64) int {
	if off >= w.wrap {
		return int(off - w.wrap)
	}
	return w.hpos + int(off-w.head)
}

// push appends the frame of msg, recording where it lies, and returns its
// sequence number. The caller checked fits (or overrides the bound).
func (w *window) push(msg []byte) uint64 {
	need := maxHeaderLen + len(msg) + w.tlen
	p, ok := w.room(need)
	if !ok {
		w.regrow(need)
		p = w.pos(w.end)
	}
	if len(w.frames) == cap(w.frames) {
		w.moreFrames()
	}
	b, at := frameTo(w.framing, w.ring[p:p:p+need], msg)
	w.frames = append(w.frames, winFrame{w.end + int64(at), w.end + int64(len(b))})
	w.end += int64(len(b))
	return w.last()
}

// fitsRun reports whether a run of k frames, n bytes in all, fits within
// the bound. Unlike fits, it makes no exception for an empty window: a run
// that does not fit is pushed a message at a time.
func (w *window) fitsRun(n, k int) bool {
	return w.held()+n+spanCost*k <= w.bound
}

// pushRun appends run, frames of the window's framing that lie at spans
// (offsets from run's start), in one copy, and returns the sequence number
// of the last. The caller checked fitsRun.
func (w *window) pushRun(run []byte, spans []span) uint64 {
	p, ok := w.room(len(run))
	if !ok {
		w.regrow(len(run))
		p = w.pos(w.end)
	}
	for cap(w.frames)-len(w.frames) < len(spans) {
		w.moreFrames()
	}
	copy(w.ring[p:], run)
	for _, s := range spans {
		w.frames = append(w.frames, winFrame{w.end + int64(s.at), w.end + int64(s.end)})
	}
	w.end += int64(len(run))
	return w.last()
}

// room returns the position at which need bytes can be written as the
// next frame without touching a byte held, wrapping round to ring's start
// if they do not fit before its end, or reports that there is none.
func (w *window) room(need int) (int, bool) {
	if w.head == w.end {
		// Nothing is held: start again at ring's start, where the
		// frames are likelier to be in the caches.
		w.hpos, w.wrap = 0, noWrap
		return 0, need <= len(w.ring)
	}
	if w.wrap != noWrap {
		t := int(w.end - w.wrap)
		return t, t+need <= w.hpos
	}
	if t := w.hpos + int(w.end-w.head); t+need <= len(w.ring) {
		return t, true
	}
	if need <= w.hpos {
		w.wrap = w.end
		return 0, true
	}
	return 0, false
}

// regrow moves what the window holds into a new ring with room for need
// more bytes after it, in one piece: larger, doubling but never beyond
// what the bound requires, so that a window that never drains holds no
// more memory than its bound and one frame (twice its bound while settled
// frames are still lent: see lendState); or, when the ring is as large
// as that already and a wrapped stream left no piece room enough, of the
// same size. The old ring is left to the owner of the socket if lent.
func (w *window) regrow(need int) {
	held := int(w.end - w.head)
	// The frames may take what the bookkeeping leaves of the bound.
	limit := w.bound - spanCost*w.pending() + maxHeaderLen
	n := min(max(2*len(w.ring), 4096), limit)
	if n < held+need {
		// Settled bytes still lent hold the ring past the bound, up to
		// twice the bound: grow by a quarter at least, within that, so
		// that appending stays cheap until the owner of the socket gives
		// them back.
		n = max(held+need, min(len(w.ring)+len(w.ring)/4, 2*w.bound+maxHeaderLen))
	}
	n = max(n, len(w.ring))
	r := make([]byte, n)
	if w.wrap != noWrap {
		k := copy(r, w.ring[w.hpos:w.hpos+int(w.wrap-w.head)])
		copy(r[k:], w.ring[:w.end-w.wrap])
	} else {
		copy(r, w.ring[w.hpos:w.hpos+held])
	}
	w.ring, w.hpos, w.wrap = r, 0, noWrap
	if w.lent == lentBuf {
		w.lent = lentOther
	}
}

// moreFrames makes room in frames for one more: it moves the unsettled
// ones to the front if at least half are settled, so that each frame is
// moved at most once on average, and otherwise grows it.
func (w *window) moreFrames() {
	if w.k > 0 && w.k >= len(w.frames)/2 {
		w.frames = w.frames[:copy(w.frames, w.frames[w.k:])]
		w.k = 0
		return
	}
	f := make([]winFrame, len(w.frames), max(64, cap(w.frames)+cap(w.frames)/4))
	copy(f, w.frames)
	w.frames = f
}

// advance frees the bytes before start, keeping those lent.
func (w *window) advance() {
	h := w.start
	if w.lent == lentBuf {
		h = min(h, w.lentFrom)
	}
	if h <= w.head {
		return
	}
	if h >= w.wrap {
		w.hpos, w.wrap = int(h-w.wrap), noWrap
	} else {
		w.hpos += int(h - w.head)
	}
	w.head = h
}

// payload returns the payload of unsettled message seq, valid until it is
// settled.
func (w *window) payload(seq uint64) []byte {
	f := w.frames[w.k+int(seq-w.acked)-1]
	p := w.pos(f.at)
	return w.ring[p : p+int(f.end-int64(w.tlen)-f.at)]
}

// lend hands the owner of the socket what the socket has not had, up to
// ring's end if the stream wraps there, and the offset it starts at. The
// window does not write to those bytes until unlend.
func (w *window) lend() ([]byte, int64) {
	to := w.end
	if w.sent < w.wrap {
		to = min(to, w.wrap)
	}
	p := w.pos(w.sent)
	w.lent, w.lentFrom = lentBuf, w.sent
	return w.ring[p : p+int(to-w.sent)], w.sent
}

// unlend takes back what lend handed out.
func (w *window) unlend() {
	w.lent = lentNone
	w.advance()
}

// sentTo records that the current socket has had the stream up to offset
// off, and returns how many messages, and payload bytes, thereby reached
// the kernel for the first time.
func (w *window) sentTo(off int64) (int, uint64) {
	w.sent = max(w.sent, off)
	return w.markReached(off)
}

// markReached records that every frame ending at or before off reached
// the kernel, and returns how many messages, and payload bytes, did for
// the first time.
func (w *window) markReached(off int64) (int, uint64) {
	w.reached = max(w.reached, w.acked)
	n, nb := 0, uint64(0)
	for i := w.k + int(w.reached-w.acked); i < len(w.frames) && w.frames[i].end <= off; i++ {
		n++
		nb += uint64(w.frames[i].end - int64(w.tlen) - w.frames[i].at)
	}
	w.reached += uint64(n)
	return n, nb
}

// ackUpTo settles every message up to seq, which is at most last, and
// returns how many messages, and payload bytes, thereby count as having
// reached the kernel: an acknowledged frame was written, if not by this
// socket then by an earlier one.
func (w *window) ackUpTo(seq uint64) (int, uint64) {
	if seq <= w.acked {
		return 0, 0
	}
	i := w.k + int(seq-w.acked) - 1
	n, nb := w.markReached(w.frames[i].end)
	w.k, w.acked, w.start = i+1, seq, w.frames[i].end
	w.sent = max(w.sent, w.start)
	if w.pending() == 0 {
		w.frames, w.k = w.frames[:0], 0
	}
	w.advance()
	return n, nb
}

// replay makes the current socket, a new one, start from the first
// unsettled frame: the listener delivered everything before it.
func (w *window) replay() { w.sent = w.start }

// failAll settles every unsettled message as failed, emptying the window,
// and returns their payloads, which stay valid: the window does not reuse
// their memory. The stream goes on from the same offset.
func (w *window) failAll() [][]byte {
	var msgs [][]byte
	if n := w.pending(); n > 0 {
		msgs = make([][]byte, 0, n)
		for seq := w.acked + 1; seq <= w.last(); seq++ {
			msgs = append(msgs, w.payload(seq))
		}
	}
	w.acked = w.last()
	w.reached = max(w.reached, w.acked)
	if len(msgs) > 0 || w.lent == lentBuf {
		// The payloads returned, or the owner of the socket, still read
		// ring: start a new one.
		w.ring = nil
		if w.lent == lentBuf {
			w.lent = lentOther
		}
	}
	w.frames, w.k = w.frames[:0], 0
	w.head, w.hpos, w.wrap = w.end, 0, noWrap
	w.start, w.sent = w.end, w.end
	return msgs
}
