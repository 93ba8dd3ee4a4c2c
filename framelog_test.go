package buffstreams

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// logModel is what a frameLog should say: the end of every frame written,
// and the kernel's view of how much of the stream is acknowledged.
type logModel struct {
	ends     []uint64
	payloads []int
	acked    uint64 // what the kernel says when asked
	asked    int    // times it was asked
}

// write adds a frame of payload bytes and wire bytes to l and the model.
func (m *logModel) write(l *frameLog, wire, payload int) {
	end := uint64(wire)
	if n := len(m.ends); n > 0 {
		end += m.ends[n-1]
	}
	m.ends = append(m.ends, end)
	m.payloads = append(m.payloads, payload)
	l.record(end, payload, func() (uint64, bool) { m.asked++; return m.acked, true })
}

// unacked counts the frames that end after acked, and their payload bytes.
func (m *logModel) unacked(acked uint64) (frames int, payload uint64) {
	for i, e := range m.ends {
		if e > acked {
			frames++
			payload += uint64(m.payloads[i])
		}
	}
	return frames, payload
}

// TestFrameLogUnacked writes frames of random sizes while the kernel
// acknowledges at random, behind by up to a few thousand frames, and checks
// that the log counts exactly the frames, and payload bytes, beyond any
// point at or after the last acknowledgement it was told of.
func TestFrameLogUnacked(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var l frameLog
	var m logModel
	for i := range 50_000 {
		payload := rng.IntN(300)
		m.write(&l, payload+1+rng.IntN(4), payload)
		if rng.IntN(100) == 0 && len(m.ends) > 1 {
			// The kernel acknowledges up to somewhere in the last few
			// thousand frames, or in the middle of a frame.
			k := max(len(m.ends)-1-rng.IntN(3000), 0)
			m.acked = max(m.acked, m.ends[k]-uint64(rng.IntN(2)))
		}
		if i%997 != 0 {
			continue
		}
		for _, a := range []uint64{m.acked, m.acked + uint64(rng.IntN(500)), m.ends[len(m.ends)-1]} {
			a = min(a, m.ends[len(m.ends)-1])
			f, p := l.unackedAfter(a)
			wf, wp := m.unacked(a)
			if f != wf || p != wp {
				t.Fatalf("after %d frames, acknowledged to %d: log says %d frames (%d bytes) unacknowledged, want %d (%d bytes)", i+1, a, f, p, wf, wp)
			}
		}
	}
	if len(l.recs) > 8192 {
		t.Errorf("ring of %d records for at most 3,100 frames unacknowledged", len(l.recs))
	}
	t.Logf("%d frames, %d questions to the kernel, ring of %d records", len(m.ends), m.asked, len(l.recs))
}

// TestFrameLogRuns writes runs of frames of one size, which share a
// record, while the kernel acknowledges at random points, some within a
// run and some within a frame, and checks the counts against the model at
// every point of the last frames.
func TestFrameLogRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var l frameLog
	var m logModel
	for len(m.ends) < 200_000 {
		payload := 100 + rng.IntN(3)
		for range 1 + rng.IntN(2000) {
			m.write(&l, payload+3, payload)
		}
		if len(m.ends) > 1 {
			k := max(len(m.ends)-1-rng.IntN(5000), 0)
			m.acked = max(m.acked, m.ends[k]-uint64(rng.IntN(2)))
		}
		last := m.ends[len(m.ends)-1]
		for _, a := range []uint64{m.acked, m.acked + uint64(rng.IntN(1000)), last - uint64(rng.IntN(300)), last} {
			a = max(min(a, last), m.acked)
			f, p := l.unackedAfter(a)
			wf, wp := m.unacked(a)
			if f != wf || p != wp {
				t.Fatalf("after %d frames, acknowledged to %d: log says %d frames (%d bytes) unacknowledged, want %d (%d bytes)", len(m.ends), a, f, p, wf, wp)
			}
		}
	}
	if len(l.recs) > 1024 {
		t.Errorf("ring of %d records for runs of up to 2,000 frames", len(l.recs))
	}
	t.Logf("%d frames, %d questions to the kernel, ring of %d records", len(m.ends), m.asked, len(l.recs))
}

// TestFrameLogKeepsUp checks that a peer that keeps up costs one question
// to the kernel per ring of frames and a ring of the smallest size.
func TestFrameLogKeepsUp(t *testing.T) {
	var l frameLog
	var m logModel
	const frames = 100_000
	for range frames {
		m.write(&l, 113, 110)
		m.acked = m.ends[len(m.ends)-1] // acknowledged before the next write
	}
	if len(l.recs) != minFrameLog {
		t.Errorf("ring of %d records, want %d", len(l.recs), minFrameLog)
	}
	if want := frames / (minFrameLog - 1); m.asked > want {
		t.Errorf("%d questions to the kernel for %d frames, want at most %d", m.asked, frames, want)
	}
	if f, _ := l.unackedAfter(m.acked); f != 0 {
		t.Errorf("%d frames unacknowledged, want 0", f)
	}
}

