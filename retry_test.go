package buffstreams_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
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

// quickGiveUp is a policy that gives up after three dials, well within its
// MaxWait.
func quickGiveUp() *bs.RetryPolicy {
	return &bs.RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 30 * time.Millisecond, MaxWait: 2 * time.Second}
}

// isDone reports whether ch is closed.
func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestRetryFailedState closes the server for good under a client whose
// Retry policy then gives up, in every write mode: Write returns
// ErrReconnectFailed within the policy's MaxWait plus a second, and then at
// once, without dialing, as do WriteBatch and Flush; Err and Done report
// it; every message is accounted for once; Reopen, once a server is back,
// makes the connection usable again, and Close ends it.
func TestRetryFailedState(t *testing.T) {
	for _, mode := range []struct {
		name    string
		bufSize int
		acks    bool
	}{
		{"default mode", 0, false},
		{"batching mode", 16 << 10, false},
		{"acknowledged, default mode", 0, true},
		{"acknowledged, batching mode", 16 << 10, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			leakCheck(t)
			received, hooked := newSeqLog(), newSeqLog()
			lcfg := bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: received.callback}
			ccfg := bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: mode.bufSize, OnWriteError: hooked.hook, Retry: quickGiveUp()}
			if mode.acks {
				lcfg.Acks, ccfg.Acks = &bs.AckConfig{AckEvery: 1}, &bs.AckConfig{}
			}
			l := listen(t, lcfg)
			addr := l.Addr().String()
			c := dial(t, l, ccfg)
			done := c.Done()
			given := 0
			write := func() error {
				_, err := c.Write(seqMsg(uint32(given), 32))
				given++
				return err
			}
			if err := write(); err != nil {
				t.Fatal(err)
			}
			if err := c.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := c.Err(); err != nil || isDone(done) {
				t.Fatalf("a working connection: Err() = %v, Done closed = %v", err, isDone(done))
			}

			l.Close()
			closed := time.Now()
			var err error
			for tries := 0; !errors.Is(err, bs.ErrReconnectFailed) && tries < 10_000 && time.Since(closed) < 10*time.Second; tries++ {
				if err = write(); err == nil {
					err = c.Flush()
				}
			}
			if !errors.Is(err, bs.ErrReconnectFailed) {
				t.Fatalf("writing to a server gone for good: %v, want ErrReconnectFailed", err)
			}
			within(t, "giving up", time.Since(closed), 0, 2*time.Second+time.Second)

			if err := c.Err(); !errors.Is(err, bs.ErrReconnectFailed) {
				t.Errorf("Err() = %v, want ErrReconnectFailed", err)
			}
			if !isDone(done) || !isDone(c.Done()) || c.Done() != done {
				t.Errorf("Done is not the same closed channel once the policy gave up")
			}
			var dialErr *net.OpError
			if !errors.As(c.Err(), &dialErr) {
				t.Errorf("Err() = %v does not wrap the last dial error", c.Err())
			}
			dials := c.Stats().DialFailures
			start := time.Now()
			for range 20 {
				if err := write(); !errors.Is(err, bs.ErrReconnectFailed) {
					t.Fatalf("Write once failed: %v, want ErrReconnectFailed", err)
				}
			}
			batch := [][]byte{seqMsg(uint32(given), 8), seqMsg(uint32(given+1), 8), seqMsg(uint32(given+2), 8)}
			given += len(batch)
			if n, err := c.WriteBatch(batch); n != 0 || !errors.Is(err, bs.ErrReconnectFailed) {
				t.Errorf("WriteBatch once failed = %d, %v; want 0, ErrReconnectFailed", n, err)
			}
			if err := c.Flush(); !errors.Is(err, bs.ErrReconnectFailed) {
				t.Errorf("Flush once failed: %v, want ErrReconnectFailed", err)
			}
			within(t, "20 Writes, a WriteBatch and a Flush once failed", time.Since(start), 0, time.Second)
			if d := c.Stats().DialFailures; d != dials {
				t.Errorf("the failed connection dialed again: DialFailures %d, then %d", dials, d)
			}
			eventually(t, "every message written or failed", func() bool {
				st := c.Stats()
				if mode.acks {
					return int(st.MessagesAcked)+int(hooked.n.Load()) == given
				}
				return int(st.MessagesWritten)+int(hooked.n.Load()) == given
			})
			if mode.acks {
				if st := c.Stats(); st.WriteErrors != uint64(hooked.n.Load()) {
					t.Errorf("WriteErrors = %d, OnWriteError called %d times", st.WriteErrors, hooked.n.Load())
				}
				if failed, _ := hooked.snapshot(); len(failed) != int(hooked.n.Load()) {
					t.Errorf("a message reached OnWriteError twice")
				}
			} else {
				checkAccounting(t, c, given, hooked, received)
			}

			// A server again, and Reopen.
			received2 := newSeqLog()
			lcfg.Address, lcfg.Callback = addr, received2.callback
			listen(t, lcfg)
			if err := c.Reopen(); err != nil {
				t.Fatalf("Reopen: %v", err)
			}
			if err := c.Err(); err != nil {
				t.Errorf("Err() after Reopen = %v, want nil", err)
			}
			fresh := c.Done()
			if fresh == done || isDone(fresh) {
				t.Errorf("Done after Reopen is the old channel or closed")
			}
			if err := write(); err != nil {
				t.Fatalf("Write after Reopen: %v", err)
			}
			if err := c.Sync(context.Background()); err != nil {
				t.Fatalf("Sync after Reopen: %v", err)
			}
			eventually(t, "the message written after Reopen", func() bool { return received2.n.Load() == 1 })

			c.Close()
			if err := c.Err(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Err() after Close = %v, want net.ErrClosed", err)
			}
			if !isDone(fresh) {
				t.Errorf("Close did not close Done's channel")
			}
		})
	}
}

