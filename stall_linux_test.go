package buffstreams_test

import (
	"errors"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// partitioned returns a partition, a listener on its far side that logs
// what it receives, and a connection to it across the partition, with
// StallTimeout bound, whose OnWriteError logs in hooked.
func partitioned(t *testing.T, bound time.Duration) (p *partition, received, hooked *seqLog, c *bs.TCPConn) {
	t.Helper()
	p = newPartition(t)
	received, hooked = newSeqLog(), newSeqLog()
	l := apiServe(t, p.listen(), bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: received.callback})
	c = dialAddr(t, l.Addr().String(), bs.TCPConnConfig{Framing: bs.Fixed4, StallTimeout: bound,
		DialContext: p.a.dial, OnWriteError: hooked.hook})
	return p, received, hooked, c
}

// TestStallPartition streams messages between two network namespaces
// joined by a veth pair and takes the link down mid-stream, as a cable or
// a cloud network that fails. For good: the connection fails with
// ErrPeerSilent within StallTimeout, and the messages the kernel held
// unacknowledged are reported as failed, not written. For less than
// StallTimeout: nothing fails and every message arrives once.
func TestStallPartition(t *testing.T) {
	const size, frame = 110, 114 // Fixed4
	t.Run("down for good", func(t *testing.T) {
		const bound = time.Second
		p, received, hooked, c := partitioned(t, bound)
		var downAt time.Time
		var err error
		given := 0
		for deadline := time.Now().Add(30 * time.Second); given < 10_000_000 && time.Now().Before(deadline); {
			if downAt.IsZero() && received.n.Load() >= 1000 {
				p.down()
				downAt = time.Now()
			}
			_, err = c.Write(seqMsg(uint32(given), size))
			given++
			if err != nil {
				break
			}
		}
		took := time.Since(downAt)
		if downAt.IsZero() || !errors.Is(err, bs.ErrPeerSilent) || !isTimeout(err) {
			t.Fatalf("%d messages given, link down: %v; the last Write: %v, want ErrPeerSilent", given, !downAt.IsZero(), err)
		}
		within(t, "noticing the partition", took, bound*7/8, bound+3*time.Second)
		if err := c.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		st := c.Stats()
		// The listener's host acknowledged what its process reads, and
		// it reads all it has. It may also have had bytes whose
		// acknowledgement the partition swallowed: they arrive, though
		// failed.
		eventually(t, "every message written", func() bool { return uint64(received.n.Load()) >= st.MessagesWritten })
		extra := received.n.Load() - int64(st.MessagesWritten)
		t.Logf("noticed %v after the link went down; %d given: %d written, %d failed (%d unacknowledged); %d received, %d of them failed",
			took.Round(time.Millisecond), given, st.MessagesWritten, st.WriteErrors, st.Unacknowledged, received.n.Load(), extra)
		if st.PeerCloses != 0 {
			t.Errorf("%d peer closes counted: a silent peer did not close", st.PeerCloses)
		}
		if st.MessagesWritten+st.WriteErrors != uint64(given) || st.WriteErrors != uint64(hooked.n.Load()) {
			t.Errorf("%d given: stats %+v, OnWriteError called %d times", given, st, hooked.n.Load())
		}
		if st.Unacknowledged == 0 || st.Unacknowledged != uint64(hooked.unacked.Load()) {
			t.Errorf("%d messages unacknowledged, %d passed to OnWriteError as such; want as many, and some", st.Unacknowledged, hooked.unacked.Load())
		}
		if extra*frame > 64<<10 {
			t.Errorf("%d messages received beyond those written: more than a window's acknowledgements lost", extra)
		}
	})
	t.Run("down for good, a message every 10 ms", func(t *testing.T) {
		// No Write blocks: the kernel takes every frame into the send
		// buffer, where it stays unacknowledged. The kernel's bound
		// fails the connection all the same, and the peer watch tells
		// the next Write.
		const bound = time.Second
		p, received, _, c := partitioned(t, bound)
		var downAt time.Time
		var err error
		given := 0
		var longest time.Duration
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); given++ {
			if downAt.IsZero() && received.n.Load() >= 50 {
				p.down()
				downAt = time.Now()
			}
			start := time.Now()
			if _, err = c.Write(seqMsg(uint32(given), size)); err != nil {
				given++
				break
			}
			longest = max(longest, time.Since(start))
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(downAt)
		if downAt.IsZero() || !errors.Is(err, bs.ErrPeerSilent) {
			t.Fatalf("%d messages given, link down: %v; the last Write: %v, want ErrPeerSilent", given, !downAt.IsZero(), err)
		}
		within(t, "noticing the partition", took, bound*7/8, bound+3*time.Second)
		c.Close()
		st := c.Stats()
		t.Logf("noticed %v after the link went down, the longest Write took %v; %d given: %d written, %d failed (%d unacknowledged); %d received",
			took.Round(time.Millisecond), longest.Round(time.Microsecond), given, st.MessagesWritten, st.WriteErrors, st.Unacknowledged, received.n.Load())
		if st.MessagesWritten+st.WriteErrors != uint64(given) || st.Unacknowledged == 0 || st.PeerCloses != 0 {
			t.Errorf("%d given: stats %+v", given, st)
		}
		eventually(t, "every message written", func() bool { return uint64(received.n.Load()) >= st.MessagesWritten })
	})
	t.Run("down then up", func(t *testing.T) {
		const bound, outage, n = 3 * time.Second, 500 * time.Millisecond, 50_000
		p, received, hooked, c := partitioned(t, bound)
		var downAt time.Time
		mended := make(chan struct{})
		for i := range n {
			if downAt.IsZero() && received.n.Load() >= 1000 {
				p.down()
				downAt = time.Now()
				time.AfterFunc(outage, func() { p.up(); close(mended) })
			}
			if _, err := c.Write(seqMsg(uint32(i), size)); err != nil {
				t.Fatalf("Write %d, %v after the link went down for %v: %v", i, time.Since(downAt).Round(time.Millisecond), outage, err)
			}
		}
		if downAt.IsZero() {
			t.Fatalf("%d messages written, %d received: the link never went down", n, received.n.Load())
		}
		<-mended
		if err := c.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		eventually(t, "every message", func() bool { return received.n.Load() >= n })
		checkAccounting(t, c, n, hooked, received)
		if got, st := received.n.Load(), c.Stats(); got != n || st.MessagesWritten != n {
			t.Errorf("%d messages received, %d written; want %d", got, st.MessagesWritten, n)
		}
		t.Logf("all %d messages delivered once across an outage of %v, %v after it began", n, outage, time.Since(downAt).Round(time.Millisecond))
	})
}
