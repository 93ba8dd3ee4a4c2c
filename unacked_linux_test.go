package buffstreams_test

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// unackedMsgs is how many 1 KiB messages the unacknowledged-frame tests
// write to a peer that does not read: more than its socket takes at first
// (128 KiB by Linux's default), less than the two sockets hold (the
// sender's grows to 4 MiB), so that every Write returns.
const unackedMsgs = 512

// TestUnackedClose writes more than a peer's socket takes, and closes. If
// the peer reads, Close waits for its TCP to acknowledge everything, and
// every message arrives. If it never reads, Close gives up after
// WriteTimeout, resets the connection, and reports as failed exactly the
// messages whose frames the peer's TCP had not acknowledged: the peer then
// reads the ones counted as written, and no more.
func TestUnackedClose(t *testing.T) {
	const size, frame = 1020, 1024 // Fixed4
	for _, reads := range []bool{true, false} {
		name := map[bool]string{true: "peer reads", false: "peer never reads"}[reads]
		t.Run(name, func(t *testing.T) {
			rl := newRawListener(t)
			hooked := newSeqLog()
			c := dialAddr(t, rl.Addr().String(), bs.TCPConnConfig{Framing: bs.Fixed4,
				WriteTimeout: 300 * time.Millisecond, OnWriteError: hooked.hook})
			nc := rl.accept(t)
			read := make(chan int, 1)
			drain := func() {
				got, err := io.Copy(io.Discard, nc)
				switch {
				case reads && err != nil:
					t.Errorf("the peer's read: %v", err)
				case !reads && !errors.Is(err, syscall.ECONNRESET):
					t.Errorf("the peer's read: %v, want a reset", err)
				}
				read <- int(got)
			}
			if reads {
				go drain()
			}
			for i := range unackedMsgs {
				if _, err := c.Write(seqMsg(uint32(i), size)); err != nil {
					t.Fatalf("Write %d: %v", i, err)
				}
			}
			start := time.Now()
			err := c.Close()
			took := time.Since(start)
			if !reads {
				go drain()
			}
			got := <-read
			st := c.Stats()
			t.Logf("Close took %v; %d given: %d written, %d failed (%d unacknowledged); the peer read %d frames",
				took.Round(time.Millisecond), unackedMsgs, st.MessagesWritten, st.WriteErrors, st.Unacknowledged, got/frame)
			checkAccounting(t, c, unackedMsgs, hooked, newSeqLog())
			if got/frame != int(st.MessagesWritten) {
				t.Errorf("the peer read %d frames, %d were counted as written", got/frame, st.MessagesWritten)
			}
			if reads {
				if err != nil || st.MessagesWritten != unackedMsgs {
					t.Errorf("Close = %v, %d of %d written; want nil, all", err, st.MessagesWritten, unackedMsgs)
				}
				return
			}
			if !errors.Is(err, bs.ErrUnacknowledged) {
				t.Errorf("Close = %v, want ErrUnacknowledged", err)
			}
			within(t, "Close", took, 300*time.Millisecond, 5*time.Second)
			if st.Unacknowledged == 0 || st.Unacknowledged != st.WriteErrors || st.Unacknowledged != uint64(hooked.unacked.Load()) {
				t.Errorf("stats %+v, %d passed to OnWriteError as unacknowledged; want some, all of the failures", st, hooked.unacked.Load())
			}
		})
	}
}

// TestUnackedPeerReset writes more than a peer that reads nothing takes,
// and the peer resets the connection. The next Write fails with
// ErrPeerClosed, and the messages its TCP never acknowledged fail with it.
// The ones its kernel acknowledged count as written, though its process
// never read them: what the count cannot know.
func TestUnackedPeerReset(t *testing.T) {
	rl := newRawListener(t)
	hooked := newSeqLog()
	c := dialAddr(t, rl.Addr().String(), bs.TCPConnConfig{Framing: bs.Fixed4, OnWriteError: hooked.hook})
	nc := rl.accept(t)
	for i := range unackedMsgs {
		if _, err := c.Write(seqMsg(uint32(i), 1020)); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
	nc.(*net.TCPConn).SetLinger(0)
	nc.Close()
	eventually(t, "the reset noticed", func() bool { return c.Stats().PeerCloses == 1 })
	if _, err := c.Write(seqMsg(unackedMsgs, 1020)); !errors.Is(err, bs.ErrPeerClosed) {
		t.Fatalf("Write after the peer's reset: %v, want ErrPeerClosed", err)
	}
	st := c.Stats()
	t.Logf("%d given: %d written, %d failed (%d unacknowledged)", unackedMsgs+1, st.MessagesWritten, st.WriteErrors, st.Unacknowledged)
	checkAccounting(t, c, unackedMsgs+1, hooked, newSeqLog())
	if st.Unacknowledged == 0 || st.MessagesWritten == 0 {
		t.Errorf("stats %+v: want messages written (in the peer's kernel) and unacknowledged (in ours)", st)
	}
	_, errs := hooked.snapshot()
	for _, e := range errs {
		if !errors.Is(e, bs.ErrPeerClosed) {
			t.Errorf("OnWriteError got %v, want ErrPeerClosed", e)
		}
	}
}