// TestRetryWithoutPolicyNeverFails checks that a connection without a Retry
// policy keeps today's behaviour: a server gone for good fails each
// operation with its own dial, and Err stays nil.
func TestRetryWithoutPolicyNeverFails(t *testing.T) {
	leakCheck(t)
	l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }})
	c := dial(t, l, bs.TCPConnConfig{})
	l.Close()
	eventually(t, "a failed dial", func() bool {
		c.Write([]byte("x"))
		return c.Stats().DialFailures > 0
	})
	for range 3 {
		before := c.Stats().DialFailures
		if _, err := c.Write([]byte("x")); err == nil || errors.Is(err, bs.ErrReconnectFailed) {
			t.Fatalf("Write to a dead server without a policy: %v", err)
		}
		if after := c.Stats().DialFailures; after != before+1 {
			t.Errorf("DialFailures %d, then %d: want one dial per Write", before, after)
		}
	}
	if err := c.Err(); err != nil || isDone(c.Done()) {
		t.Errorf("without a policy: Err() = %v, Done closed = %v; want nil, open", err, isDone(c.Done()))
	}
}

// countingDialer dials TCP and counts its attempts.
type countingDialer struct{ n atomic.Int64 }

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// TestRetryFirstDial checks that a RetryPolicy covers DialTCP's first dial:
// DialTCP waits for a server that starts late; with no server ever, it gives
// up within the policy's bounds with ErrReconnectFailed; DialTCPContext
// stops when its context ends; and with FirstDialOnce the first dial is
// tried once.
func TestRetryFirstDial(t *testing.T) {
	t.Run("late server", func(t *testing.T) {
		leakCheck(t)
		for setup := 1; ; setup++ {
			if retryFirstDialLate(t) {
				return
			}
			if setup == 5 {
				t.Fatal("the port was taken each of 5 times")
			}
			t.Logf("the port was taken before the server opened it; setting up again")
		}
	})
	t.Run("no server", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			policy bs.RetryPolicy
			dials  func(int64) bool
			bound  time.Duration
		}{
			{"MaxAttempts", bs.RetryPolicy{MaxAttempts: 4, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxWait: 5 * time.Second}, func(n int64) bool { return n == 4 }, 5 * time.Second},
			{"MaxWait", bs.RetryPolicy{MaxAttempts: 10_000, InitialBackoff: 40 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxWait: 300 * time.Millisecond}, func(n int64) bool { return n >= 2 && n <= 15 }, 300 * time.Millisecond},
		} {
			t.Run(tc.name, func(t *testing.T) {
				leakCheck(t)
				var d countingDialer
				p := tc.policy
				start := time.Now()
				c, err := bs.DialTCP(&bs.TCPConnConfig{Address: freeAddr(t), Retry: &p, DialContext: d.dial})
				took := time.Since(start)
				if err == nil {
					c.Close()
					t.Fatal("DialTCP to nobody succeeded")
				}
				if !errors.Is(err, bs.ErrReconnectFailed) || !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("DialTCP to nobody: %v, want ErrReconnectFailed wrapping the refusal", err)
				}
				if !tc.dials(d.n.Load()) {
					t.Errorf("%d dials", d.n.Load())
				}
				within(t, "DialTCP to nobody", took, 0, tc.bound+time.Second)
			})
		}
	})
	t.Run("context", func(t *testing.T) {
		leakCheck(t)
		var d countingDialer
		p := bs.RetryPolicy{MaxAttempts: 10_000, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxWait: time.Minute}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		c, err := bs.DialTCPContext(ctx, &bs.TCPConnConfig{Address: freeAddr(t), Retry: &p, DialContext: d.dial})
		if err == nil {
			c.Close()
			t.Fatal("DialTCPContext to nobody succeeded")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("DialTCPContext past its context: %v, want context.DeadlineExceeded", err)
		}
		within(t, "DialTCPContext to nobody", time.Since(start), 0, 200*time.Millisecond+time.Second)
		if d.n.Load() < 2 {
			t.Errorf("%d dials before the context ended, want several", d.n.Load())
		}
	})
	t.Run("FirstDialOnce", func(t *testing.T) {
		leakCheck(t)
		var d countingDialer
		p := quickGiveUp()
		p.FirstDialOnce = true
		c, err := bs.DialTCP(&bs.TCPConnConfig{Address: freeAddr(t), Retry: p, DialContext: d.dial})
		if err == nil {
			c.Close()
			t.Fatal("DialTCP to nobody succeeded")
		}
		if errors.Is(err, bs.ErrReconnectFailed) || !errors.Is(err, syscall.ECONNREFUSED) || d.n.Load() != 1 {
			t.Errorf("with FirstDialOnce: %v after %d dials, want the dial error after 1", err, d.n.Load())
		}
	})
	t.Run("no policy", func(t *testing.T) {
		leakCheck(t)
		var d countingDialer
		c, err := bs.DialTCP(&bs.TCPConnConfig{Address: freeAddr(t), DialContext: d.dial})
		if err == nil {
			c.Close()
			t.Fatal("DialTCP to nobody succeeded")
		}
		if errors.Is(err, bs.ErrReconnectFailed) || d.n.Load() != 1 {
			t.Errorf("without a policy: %v after %d dials, want the dial error after 1", err, d.n.Load())
		}
	})
}

