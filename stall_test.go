package buffstreams_test

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestStallFreeze writes through a proxy that stops forwarding mid-stream
// and keeps the connection open. The connection fails with ErrPeerSilent
// within StallTimeout of the freeze, not before; every message is written
// or failed; and where the kernel counts (Linux, the kernel's bound), the
// messages written are exactly those whose frames the proxy's TCP took:
// the ones it forwarded and the ones its socket holds unread. The rest,
// which the client's kernel held, failed.
func TestStallFreeze(t *testing.T) {
	const bound = time.Second
	const size, frame = 110, 114 // Fixed4
	for _, tc := range []struct {
		name   string
		buffer int
		kernel bool // the kernel bounds the stall, where it can
	}{
		{"default mode", 0, true},
		{"batching mode", 64 << 10, true},
		{"default mode, write deadline", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.kernel {
				t.Cleanup(bs.WithoutKernelBound())
			}
			counted := tc.kernel && runtime.GOOS == "linux"
			received := newSeqLog()
			l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: received.callback})
			p := newProxy(t, l.Addr().String())
			hooked := newSeqLog()
			var failedAt atomic.Int64
			c := dialAddr(t, p.addr(), bs.TCPConnConfig{Framing: bs.Fixed4, StallTimeout: bound, WriteBufferSize: tc.buffer,
				OnWriteError: func(m []byte, err error) {
					failedAt.CompareAndSwap(0, time.Now().UnixNano())
					hooked.hook(m, err)
				}})

			var frozen []*link
			var frozeAt time.Time
			var err error
			given := 0
			for deadline := time.Now().Add(30 * time.Second); given < 10_000_000 && time.Now().Before(deadline); {
				if frozen == nil && received.n.Load() >= 1000 {
					frozen, frozeAt = p.freeze(), time.Now()
				}
				_, err = c.Write(seqMsg(uint32(given), size))
				given++
				if err != nil || failedAt.Load() != 0 {
					break
				}
			}
			if frozen == nil || failedAt.Load() == 0 {
				t.Fatalf("%d messages given, %d received, the proxy frozen: %v; no failure within 30 s", given, received.n.Load(), frozen != nil)
			}
			took := time.Unix(0, failedAt.Load()).Sub(frozeAt)
			if tc.buffer == 0 && !errors.Is(err, bs.ErrPeerSilent) {
				t.Fatalf("the Write that failed: %v, want ErrPeerSilent", err)
			}
			_, errs := hooked.snapshot()
			for _, e := range errs {
				if !errors.Is(e, bs.ErrPeerSilent) || !isTimeout(e) {
					t.Fatalf("OnWriteError got %v, want ErrPeerSilent, a timeout", e)
				}
			}
			within(t, "noticing the frozen proxy", took, bound*7/8, bound+3*time.Second)
			if err := c.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}

			st := c.Stats()
			if len(frozen) != 1 {
				t.Fatalf("%d connections through the proxy at the freeze, want 1", len(frozen))
			}
			fwd, held := int(frozen[0].forwarded.Load()), frozen[0].held()
			// Frames the proxy's TCP took but did not forward count as
			// written: the peer's kernel acknowledged them. A batching
			// connection writes what Close found buffered on a new
			// connection, which the proxy forwards.
			acked := (fwd + held) / frame
			want := int(st.MessagesWritten) - acked + fwd/frame
			eventually(t, "the messages the proxy forwarded", func() bool { return received.n.Load() >= int64(want) })
			t.Logf("noticed %v after the freeze; %d given: %d written, %d failed (%d unacknowledged); the proxy forwarded %d frames and held %d bytes unread",
				took.Round(time.Millisecond), given, st.MessagesWritten, st.WriteErrors, st.Unacknowledged, fwd/frame, held)
			checkAccounting(t, c, given, hooked, received)
			if st.Unacknowledged != uint64(hooked.unacked.Load()) {
				t.Errorf("%d messages unacknowledged, %d passed to OnWriteError as such", st.Unacknowledged, hooked.unacked.Load())
			}
			if !counted {
				return
			}
			if got := received.n.Load(); got != int64(want) {
				t.Errorf("%d messages received, want %d: every message written, less those the proxy holds", got, want)
			}
			if st.Unacknowledged == 0 {
				t.Error("no message unacknowledged: the client's kernel held none when the connection failed")
			}
			if st.PeerCloses != 0 {
				t.Errorf("%d peer closes counted: the proxy did not close", st.PeerCloses)
			}
		})
	}
}

