package buffstreams

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWriteBufferBound has eight goroutines write, in batching mode, to a
// server whose callback is held, with messages of every size up to past the
// large-message threshold, and samples the write buffer all along: it never
// grows beyond WriteBufferSize, whichever SlowConsumer policy applies.
func TestWriteBufferBound(t *testing.T) {
	const bufSize = 32 << 10
	for _, policy := range []SlowConsumerPolicy{SlowConsumerBlock, SlowConsumerError} {
		t.Run(policy.String(), func(t *testing.T) {
			gate := make(chan struct{})
			var release sync.Once
			open := func() { release.Do(func() { close(gate) }) }
			var received atomic.Int64
			l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0", Framing: Fixed4, MaxMessageSize: 64 << 10,
				Callback: func([]byte) error { <-gate; received.Add(1); return nil }})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			defer open()
			if err := l.StartListeningAsync(); err != nil {
				t.Fatal(err)
			}
			c, err := DialTCP(&TCPConnConfig{Address: l.Addr().String(), Framing: Fixed4, MaxMessageSize: 64 << 10,
				WriteBufferSize: bufSize, SlowConsumer: policy})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			var maxLen, maxCap int
			sample := func() {
				c.w.mu.Lock()
				maxLen = max(maxLen, len(c.w.pend))
				maxCap = max(maxCap, cap(c.w.pend), cap(c.w.spare))
				c.w.mu.Unlock()
			}
			var accepted, refused atomic.Int64
			var progress atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 8 {
				wg.Go(func() {
					for i := 0; i < 20_000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						n := 1 + (g*7919+i*104729)%(12<<10) // up to 12 KiB; 8 KiB and more bypass the buffer
						_, err := c.Write(make([]byte, n))
						switch {
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, ErrSlowConsumer):
							refused.Add(1)
						default:
							t.Error(err)
							return
						}
						progress.Add(1)
					}
				})
			}
			// Sample until the writers make no progress for 300 ms (blocked,
			// or refused over and over with the buffer full).
			last, still := int64(-1), time.Time{}
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
				sample()
				n := accepted.Load()
				if n != last {
					last, still = n, time.Now()
				} else if time.Since(still) > 300*time.Millisecond {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			close(stop)
			open()
			wg.Wait()
			sample()
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if maxLen > bufSize || maxCap > bufSize {
				t.Fatalf("write buffer reached %d bytes (capacity %d), above WriteBufferSize %d", maxLen, maxCap, bufSize)
			}
			deadline := time.Now().Add(30 * time.Second)
			for received.Load() != accepted.Load() && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if received.Load() != accepted.Load() || c.Stats().MessagesWritten != uint64(accepted.Load()) {
				t.Fatalf("%d accepted, %d written, %d received", accepted.Load(), c.Stats().MessagesWritten, received.Load())
			}
			if policy == SlowConsumerError && refused.Load() == 0 {
				t.Fatal("the buffer never filled")
			}
			t.Logf("%d messages accepted, %d refused; the buffer held at most %d bytes", accepted.Load(), refused.Load(), maxLen)
		})
	}
}
