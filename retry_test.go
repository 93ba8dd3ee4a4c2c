package buffstreams_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestRetryServerRestart closes the server in the middle of a stream and
// starts a new one on the same port: a client with a Retry policy
// reconnects and carries on, and every message is accounted for, none twice.
func TestRetryServerRestart(t *testing.T) {
	for _, mode := range []struct {
		name    string
		bufSize int
		writers int  // goroutines writing at once
		batch   int  // messages per WriteBatch; 0 for Write
		noRetry bool // no Retry policy: Writes fail until the new server is up
	}{
		{"default mode", 0, 1, 0, false},
		{"batching mode", 16 << 10, 1, 0, false},
		{"default mode, 8 writers", 0, 8, 0, false},
		{"default mode, WriteBatch, 4 writers", 0, 4, 7, false},
		{"batching mode, WriteBatch, 4 writers", 16 << 10, 4, 7, false},
		{"default mode, 8 writers, no Retry", 0, 8, 0, true},
		{"batching mode, WriteBatch, 4 writers, no Retry", 16 << 10, 4, 7, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			leakCheck(t)
			const n = 3000
			received, hooked := newSeqLog(), newSeqLog()
			l1 := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: received.callback})
			addr := l1.Addr().String()
			retry := &bs.RetryPolicy{MaxAttempts: 200, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxWait: 20 * time.Second}
			if mode.noRetry {
				retry = nil
			}
			c := dial(t, l1, bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: mode.bufSize, OnWriteError: hooked.hook, Retry: retry})
			restart, up := make(chan struct{}), make(chan struct{})
			var writeErrs atomic.Int64
			var next atomic.Int64    // the next sequence number to give
			var waiting atomic.Int64 // writers that wait for the new server
			var wg sync.WaitGroup
			for range mode.writers {
				wg.Go(func() {
					for {
						k := max(mode.batch, 1)
						first := next.Add(int64(k)) - int64(k)
						if first >= n {
							return
						}
						k = min(k, n-int(first))
						if first <= n/3 && n/3 < first+int64(k) {
							close(restart)
						}
						if first >= n/2 {
							waiting.Add(1)
							<-up // the second half goes to the new server
						}
						if mode.batch == 0 {
							if _, err := c.Write(seqMsg(uint32(first), 64)); err != nil {
								writeErrs.Add(1)
							}
						} else {
							batch := make([][]byte, k)
							for j := range batch {
								batch[j] = seqMsg(uint32(first)+uint32(j), 64)
							}
							if m, err := c.WriteBatch(batch); err != nil {
								writeErrs.Add(int64(k - m))
							}
						}
						if first%10 < int64(k) {
							time.Sleep(time.Millisecond)
						}
					}
				})
			}
			<-restart
			l1.Close()
			// The server stays down until the client has seen it gone (a
			// failed write or dial), or until every writer has written its
			// part of the first half and waits.
			eventually(t, "the client to see the server gone", func() bool {
				st := c.Stats()
				return hooked.n.Load() > 0 || st.WriteErrors > 0 || st.DialFailures > 0 || waiting.Load() == int64(mode.writers)
			})
			before := received.n.Load()
			l2 := listen(t, bs.TCPListenerConfig{Address: addr, Framing: bs.Fixed4, Callback: received.callback})
			close(up)
			wg.Wait()
			if err := c.Flush(); err != nil {
				t.Logf("Flush: %v", err)
			}
			c.Close()
			eventually(t, "the second server done", func() bool { st := l2.Stats(); return st.Accepted >= 1 && st.Active == 0 })
			st := c.Stats()
			if mode.noRetry && hooked.n.Load() == 0 {
				t.Errorf("no message failed while the server was down")
			}
			if st.Reconnects < 1 || received.n.Load() == before {
				t.Fatalf("stats %+v: the client did not reconnect to the new server", st)
			}
			if writeErrs.Load() > hooked.n.Load() {
				t.Errorf("%d Writes failed but OnWriteError was called %d times", writeErrs.Load(), hooked.n.Load())
			}
			checkAccounting(t, c, n, hooked, received)
			t.Logf("%d messages: %d received (%d by the new server), %d passed to OnWriteError, %d written but lost in the dead server's buffers; %d reconnects, %d failed dials",
				n, received.n.Load(), received.n.Load()-before, hooked.n.Load(), int64(st.MessagesWritten)-received.n.Load(), st.Reconnects, st.DialFailures)
		})
	}
}

// TestRetryGivesUp closes the server and checks that a Retry policy gives up
// with ErrReconnectFailed after MaxAttempts dials, or when MaxWait would be
// passed, with the failed dials counted and the message passed to
// OnWriteError.
func TestRetryGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name        string
		policy      bs.RetryPolicy
		dials       func(uint64) bool
		lo, hi      time.Duration
		description string
	}{
		{"MaxAttempts", bs.RetryPolicy{MaxAttempts: 4, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxWait: 20 * time.Second},
			func(n uint64) bool { return n == 4 }, 70 * time.Millisecond, 5 * time.Second, "4 dials"},
		{"MaxWait", bs.RetryPolicy{MaxAttempts: 10_000, InitialBackoff: 40 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxWait: 400 * time.Millisecond},
			func(n uint64) bool { return n >= 3 && n <= 20 }, 0, 400*time.Millisecond + 2*time.Second, "about 10 dials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			hooked := newSeqLog()
			l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }})
			policy := tc.policy
			c := dial(t, l, bs.TCPConnConfig{Retry: &policy, OnWriteError: hooked.hook})
			if _, err := c.Write(seqMsg(0, 8)); err != nil {
				t.Fatal(err)
			}
			l.Close()
			var err error
			var took time.Duration
			given := 1
			for deadline := time.Now().Add(20 * time.Second); err == nil && time.Now().Before(deadline); {
				start := time.Now()
				_, err = c.Write(seqMsg(uint32(given), 8))
				took = time.Since(start)
				given++
				time.Sleep(time.Millisecond)
			}
			if !errors.Is(err, bs.ErrReconnectFailed) {
				t.Fatalf("Write to a closed server: %v, want ErrReconnectFailed", err)
			}
			st := c.Stats()
			if !tc.dials(st.DialFailures) {
				t.Errorf("DialFailures = %d, want %s", st.DialFailures, tc.description)
			}
			within(t, "the Write that gave up", took, tc.lo, tc.hi)
			c.Close()
			checkAccounting(t, c, given, hooked, newSeqLog())
			t.Logf("gave up after %v and %d dials: %v", took.Round(time.Millisecond), st.DialFailures, err)
		})
	}
}