// TestStallSlowReader writes to a reader that reads slowly, for three
// times StallTimeout: the writer waits for it, and the connection is not
// cut off, with the kernel's bound or the write deadline. The kernel's
// bound keeps a connection whose Write waits longer than StallTimeout, as
// long as the reader goes on acknowledging. The write deadline sees only
// the kernel take bytes, which a blocked writer is let do once half its
// send buffer is acknowledged: that case runs with a send buffer the
// reader drains within StallTimeout.
func TestStallSlowReader(t *testing.T) {
	const bound = time.Second
	const frame = 1024 // Fixed4
	for _, tc := range []struct {
		name   string
		kernel bool
	}{{"kernel", true}, {"write deadline", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kernel && runtime.GOOS != "linux" {
				t.Skip("the kernel's bound is Linux's TCP_USER_TIMEOUT; elsewhere the write deadline keeps it")
			}
			cfg := bs.TCPConnConfig{Framing: bs.Fixed4, StallTimeout: bound}
			if !tc.kernel {
				t.Cleanup(bs.WithoutKernelBound())
				cfg.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					var d net.Dialer
					nc, err := d.DialContext(ctx, network, addr)
					if err == nil {
						nc.(*net.TCPConn).SetWriteBuffer(128 << 10)
					}
					return nc, err
				}
			}
			rl := newRawListener(t)
			c := dialAddr(t, rl.Addr().String(), cfg)
			nc := rl.accept(t)
			var read atomic.Int64
			fast := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 64<<10)
				chunk := 16 << 10
				for {
					select {
					case <-fast:
						chunk = len(buf)
					default:
						time.Sleep(20 * time.Millisecond) // 800 KiB/s
					}
					k, err := nc.Read(buf[:chunk])
					read.Add(int64(k))
					if err != nil {
						done <- err
						return
					}
				}
			}()
			msg := make([]byte, frame-4)
			given := 0
			var longest time.Duration
			for start := time.Now(); time.Since(start) < 3*bound; given++ {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					close(fast)
					t.Fatalf("after %v, Write %d to a reader that reads slowly: %v", time.Since(start).Round(time.Millisecond), given, err)
				}
				longest = max(longest, time.Since(t0))
			}
			close(fast)
			if err := c.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}
			if err := <-done; err != io.EOF {
				t.Fatalf("the reader: %v, want io.EOF", err)
			}
			if got := read.Load(); got != int64(given*frame) {
				t.Errorf("the reader read %d bytes, want %d", got, given*frame)
			}
			if st := c.Stats(); st.MessagesWritten != uint64(given) || st.WriteErrors != 0 {
				t.Errorf("%d given; stats %+v", given, st)
			}
			if longest < 20*time.Millisecond {
				t.Errorf("the longest Write took %v: the writer never waited for the reader", longest)
			}
			t.Logf("%d KiB written in %v; the longest Write waited %v", given, 3*bound, longest.Round(time.Millisecond))
		})
	}
}

// TestStallPipe checks the write deadline's bound on a connection that is
// not TCP: a Write into a net.Pipe nobody reads fails with ErrPeerSilent
// within StallTimeout, and the message goes to OnWriteError.
func TestStallPipe(t *testing.T) {
	const bound = 300 * time.Millisecond
	a, b := net.Pipe()
	defer b.Close()
	hooked := newSeqLog()
	c := apiWrap(t, a, &bs.TCPConnConfig{Framing: bs.Fixed4, StallTimeout: bound, OnWriteError: hooked.hook})
	start := time.Now()
	_, err := c.Write(seqMsg(7, 10))
	if !errors.Is(err, bs.ErrPeerSilent) || !isTimeout(err) {
		t.Fatalf("Write into a pipe nobody reads: %v, want ErrPeerSilent, a timeout", err)
	}
	within(t, "the Write", time.Since(start), bound*7/8, bound+3*time.Second)
	if failed, _ := hooked.snapshot(); hooked.n.Load() != 1 || failed[7] != 1 {
		t.Errorf("OnWriteError got %v, want message 7", failed)
	}
}
