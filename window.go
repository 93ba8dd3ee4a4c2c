package buffstreams

// This file holds the replay window of acknowledged delivery: the frames
// of the messages written but not yet settled, kept so that a new socket
// can be given them again. The engine that uses it is in writer_ack.go.

// A window holds the frames of a session's unsettled messages, in order.
// The frames are numbered implicitly, the first of the session 1: message
// acked+1 is frames[k], acked+2 is frames[k+1], and so on.
//
// Every byte has a fixed place in the session's stream, its offset,
// counted from the session's first byte. The window records each frame's
// offsets as it appends it, and compaction moves bytes within the buffer
// but never changes an offset. So the owner of the socket, which writes
// from a slice the window lent it, reports how far it got (sentTo) in
// offsets that still hold when it comes back, whatever was acknowledged,
// compacted or appended meanwhile.
//
// A window is not safe for concurrent use: the engine's mu guards it. The
// one exception is the memory lend hands out, which its owner reads
// without the lock until unlend: the window never writes to it meanwhile
// (see lendState).
type window struct {
	framing Framing
	tlen    int // length of the framing's trailer
	bound   int // AckConfig.Window, which held may reach

	buf     []byte     // the stream from offset base on; the frames before start are settled
	base    int64      // offset of buf[0]
	start   int64      // offset of the first unsettled frame
	sent    int64      // the current socket has had the stream up to this offset
	frames  []winFrame // frames[k:] are the unsettled frames, in order
	k       int
	acked   uint64 // messages settled (acknowledged or failed), from the first
	reached uint64 // the last message whose frame reached the kernel at least once

	spare []byte    // the other buffer, to compact into while buf is lent
	lent  lendState // whose memory the owner of the socket writes from
}

// A winFrame is where one frame lies in the session's stream: its payload
// starts at at and the frame ends at end.
type winFrame struct{ at, end int64 }

// spanCost is what the window counts for the bookkeeping of one message,
// the size of a winFrame.
const spanCost = 16

// A lendState says whose memory the owner of the socket is writing from,
// and so how the window may compact. lend moves it to lentBuf and unlend
// back to lentNone; compacting or growing a lent buf moves it to
// lentOther.
type lendState uint8

const (
	lentNone  lendState = iota // nobody: compaction moves the frames within buf
	lentBuf                    // buf's memory: compaction moves the frames to spare, and swaps
	lentOther                  // memory buf no longer uses: compaction moves the frames within buf
)

func newWindow(f Framing, bound int) window {
	return window{framing: f, tlen: len(f.trailer()), bound: bound}
}

// streamEnd returns the offset just past the last frame.
func (w *window) streamEnd() int64 { return w.base + int64(len(w.buf)) }

// pending returns how many messages are unsettled.
func (w *window) pending() int { return len(w.frames) - w.k }

// last returns the sequence number of the last message appended.
func (w *window) last() uint64 { return w.acked + uint64(w.pending()) }

// held returns what counts against the bound: the frames of the unsettled
// messages and their bookkeeping.
func (w *window) held() int { return int(w.streamEnd()-w.start) + spanCost*w.pending() }

// unsent returns how many bytes the current socket has not had.
func (w *window) unsent() int { return int(w.streamEnd() - w.sent) }

// fits reports whether a message of n bytes fits within the bound. An
// empty window takes a message of any size.
func (w *window) fits(n int) bool {
	h := w.held()
	return h == 0 || h+maxHeaderLen+n+w.tlen+spanCost <= w.bound
}

// push appends the frame of msg, recording where it lies, and returns its
// sequence number. The caller checked fits (or overrides the bound).
func (w *window) push(msg []byte) uint64 {
	need := maxHeaderLen + len(msg) + w.tlen
	if len(w.buf)+need > cap(w.buf) || len(w.frames) == cap(w.frames) {
		w.growFor(need)
	}
	var at int
	w.buf, at = frameTo(w.framing, w.buf, msg)
	w.frames = append(w.frames, winFrame{w.base + int64(at), w.streamEnd()})
	return w.last()
}

// payload returns the payload of unsettled message seq, valid until it is
// settled.
func (w *window) payload(seq uint64) []byte {
	f := w.frames[w.k+int(seq-w.acked)-1]
	return w.buf[f.at-w.base : f.end-w.base-int64(w.tlen)]
}

// lend hands the owner of the socket what the socket has not had, and the
// offset it starts at. The window does not write to its memory until
// unlend.
func (w *window) lend() ([]byte, int64) {
	w.lent = lentBuf
	return w.buf[w.sent-w.base:], w.sent
}

// unlend takes back what lend handed out, and compacts if more than half
// of buf is settled.
func (w *window) unlend() {
	w.lent = lentNone
	if int(w.start-w.base) > len(w.buf)/2 {
		w.compact()
	}
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
	if w.pending() == 0 && w.lent != lentBuf {
		w.compact() // moves nothing
	}
	return n, nb
}

// replay makes the current socket, a new one, start from the first
// unsettled frame: the listener delivered everything before it.
func (w *window) replay() { w.sent = w.start }

// compact moves the unsettled frames to the front of buf, or, while buf is
// lent, to the front of spare, which becomes buf. Offsets do not change.
func (w *window) compact() {
	h := int(w.start - w.base)
	if h == 0 {
		return
	}
	if w.lent == lentBuf {
		if cap(w.spare) < cap(w.buf) {
			w.spare = make([]byte, 0, cap(w.buf)) // the two buffers keep the same size
		}
		moved := append(w.spare[:0], w.buf[h:]...)
		w.spare, w.buf = w.buf[:0], moved
		w.lent = lentOther
	} else {
		w.buf = w.buf[:copy(w.buf, w.buf[h:])]
	}
	w.frames = w.frames[:copy(w.frames, w.frames[w.k:])]
	w.k = 0
	w.base = w.start
}

// growFor makes room for need more bytes and one more frame: it compacts,
// and if that is not enough, reallocates, doubling but never beyond what
// the bound requires, so that a window that never drains holds no more
// memory than its bound and one frame.
func (w *window) growFor(need int) {
	if w.start > w.base {
		w.compact()
	}
	if len(w.frames) == cap(w.frames) {
		f := make([]winFrame, len(w.frames), max(64, cap(w.frames)+cap(w.frames)/4))
		copy(f, w.frames)
		w.frames = f
	}
	if len(w.buf)+need <= cap(w.buf) {
		return
	}
	// The frames may take what the bookkeeping leaves of the bound.
	// Beyond that (settled frames not yet compacted away while buf is
	// lent), grow by a quarter at least, so that appending stays cheap.
	limit := w.bound - spanCost*w.pending() + maxHeaderLen
	n := min(max(2*cap(w.buf), 4096), limit)
	if n < len(w.buf)+need {
		n = max(len(w.buf)+need, cap(w.buf)+cap(w.buf)/4)
	}
	b := make([]byte, len(w.buf), n)
	copy(b, w.buf)
	w.buf = b
	w.spare = nil // too small now; the next compaction while lent makes one of this size
	if w.lent == lentBuf {
		w.lent = lentOther
	}
}

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
	end := w.streamEnd()
	w.acked = w.last()
	w.reached = max(w.reached, w.acked)
	if len(msgs) > 0 || w.lent == lentBuf {
		// The payloads returned, or the owner of the socket, still read
		// buf: start a new one.
		w.buf = nil
		if w.lent == lentBuf {
			w.lent = lentOther
		}
	}
	w.buf, w.frames, w.k = w.buf[:0], w.frames[:0], 0
	w.base, w.start, w.sent = end, end, end
	return msgs
}
