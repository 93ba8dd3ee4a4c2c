package buffstreams_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// cutProxy forwards TCP connections to a target and can cut them all at
// once, as a proxy or a network that fails mid-stream.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cuts   atomic.Int64
	wg     sync.WaitGroup
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			a.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, a, b)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(a, b)
		go p.pipe(b, a)
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes every connection going through the proxy, discarding what it
// has not forwarded yet; new connections are still accepted.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, as a crashed middlebox gives
		}
		c.Close()
	}
	p.conns = nil
	p.cuts.Add(1)
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// numbered is a message naming its writer and its number for that writer.
func numbered(writer, n int) []byte {
	b := make([]byte, 16, 40)
	binary.BigEndian.PutUint64(b, uint64(writer))
	binary.BigEndian.PutUint64(b[8:], uint64(n))
	return append(b, "some payload bytes"...)
}

// orderCheck is a listener callback that checks that each writer's
// messages arrive exactly once and in order.
type orderCheck struct {
	mu    sync.Mutex
	next  map[uint64]uint64
	total int
	bad   []string
}

func newOrderCheck() *orderCheck { return &orderCheck{next: make(map[uint64]uint64)} }

func (o *orderCheck) callback(p []byte) error {
	w, n := binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:])
	o.mu.Lock()
	defer o.mu.Unlock()
	if n != o.next[w] && len(o.bad) < 10 {
		o.bad = append(o.bad, fmt.Sprintf("writer %d: got message %d, want %d", w, n, o.next[w]))
	}
	o.next[w] = n + 1
	o.total++
	return nil
}

func (o *orderCheck) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total
}

func ackRetry() *bs.RetryPolicy {
	return &bs.RetryPolicy{MaxAttempts: 50, InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxWait: 10 * time.Second}
}

func TestAckDeliversAndAcknowledges(t *testing.T) {
	leakCheck(t)
	for _, mode := range []struct {
		name string
		buf  int
	}{{"default", 0}, {"batching", 64 << 10}} {
		t.Run(mode.name, func(t *testing.T) {
			s := newSink()
			l := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{}})
			c := dial(t, l, bs.TCPConnConfig{WriteBufferSize: mode.buf, Acks: &bs.AckConfig{}})
			const n = 1000
			for i := range n {
				if _, err := c.Write(payload(i, 100)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if got := c.Stats().MessagesAcked; got != n {
				t.Fatalf("MessagesAcked = %d, want %d", got, n)
			}
			if s.len() != n {
				t.Fatalf("callback got %d messages, want %d", s.len(), n)
			}
			if _, err := c.Read(make([]byte, 10)); err == nil {
				t.Fatal("Read on an acknowledging connection succeeded")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAckExactlyOnceAcrossCuts cuts a proxy between the ends many times
// while several goroutines write numbered messages, and checks that the
// callback sees every message exactly once, in each writer's order.
func TestAckExactlyOnceAcrossCuts(t *testing.T) {
	leakCheck(t)
	for _, mode := range []struct {
		name    string
		buf     int
		writers int
	}{{"default-1", 0, 1}, {"default-8", 0, 8}, {"batching-1", 32 << 10, 1}, {"batching-8", 32 << 10, 8}} {
		t.Run(mode.name, func(t *testing.T) {
			oc := newOrderCheck()
			l := listen(t, bs.TCPListenerConfig{Callback: oc.callback, Acks: &bs.AckConfig{}})
			px := newCutProxy(t, l.Addr().String())
			var failed atomic.Int64
			c, err := bs.DialTCP(&bs.TCPConnConfig{
				Address:         px.addr(),
				WriteBufferSize: mode.buf,
				Retry:           ackRetry(),
				Acks:            &bs.AckConfig{Window: 256 << 10},
				OnWriteError:    func([]byte, error) { failed.Add(1) },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const perWriter = 20000
			total := perWriter * mode.writers
			done := make(chan struct{})
			var wg sync.WaitGroup
			for w := range mode.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perWriter {
						if _, err := c.Write(numbered(w, i)); err != nil {
							t.Errorf("writer %d, message %d: %v", w, i, err)
							return
						}
					}
				}()
			}
			go func() { wg.Wait(); close(done) }()
			// Cut at points spread over the stream, decided by progress.
			for k := 1; k <= 6; k++ {
				target := total * k / 8
				deadline := time.Now().Add(20 * time.Second)
				for oc.count() < target && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				px.cut()
			}
			<-done
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			oc.mu.Lock()
			bad := oc.bad
			oc.mu.Unlock()
			if len(bad) > 0 {
				t.Fatalf("order or duplicates: %v", bad)
			}
			if got := oc.count(); got != total {
				t.Fatalf("callback got %d messages, want %d", got, total)
			}
			st := c.Stats()
			if st.MessagesAcked != uint64(total) || failed.Load() != 0 || st.WriteErrors != 0 {
				t.Fatalf("acked %d, failed %d (%d), want %d and 0", st.MessagesAcked, failed.Load(), st.WriteErrors, total)
			}
			if st.Reconnects == 0 {
				t.Fatal("no reconnects: the cuts did not happen")
			}
		})
	}
}

var _ = errors.Is
