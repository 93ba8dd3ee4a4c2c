package buffstreams

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// WithoutKernelBound makes the connections that become current until
// restore is called bound a stall with the write deadline, as they do
// outside Linux, rather than with TCP_USER_TIMEOUT.
func WithoutKernelBound() (restore func()) {
	noKernelBound.Store(true)
	return func() { noKernelBound.Store(false) }
}

// TestStallTimeout checks the effective StallTimeout of each setting.
func TestStallTimeout(t *testing.T) {
	for _, tc := range []struct{ set, want time.Duration }{
		{0, defaultStallTimeout},
		{-1, 0},
		{-time.Hour, 0},
		{time.Millisecond, time.Millisecond},
		{2 * time.Minute, 2 * time.Minute},
	} {
		if got := stallTimeout(tc.set); got != tc.want {
			t.Errorf("StallTimeout %v: %v in effect, want %v", tc.set, got, tc.want)
		}
	}
	if defaultStallTimeout > 60*time.Second {
		t.Errorf("default StallTimeout %v, want at most 60 s", defaultStallTimeout)
	}
}

// TestSilence checks which errors name a silent peer, and that the error
// is a timeout that keeps its cause.
func TestSilence(t *testing.T) {
	op := func(err error) error {
		return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
	}
	for _, tc := range []struct {
		err    error
		silent bool
	}{
		{op(syscall.ETIMEDOUT), true},
		{op(syscall.EHOSTUNREACH), true},
		{op(syscall.ENETUNREACH), true},
		{op(syscall.ECONNRESET), false},
		{op(syscall.EPIPE), false},
		{os.ErrDeadlineExceeded, false},
	} {
		err := silence(tc.err)
		if errors.Is(err, ErrPeerSilent) != tc.silent {
			t.Errorf("silence(%v) = %v; ErrPeerSilent: %v, want %v", tc.err, err, !tc.silent, tc.silent)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("silence(%v) = %v, which lost its cause", tc.err, err)
		}
		var ne net.Error
		if tc.silent && (!errors.As(err, &ne) || !ne.Timeout()) {
			t.Errorf("silence(%v) = %v, not a net.Error timeout", tc.err, err)
		}
	}
}
