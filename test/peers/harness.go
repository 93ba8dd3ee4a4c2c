package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A transport carries messages from client connections to a server inside
// this process, for the throughput cells.
type transport interface {
	// Name labels the transport in the tables, the JSON and -t.
	Name() string
	// Open starts a server on 127.0.0.1:0 and connects conns clients to
	// it, ready to send payloads of size bytes.
	Open(size, conns int) (session, error)
}

// A session is the server and the clients of one throughput cell.
type session interface {
	// Send sends messages on client connection i until stop is set or
	// limit messages have been sent, and returns how many it sent; all of
	// them have been handed to the operating system or to the transport's
	// own writer when it returns. It is called from one goroutine per
	// connection, never twice at once for the same i.
	Send(i int, stop *atomic.Bool, limit uint64) (uint64, error)
	// Received returns the messages and payload bytes the server has
	// counted so far. It is polled, so it must be cheap.
	Received() (msgs, bytes uint64)
	// Close closes the clients and the server; every goroutine the
	// session started has ended when it returns. It reports the server's
	// first error, if any.
	Close() error
}

// An echoer serves request-response round trips, for the latency cells.
type echoer interface {
	Name() string
	// OpenEcho starts a server on 127.0.0.1:0 that sends every message
	// back to its sender, and connects one client to it.
	OpenEcho(size int) (echoSession, error)
}

// An echoSession is the server and the one client of a latency cell.
type echoSession interface {
	// RoundTrip sends one message of the session's size and waits for its
	// echo, which it checks.
	RoundTrip() error
	// Close is as in session.
	Close() error
}

type options struct {
	ctx     context.Context // stops every cell early when done
	d       time.Duration   // sending time per cell
	warm    time.Duration   // warm-up time per cell
	n       uint64          // most messages per cell
	timeout time.Duration   // time allowed for delivery after the senders stop
}

// runCell measures one transport on one workload. leaked reports that the
// session left goroutines behind.
func runCell(t transport, size, conns int, opt options) (r result, leaked bool) {
	r = result{Transport: t.Name(), Size: size, Conns: conns}
	runtime.GC() // keep the previous cell's garbage out of this one
	before := runtime.NumGoroutine()
	s, err := t.Open(size, conns)
	if err != nil {
		r.Error = "open: " + err.Error()
		return r, checkLeaks(before, t.Name())
	}
	if _, _, err := phase(opt.ctx, s, size, conns, opt.warm, max(opt.n/20, uint64(conns)), opt.timeout); err != nil {
		r.Error = "warm-up: " + err.Error()
	} else {
		sent, elapsed, err := phase(opt.ctx, s, size, conns, opt.d, opt.n, opt.timeout)
		r.Messages, r.Bytes, r.Seconds = sent, sent*uint64(size), elapsed.Seconds()
		if elapsed > 0 {
			r.MsgsPerSec = float64(sent) / elapsed.Seconds()
			r.MBPerSec = float64(r.Bytes) / 1e6 / elapsed.Seconds()
		}
		if err != nil {
			r.Error = err.Error()
		}
	}
	if opt.ctx.Err() != nil && r.Error == "" {
		r.Error = "interrupted" // cut short: its numbers mean nothing
	}
	if err := s.Close(); err != nil && r.Error == "" {
		r.Error = "close: " + err.Error()
	}
	return r, checkLeaks(before, t.Name())
}

