package buffstreams

// A frameLog records the most recent frames written on one socket, newest
// last, so that once it is known how much of the stream the peer's TCP
// acknowledged, it can tell which whole frames it did not. A record is
// noted as the kernel takes each frame (see tally), never reconstructed
// from the bytes.
//
// The records sit in a ring that starts small and doubles, up to
// maxFrameLog records, only while the oldest record may still be
// unacknowledged; a record known to be acknowledged is overwritten. Asking
// the kernel how much is acknowledged costs a system call, so the log asks
// only when the ring is full and its oldest record is not already known to
// be acknowledged: once per ring's worth of frames on a connection whose
// peer keeps up.
//
// When the ring is at its largest and its oldest record may still be
// unacknowledged, that record is dropped and counted in lost. unacked then
// counts every lost frame as unacknowledged if the acknowledged point lies
// before the records: the count errs toward failed, never toward written.
//
// A frameLog is not safe for concurrent use; tally guards it.
type frameLog struct {
	recs  []frameRec // the ring; its length is zero or a power of two
	head  int        // index of the oldest record
	n     int        // records held
	start uint64     // stream offset at which the oldest record's frame begins
	end   uint64     // stream offset at which the newest record's frame ends
	acked uint64     // stream offset up to which the peer's TCP is known to have acknowledged

	lost        int    // frames dropped from a full ring while possibly unacknowledged
	lostPayload uint64 // their payload bytes; the frames end at start
}

// A frameRec is one frame: its length on the wire, header and trailer
// included, and its payload's length. Both fit: a payload is at most
// MaxMessageSizeLimit bytes.
type frameRec struct{ wire, payload uint32 }

const (
	// minFrameLog is the number of records a log holds at first.
	minFrameLog = 64
	// maxFrameLog is the most records a log holds: 512 KiB. Linux's
	// largest send buffer by default (4 MiB) holds fewer frames than
	// that unless they are under 64 bytes.
	maxFrameLog = 1 << 16
)

// record records a frame of payload bytes that ends at stream offset end. acked
// asks the kernel up to which stream offset the peer's TCP has acknowledged;
// it is called only when the ring is full and its oldest record is not
// known to be acknowledged, and reports false if the kernel cannot tell.
func (l *frameLog) record(end uint64, payload int, acked func() (uint64, bool)) {
	if l.n == 0 {
		l.start = l.end
	}
	wire := uint32(end - l.end)
	if l.n == len(l.recs) {
		l.prune(acked)
	}
	l.recs[(l.head+l.n)&(len(l.recs)-1)] = frameRec{wire, uint32(payload)}
	l.n++
	l.end = end
}

// prune frees a slot in the full ring: it overwrites the oldest record
// if that is acknowledged, and otherwise grows the ring or, at its largest,
// drops the record as lost.
func (l *frameLog) prune(acked func() (uint64, bool)) {
	if len(l.recs) == 0 {
		l.recs = make([]frameRec, minFrameLog)
		return
	}
	if !l.oldestAcked() {
		if a, ok := acked(); ok && a > l.acked {
			l.acked = a
		}
	}
	if !l.oldestAcked() && len(l.recs) < maxFrameLog {
		recs := make([]frameRec, 2*len(l.recs))
		k := copy(recs, l.recs[l.head:])
		copy(recs[k:], l.recs[:l.head])
		l.recs, l.head = recs, 0
		return
	}
	r := l.recs[l.head]
	if l.oldestAcked() {
		// Every frame before it, lost ones included, is acknowledged too.
		l.lost, l.lostPayload = 0, 0
	} else {
		l.lost++
		l.lostPayload += uint64(r.payload)
	}
	l.start += uint64(r.wire)
	l.head = (l.head + 1) & (len(l.recs) - 1)
	l.n--
}

// oldestAcked reports whether the oldest record is known to be
// acknowledged. The ring is not empty.
func (l *frameLog) oldestAcked() bool {
	return l.start+uint64(l.recs[l.head].wire) <= l.acked
}

// unackedAfter returns how many of the frames recorded end after stream offset
// acked, and their payload bytes: the frames of which the peer's TCP did
// not acknowledge every byte.
func (l *frameLog) unackedAfter(acked uint64) (frames int, payload uint64) {
	e := l.end
	for i := l.n - 1; i >= 0 && e > acked; i-- {
		r := l.recs[(l.head+i)&(len(l.recs)-1)]
		frames++
		payload += uint64(r.payload)
		e -= uint64(r.wire)
	}
	if e > acked && l.lost > 0 { // e is start: the records are exhausted
		frames += l.lost
		payload += l.lostPayload
	}
	return frames, payload
}
