package buffstreams

// A frameLog records the most recent frames written on one socket, newest
// last, frames of one size in a row sharing a record, so that once it is
// known how much of the stream the peer's TCP acknowledged, it can tell
// which whole frames it did not. A frame is noted as the kernel takes it
// (see tally), never reconstructed from the bytes.
//
// The records sit in a ring that starts small and doubles, up to
// maxFrameLog records, only while the oldest record may still be
// unacknowledged; a record known to be acknowledged is overwritten. Asking
// the kernel how much is acknowledged costs a system call, so the log asks
// only when the ring is full and its oldest record is not already known to
// be acknowledged: at most once per ring's worth of records on a connection
// whose peer keeps up.
//
// When the ring is at its largest and its oldest record may still be
// unacknowledged, that record is dropped and its frames counted in lost.
// unackedAfter then counts every lost frame as unacknowledged if the
// acknowledged point lies before the records: the count errs toward
// failed, never toward written.
//
// A frameLog is not safe for concurrent use; tally guards it.
type frameLog struct {
	recs  []frameRec // the ring; its length is zero or a power of two
	head  int        // index of the oldest record
	n     int        // records held
	start uint64     // stream offset at which the oldest record's first frame begins
	end   uint64     // stream offset at which the newest record's last frame ends
	acked uint64     // stream offset up to which the peer's TCP is known to have acknowledged

	lost        int    // frames dropped from a full ring while possibly unacknowledged
	lostPayload uint64 // their payload bytes; the frames end at start
}

// A frameRec is a run of count consecutive frames of the same size: each
// frame's length on the wire, header and trailer included, and its
// payload's length. A stream of equal messages, the common case, takes one
// record however long it is, and recording a frame then costs a comparison
// and an increment. Both lengths fit: a payload is at most
// MaxMessageSizeLimit bytes.
type frameRec struct{ wire, payload, count uint32 }

const (
	// minFrameLog is the number of records a log holds at first.
	minFrameLog = 64
	// maxFrameLog is the most records a log holds: 768 KiB. Linux's
	// largest send buffer by default (4 MiB) holds fewer frames than
	// that unless they are under 64 bytes.
	maxFrameLog = 1 << 16
	// maxRun is the most frames one record counts.
	maxRun = 1 << 31
)

// recordSpans records, from spans[k] on, the frames of a run that end at
// or before run offset upto, and returns the index of the first frame it
// did not record. The spans' offsets count from the start of the run, of
// which offset pos is stream offset base. Equal frames in a row are
// recorded together: one comparison each, and one call per group.
func (l *frameLog) recordSpans(spans []span, k, upto, pos int, base uint64, tlen int, acked func() (uint64, bool)) int {
	for k < len(spans) && spans[k].end <= upto {
		s := spans[k]
		wire := base + uint64(s.end-pos) - l.end
		payload := s.end - tlen - s.at
		j := k + 1
		for j < len(spans) && spans[j].end <= upto && uint64(spans[j].end-spans[j-1].end) == wire && spans[j].end-tlen-spans[j].at == payload {
			j++
		}
		l.recordRun(uint32(wire), uint32(payload), uint32(j-k), acked)
		k = j
	}
	return k
}

// recordRun records count frames of wire bytes each, payload included,
// after the last one recorded.
func (l *frameLog) recordRun(wire, payload, count uint32, acked func() (uint64, bool)) {
	if l.n > 0 {
		r := &l.recs[(l.head+l.n-1)&(len(l.recs)-1)]
		if r.wire == wire && r.payload == payload && r.count <= maxRun-count {
			r.count += count
			l.end += uint64(wire) * uint64(count)
			return
		}
	} else {
		l.start = l.end
	}
	if l.n == len(l.recs) {
		l.prune(acked)
	}
	l.recs[(l.head+l.n)&(len(l.recs)-1)] = frameRec{wire, payload, count}
	l.n++
	l.end += uint64(wire) * uint64(count)
}

// prune frees a slot in the full ring: it drops the oldest record if its
// frames are acknowledged, and otherwise grows the ring or, at its largest,
// drops the record's frames as lost.
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
	if l.dropAcked() {
		return
	}
	if len(l.recs) < maxFrameLog {
		recs := make([]frameRec, 2*len(l.recs))
		k := copy(recs, l.recs[l.head:])
		copy(recs[k:], l.recs[:l.head])
		l.recs, l.head = recs, 0
		return
	}
	r := l.recs[l.head]
	l.lost += int(r.count)
	l.lostPayload += uint64(r.payload) * uint64(r.count)
	l.start += uint64(r.wire) * uint64(r.count)
	l.head = (l.head + 1) & (len(l.recs) - 1)
	l.n--
}

// dropAcked removes from the oldest record the frames known to be
// acknowledged, and the record itself if that is all of them, which it
// reports. The ring is not empty.
func (l *frameLog) dropAcked() bool {
	r := &l.recs[l.head]
	if l.acked <= l.start || r.wire == 0 {
		return false
	}
	k := min((l.acked-l.start)/uint64(r.wire), uint64(r.count))
	if k == 0 {
		return false
	}
	// Every frame before these, lost ones included, is acknowledged too.
	l.lost, l.lostPayload = 0, 0
	l.start += k * uint64(r.wire)
	r.count -= uint32(k)
	if r.count > 0 {
		return false
	}
	l.head = (l.head + 1) & (len(l.recs) - 1)
	l.n--
	return true
}

// oldestAcked reports whether the oldest record's frames are all known to
// be acknowledged. The ring is not empty.
func (l *frameLog) oldestAcked() bool {
	r := l.recs[l.head]
	return l.start+uint64(r.wire)*uint64(r.count) <= l.acked
}

// unackedAfter returns how many of the frames recorded end after stream offset
// acked, and their payload bytes: the frames of which the peer's TCP did
// not acknowledge every byte.
func (l *frameLog) unackedAfter(acked uint64) (frames int, payload uint64) {
	e := l.end
	for i := l.n - 1; i >= 0 && e > acked; i-- {
		// The record's frames end at e, e-wire, e-2*wire and so on: those
		// that end after acked are the last ceil((e-acked)/wire).
		r := l.recs[(l.head+i)&(len(l.recs)-1)]
		k := uint64(r.count)
		if r.wire > 0 {
			k = min(k, (e-acked+uint64(r.wire)-1)/uint64(r.wire))
		}
		frames += int(k)
		payload += uint64(r.payload) * k
		e -= uint64(r.wire) * uint64(r.count)
	}
	if e > acked && l.lost > 0 { // e is start: the records are exhausted
		frames += l.lost
		payload += l.lostPayload
	}
	return frames, payload
}
