package buffstreams_test

import (
	"context"
	"sync"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// The record types of the acknowledgement protocol, as docs/wire.md
// gives them.
const (
	recordAck       = 0x10
	recordHeartbeat = 0x13
)

// TestHeartbeatIdle leaves a connection with acknowledged delivery idle
// and counts, at a proxy between the ends, the heartbeats the listener
// sends: enough to keep the sender from declaring it silent, and at most
// one per interval (a third of HeartbeatTimeout).
func TestHeartbeatIdle(t *testing.T) {
	leakCheck(t)
	const timeout = 300 * time.Millisecond
	const interval = timeout / 3
	l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }, Acks: &bs.AckConfig{}})
	px := newProxy(t, l.Addr().String())
	c := dialAddr(t, px.addr(), bs.TCPConnConfig{Acks: &bs.AckConfig{HeartbeatTimeout: timeout}})
	waitAcked := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	waitAcked()
	// The listener wrote its last acknowledgement before Sync returned:
	// from now on, the connection is idle both ways.
	start, before := time.Now(), px.seen(recordHeartbeat)
	const want = 14 // about 1.4 s, almost five timeouts
	eventually(t, "the listener's heartbeats", func() bool { return px.seen(recordHeartbeat)-before >= want })
	elapsed := time.Since(start)
	got := px.seen(recordHeartbeat) - before
	t.Logf("%d heartbeats in %v idle (interval %v)", got, elapsed.Round(time.Millisecond), interval)
	// Heartbeat k leaves no earlier than k intervals after the last
	// acknowledgement, which came before start.
	if least := time.Duration(got-1) * interval * 95 / 100; elapsed < least {
		t.Errorf("%d heartbeats in %v: more than one per %v", got, elapsed, interval)
	}
	if st := c.Stats(); st.SilentPeers != 0 || st.Reconnects != 0 {
		t.Fatalf("%d silent peers, %d reconnects on an idle connection whose listener is there", st.SilentPeers, st.Reconnects)
	}
	// The connection still works, and the heartbeats did not count as
	// acknowledgements of anything.
	if _, err := c.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	waitAcked()
	if st := c.Stats(); st.MessagesAcked != 2 || st.Reconnects != 0 {
		t.Fatalf("acked %d, %d reconnects; want 2 and none", st.MessagesAcked, st.Reconnects)
	}
}

// TestHeartbeatBusy streams messages on a connection with acknowledged
// delivery for several heartbeat intervals and checks, at a proxy between
// the ends, that the listener sends acknowledgements and not one
// heartbeat: on a busy connection they cost nothing.
func TestHeartbeatBusy(t *testing.T) {
	leakCheck(t)
	const timeout = 600 * time.Millisecond
	l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }, Acks: &bs.AckConfig{}})
	px := newProxy(t, l.Addr().String())
	for _, mode := range []struct {
		name string
		buf  int
	}{{"default", 0}, {"batching", 32 << 10}} {
		t.Run(mode.name, func(t *testing.T) {
			c := dialAddr(t, px.addr(), bs.TCPConnConfig{WriteBufferSize: mode.buf, Acks: &bs.AckConfig{HeartbeatTimeout: timeout}})
			beats, acks := px.seen(recordHeartbeat), px.seen(recordAck)
			start := time.Now()
			n := 0
			for ; time.Since(start) < 5*timeout/3 && n < 10_000_000; n++ { // five intervals
				if _, err := c.Write(numbered(0, n)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			beats, acks = px.seen(recordHeartbeat)-beats, px.seen(recordAck)-acks
			t.Logf("%d messages in %v: %d acknowledgements, %d heartbeats", n, time.Since(start).Round(time.Millisecond), acks, beats)
			if beats != 0 || acks == 0 {
				t.Fatalf("%d heartbeats and %d acknowledgements on a busy connection; want none and some", beats, acks)
			}
			c.Close()
		})
	}
}

// TestHeartbeatSlowCallback holds the listener's callback for several
// heartbeat timeouts: the heartbeats come from a timer of their own, so
// they keep coming while the read loop waits for the callback, and the
// sender does not take the listener for gone.
func TestHeartbeatSlowCallback(t *testing.T) {
	leakCheck(t)
	const timeout = 300 * time.Millisecond
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: func(p []byte) error {
		if string(p) == "slow" {
			close(entered)
			<-release
		}
		return nil
	}})
	t.Cleanup(free) // before the listener's Close, which waits for the callback
	px := newProxy(t, l.Addr().String())
	c := dialAddr(t, px.addr(), bs.TCPConnConfig{Acks: &bs.AckConfig{HeartbeatTimeout: timeout}})
	if _, err := c.Write([]byte("slow")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback was not called")
	}
	start, before := time.Now(), px.seen(recordHeartbeat)
	eventually(t, "heartbeats during the callback", func() bool { return px.seen(recordHeartbeat)-before >= 12 })
	held := time.Since(start)
	free()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	t.Logf("the callback held for %v, %d heartbeats meanwhile", held.Round(time.Millisecond), px.seen(recordHeartbeat)-before)
	if st.SilentPeers != 0 || st.Reconnects != 0 || st.MessagesAcked != 1 {
		t.Fatalf("%d silent peers, %d reconnects, %d acked; want 0, 0, 1", st.SilentPeers, st.Reconnects, st.MessagesAcked)
	}
}
