package buffstreams

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// RetryPolicy bounds how a dialed connection dials: its first dial, in
// DialTCP, and its reconnects after a failure, with exponential back-off
// and jitter between attempts, as grpc-go and nats.go do, up to a number of
// attempts and a total wait. The zero value of every field selects its
// default.
//
// When the policy gives up, the connection has failed for good: Write,
// WriteBatch and Flush return the error, which matches ErrReconnectFailed
// and wraps the last dial error, at once and without dialing, until
// Reopen. TCPConn.Err and TCPConn.Done report it.
type RetryPolicy struct {
	// MaxAttempts is the most dials tried for one reconnect. Zero means 10.
	MaxAttempts int

	// MaxWait bounds the time one reconnect may take, dials and back-offs
	// together. Zero means 30 seconds.
	MaxWait time.Duration

	// InitialBackoff is the wait after the first failed dial. Zero means
	// 100 milliseconds.
	InitialBackoff time.Duration

	// MaxBackoff caps the wait between two dials. Zero means 5 seconds.
	MaxBackoff time.Duration

	// Multiplier grows the wait after each failed dial. Zero means 1.6.
	Multiplier float64

	// Jitter spreads each wait uniformly over ±Jitter of its length, so
	// that clients that lost the same server do not come back in step. Zero
	// means 0.2; it is capped at 1.
	Jitter float64

	// FirstDialOnce makes DialTCP and DialTCPContext try the first dial
	// once, and fail at once if it fails, as without a policy: for a
	// program that should report a wrong address at once rather than after
	// MaxWait. False means the policy covers the first dial as it covers a
	// reconnect, so that a client may start before its server:
	// DialTCPContext also stops when its context ends, and if the policy
	// gives up, the error matches ErrReconnectFailed and wraps the last
	// dial error.
	FirstDialOnce bool
}

// retry is a checked RetryPolicy with its defaults filled in.
type retry struct {
	attempts         int
	maxWait          time.Duration
	initial, maxBack time.Duration
	mult, jitter     float64
	first            bool // the policy covers the first dial: not FirstDialOnce
}

func newRetry(p *RetryPolicy) (*retry, error) {
	if p == nil {
		return nil, nil
	}
	if p.MaxAttempts < 0 || p.MaxWait < 0 || p.InitialBackoff < 0 || p.MaxBackoff < 0 || p.Multiplier < 0 || p.Jitter < 0 {
		return nil, fmt.Errorf("%w: negative setting in RetryPolicy %+v", ErrInvalidConfig, *p)
	}
	r := &retry{
		attempts: orDefault(p.MaxAttempts, 10),
		maxWait:  orDefault(p.MaxWait, 30*time.Second),
		initial:  orDefault(p.InitialBackoff, 100*time.Millisecond),
		maxBack:  orDefault(p.MaxBackoff, 5*time.Second),
		mult:     orDefault(p.Multiplier, 1.6),
		jitter:   min(orDefault(p.Jitter, 0.2), 1),
		first:    !p.FirstDialOnce,
	}
	if r.mult < 1 {
		return nil, fmt.Errorf("%w: RetryPolicy.Multiplier %v is below 1", ErrInvalidConfig, p.Multiplier)
	}
	return r, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// backoff returns the wait after the n-th failed dial (n >= 1).
func (r *retry) backoff(n int) time.Duration {
	d := float64(r.initial)
	for i := 1; i < n && d < float64(r.maxBack); i++ {
		d *= r.mult
	}
	d = min(d, float64(r.maxBack))
	d *= 1 + r.jitter*(2*rand.Float64()-1)
	return time.Duration(d)
}

// sleep waits for d or until ctx is done, and reports whether the full wait
// passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// redial calls dial until it succeeds, waiting r.backoff between attempts.
// It gives up after r.attempts dials, or when the next wait would end after
// r.maxWait from the start, with an error that matches ErrReconnectFailed
// and wraps the last dial error. An error for which final reports true is
// returned at once, as it is. If ctx ends during a wait, redial returns
// what stopped returns, given the last dial error. A nil r dials once.
func (r *retry) redial(ctx context.Context, dial func(attempt int) (net.Conn, error), final func(error) bool, stopped func(error) error) (net.Conn, error) {
	var deadline time.Time
	if r != nil {
		deadline = time.Now().Add(r.maxWait)
	}
	for attempt := 1; ; attempt++ {
		nc, err := dial(attempt)
		if err == nil {
			return nc, nil
		}
		if r == nil || final(err) {
			return nil, err
		}
		wait := r.backoff(attempt)
		if attempt >= r.attempts || time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("%w after %d attempts: %w", ErrReconnectFailed, attempt, err)
		}
		if !sleep(ctx, wait) {
			return nil, stopped(err)
		}
	}
}