// phase runs one sender per connection for d or until limit messages in all
// (split evenly between the connections), then waits until the server has
// counted every message sent, and checks the count and the bytes. elapsed
// runs from the first send to the moment the count was complete.
func phase(ctx context.Context, s session, size, conns int, d time.Duration, limit uint64, timeout time.Duration) (sent uint64, elapsed time.Duration, err error) {
	msgs0, bytes0 := s.Received()
	per := max(limit/uint64(conns), 1)
	var (
		stop  atomic.Bool
		total atomic.Uint64
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error // guarded by mu
	)
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	unhook := context.AfterFunc(ctx, func() { stop.Store(true) })
	defer unhook()
	for i := range conns {
		wg.Go(func() {
			n, err := s.Send(i, &stop, per)
			total.Add(n)
			if err != nil {
				stop.Store(true)
				mu.Lock()
				errs = append(errs, fmt.Errorf("conn %d: %w", i, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sent = total.Load()
	if err := errors.Join(errs...); err != nil {
		return sent, time.Since(start), err
	}

	// The senders are done; poll until the server has counted all. A poll
	// every 20 µs is far finer than cells of seconds need.
	deadline := time.Now().Add(timeout)
	for {
		msgs, bytes := s.Received()
		msgs, bytes = msgs-msgs0, bytes-bytes0
		if msgs >= sent {
			elapsed = time.Since(start)
			if msgs != sent || bytes != sent*uint64(size) {
				return sent, elapsed, fmt.Errorf("sent %d messages of %d bytes, server counted %d messages and %d bytes", sent, size, msgs, bytes)
			}
			return sent, elapsed, nil
		}
		if time.Now().After(deadline) {
			return sent, time.Since(start), fmt.Errorf("timeout: sent %d messages, server counted %d after %v", sent, msgs, timeout)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// runLatency measures round trips of one echoer: a warm-up, then up to rounds
// round trips or opt.d, whichever ends first.
func runLatency(e echoer, size, rounds int, opt options) (l latency, leaked bool) {
	l = latency{Transport: e.Name(), Size: size}
	runtime.GC()
	before := runtime.NumGoroutine()
	s, err := e.OpenEcho(size)
	if err != nil {
		l.Error = "open: " + err.Error()
		return l, checkLeaks(before, e.Name())
	}
	if _, err := roundTrips(opt.ctx, s, max(rounds/20, 1), opt.warm); err != nil {
		l.Error = "warm-up: " + err.Error()
	} else {
		rtts, err := roundTrips(opt.ctx, s, rounds, opt.d)
		l.Rounds = len(rtts)
		if len(rtts) > 0 {
			l.P50 = micros(percentile(rtts, 50))
			l.P99 = micros(percentile(rtts, 99))
		}
		if err != nil {
			l.Error = err.Error()
		}
	}
	if opt.ctx.Err() != nil && l.Error == "" {
		l.Error = "interrupted"
	}
	if err := s.Close(); err != nil && l.Error == "" {
		l.Error = "close: " + err.Error()
	}
	return l, checkLeaks(before, e.Name())
}

// roundTrips times up to rounds round trips, stopping early after d. The
// slice holds every completed round trip, even when err is not nil.
func roundTrips(ctx context.Context, s echoSession, rounds int, d time.Duration) ([]time.Duration, error) {
	rtts := make([]time.Duration, 0, rounds)
	end := time.Now().Add(d)
	for range rounds {
		t0 := time.Now()
		if err := s.RoundTrip(); err != nil {
			return rtts, err
		}
		t1 := time.Now()
		rtts = append(rtts, t1.Sub(t0))
		if t1.After(end) || ctx.Err() != nil {
			break
		}
	}
	return rtts, nil
}

// percentile returns the p-th percentile of ds by the nearest-rank method:
// the smallest value that at least p percent of ds do not exceed. It sorts
// ds.
func percentile(ds []time.Duration, p int) time.Duration {
	slices.Sort(ds)
	rank := (len(ds)*p + 99) / 100 // ceil(len*p/100)
	return ds[max(rank, 1)-1]
}

func micros(d time.Duration) float64 {
	return float64(d) / float64(time.Microsecond)
}

// checkLeaks waits up to two seconds for the number of goroutines to fall
// back to before, and otherwise prints them all and reports a leak.
func checkLeaks(before int, name string) bool {
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			logf("LEAK: %s left %d goroutines behind:\n%s", name, runtime.NumGoroutine()-before, buf)
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// counter counts one server connection's messages and payload bytes. add
// adds the bytes first and load reads the messages first, so a reader never
// sees a message without its bytes. The padding keeps two connections'
// counters off one cache line.
type counter struct {
	msgs  atomic.Uint64
	bytes atomic.Uint64
	_     [48]byte
}

func (c *counter) add(msgs, bytes uint64) {
	c.bytes.Add(bytes)
	c.msgs.Add(msgs)
}

// counters is a server's counters, one per connection, summed by Received.
// Its methods are safe from many goroutines.
type counters struct {
	mu   sync.Mutex
	list []*counter // guarded by mu
}

// new returns a counter that Received includes from now on.
func (cs *counters) new() *counter {
	c := new(counter)
	cs.mu.Lock()
	cs.list = append(cs.list, c)
	cs.mu.Unlock()
	return c
}

// Received sums every counter's messages, then every counter's bytes (see
// counter).
func (cs *counters) Received() (msgs, bytes uint64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.list {
		msgs += c.msgs.Load()
	}
	for _, c := range cs.list {
		bytes += c.bytes.Load()
	}
	return msgs, bytes
}

// firstError keeps the first error a server reports, unless the server was
// closing: errors while closing are expected and dropped. Its methods are
// safe from many goroutines.
type firstError struct {
	mu      sync.Mutex
	err     error // guarded by mu
	closing bool  // guarded by mu
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil && !f.closing {
		f.err = err
	}
	f.mu.Unlock()
}

// close marks the server as closing and returns the error kept so far.
func (f *firstError) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing = true
	return f.err
}

// payload returns a message of n bytes with a pattern that an echo check can
// verify.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*13 + 5)
	}
	return p
}