// retryFirstDialLate dials, with a Retry policy, a port nobody listens on,
// opens a server there once the dial has failed twice, and checks that the
// dial then succeeds and the connection works. It reports false, to set up
// again, if the port was taken meanwhile.
func retryFirstDialLate(t *testing.T) bool {
	t.Helper()
	addr := freeAddr(t)
	var d countingDialer
	p := bs.RetryPolicy{MaxAttempts: 10_000, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxWait: 20 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		c   *bs.TCPConn
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := bs.DialTCPContext(ctx, &bs.TCPConnConfig{Address: addr, Retry: &p, DialContext: d.dial})
		res <- result{c, err}
	}()
	eventually(t, "two failed dials", func() bool { return d.n.Load() >= 2 })
	received := newSeqLog()
	l, err := bs.ListenTCP(bs.TCPListenerConfig{Address: addr, Callback: received.callback})
	if err != nil {
		cancel()
		if r := <-res; r.c != nil {
			r.c.Close()
		}
		return false
	}
	t.Cleanup(l.Close)
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("DialTCP with a Retry policy, server started late: %v", r.err)
	}
	defer r.c.Close()
	if _, err := r.c.Write(seqMsg(1, 16)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message", func() bool { return received.n.Load() == 1 })
	t.Logf("connected after %d dials", d.n.Load())
	return true
}

// TestRetryFailedBatchingFlood writes small messages in batching mode, with
// a small buffer, as fast as it can while the server goes away for good:
// the writer learns of it from Write within the policy's MaxWait plus a
// second, the policy runs one reconnect cycle, not one per buffer, and
// every message is accounted for once.
func TestRetryFailedBatchingFlood(t *testing.T) {
	leakCheck(t)
	received, hooked := newSeqLog(), newSeqLog()
	l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: received.callback})
	policy := quickGiveUp()
	c := dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: 4 << 10, OnWriteError: hooked.hook, Retry: policy})
	var given atomic.Int64
	var closedAt atomic.Int64 // UnixNano when the server was closed
	stopped := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for i := 0; i < 2_000_000 && time.Now().Before(deadline); i++ {
			_, err := c.Write(seqMsg(uint32(i), 64))
			given.Add(1)
			if errors.Is(err, bs.ErrReconnectFailed) {
				stopped <- err
				return
			}
		}
		stopped <- errors.New("the writer never saw ErrReconnectFailed")
	}()
	eventually(t, "messages at the server", func() bool { return received.n.Load() > 1000 })
	closedAt.Store(time.Now().UnixNano())
	l.Close()
	if err := <-stopped; !errors.Is(err, bs.ErrReconnectFailed) {
		t.Fatal(err)
	}
	within(t, "the writer's stop", time.Since(time.Unix(0, closedAt.Load())), 0, policy.MaxWait+time.Second)
	if err := c.Flush(); !errors.Is(err, bs.ErrReconnectFailed) {
		t.Errorf("Flush: %v, want ErrReconnectFailed", err)
	}
	if d := c.Stats().DialFailures; d != uint64(policy.MaxAttempts) {
		t.Errorf("DialFailures = %d, want %d: one reconnect cycle", d, policy.MaxAttempts)
	}
	checkAccounting(t, c, int(given.Load()), hooked, received)
	t.Logf("%d messages: %d written, %d failed", given.Load(), c.Stats().MessagesWritten, hooked.n.Load())
}