// TestFrameLogBounded writes more frames than the largest ring holds to a
// peer that acknowledges nothing: the ring stops growing, and the count
// errs toward failed, never toward written.
func TestFrameLogBounded(t *testing.T) {
	var l frameLog
	var m logModel
	const frames = maxFrameLog + 5000
	for i := range frames {
		m.write(&l, 10+i%7, 7+i%7)
	}
	if len(l.recs) != maxFrameLog {
		t.Errorf("ring of %d records, want the largest, %d", len(l.recs), maxFrameLog)
	}
	// Frames of one size share a record: 5000 more take one.
	for range 5000 {
		m.write(&l, 9, 6)
	}
	if len(l.recs) != maxFrameLog || l.n != maxFrameLog {
		t.Errorf("ring of %d records, %d used, after a run; want %d, all used", len(l.recs), l.n, maxFrameLog)
	}
	// Nothing acknowledged: every frame is counted, lost or recorded.
	f, p := l.unackedAfter(0)
	wf, wp := m.unacked(0)
	if f != wf || p != wp {
		t.Errorf("%d frames (%d bytes) unacknowledged, want %d (%d bytes)", f, p, wf, wp)
	}
	// Acknowledged within the lost frames: the count is at least right.
	a := m.ends[2000]
	f, _ = l.unackedAfter(a)
	if wf, _ = m.unacked(a); f < wf {
		t.Errorf("acknowledged to %d: %d frames counted, fewer than the %d unacknowledged", a, f, wf)
	}
	// Acknowledged within the records: exact again.
	a = m.ends[frames-100]
	f, p = l.unackedAfter(a)
	if wf, wp = m.unacked(a); f != wf || p != wp {
		t.Errorf("acknowledged to %d: %d frames (%d bytes), want %d (%d bytes)", a, f, p, wf, wp)
	}
	// Once the kernel says the lost frames are acknowledged, they no
	// longer count.
	m.acked = m.ends[frames-10]
	for range 2 * maxFrameLog {
		m.write(&l, 10, 7)
		m.acked = m.ends[len(m.ends)-1]
	}
	if l.lost != 0 {
		t.Errorf("%d frames still counted as lost after the kernel acknowledged them", l.lost)
	}
}

// TestFrameLogSpans checks that recording the frames of a run as the
// kernel takes it, in pieces that end anywhere, equal frames in a row
// together, leaves the log exactly as recording each frame on its own
// would, questions to the kernel included.
func TestFrameLogSpans(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 11))
		tlen := rng.IntN(2)
		sizes := []int{0, 1 + rng.IntN(200), 1 + rng.IntN(200), 3000}
		var spans []span
		for len(spans) < 20_000 {
			p := sizes[rng.IntN(len(sizes))]
			for range 1 + rng.IntN(40) {
				end := 0
				if n := len(spans); n > 0 {
					end = spans[n-1].end
				}
				h := 1 + rng.IntN(2)
				spans = append(spans, span{end + h, end + h + p + tlen})
			}
		}
		var a, b frameLog
		var asksA, asksB int
		// The kernel acknowledges all but the last few thousand bytes.
		askA := func() (uint64, bool) { asksA++; return a.end - min(a.end, 4000), true }
		askB := func() (uint64, bool) { asksB++; return b.end - min(b.end, 4000), true }
		// A run resumed on a new socket starts inside it.
		pos := 0
		if seed%2 == 1 {
			pos = spans[rng.IntN(100)].end - rng.IntN(2)
		}
		k := whole(spans, pos)
		kb := k
		base := uint64(0)
		total := spans[len(spans)-1].end
		for pos < total {
			n := min(1+rng.IntN(4000), total-pos)
			k = a.recordSpans(spans, k, pos+n, pos, base, tlen, askA)
			for ; kb < len(spans) && spans[kb].end <= pos+n; kb++ {
				s := spans[kb]
				b.record(base+uint64(s.end-pos), s.end-tlen-s.at, askB)
			}
			if k != kb {
				t.Fatalf("seed %d: recorded up to frame %d, want %d", seed, k, kb)
			}
			base += uint64(n)
			pos += n
		}
		if !reflect.DeepEqual(a, b) || asksA != asksB {
			t.Fatalf("seed %d: the log differs from one recorded frame by frame (%d records against %d, %d questions against %d)", seed, a.n, b.n, asksA, asksB)
		}
	}
}

// record records one frame of payload bytes that ends at stream offset
// end: the frame-by-frame recording that the tests hold recordSpans to.
func (l *frameLog) record(end uint64, payload int, acked func() (uint64, bool)) {
	l.recordRun(uint32(end-l.end), uint32(payload), 1, acked)
}
