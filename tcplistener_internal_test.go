package buffstreams

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeListener hands out scripted Accept results: errors, then pipes.
type fakeListener struct {
	results chan any // error or net.Conn
	closed  chan struct{}
	once    sync.Once
}

func newFakeListener() *fakeListener {
	return &fakeListener{results: make(chan any, 16), closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case r := <-f.results:
		if err, ok := r.(error); ok {
			return nil, err
		}
		return r.(net.Conn), nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// tempErr is an Accept error that goes away by itself, like EMFILE.
type tempErr struct{}

func (tempErr) Error() string   { return "too many open files" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

func newTestListener(t *testing.T, ln net.Listener, cb ListenCallback, log *slog.Logger) *TCPListener {
	t.Helper()
	l, err := NewListener(ln, TCPListenerConfig{Callback: cb, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// TestAcceptTemporaryError checks that temporary Accept errors are retried
// after a back-off and that serving goes on, over net.Pipe connections.
func TestAcceptTemporaryError(t *testing.T) {
	fl := newFakeListener()
	got := make(chan string, 1)
	l := newTestListener(t, fl, func(p []byte) error { got <- string(p); return nil }, nil)
	fl.results <- tempErr{}
	fl.results <- tempErr{}
	client, server := net.Pipe()
	defer client.Close()
	fl.results <- server
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- l.StartListening() }()

	c, err := NewConn(client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("through a pipe")); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-got:
		if msg != "through a pipe" {
			t.Fatalf("got %q", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message after temporary Accept errors")
	}
	if waited := time.Since(start); waited < acceptBackoffMin+2*acceptBackoffMin {
		t.Errorf("served after %v: the back-off (5 ms, then 10 ms) was skipped", waited)
	}
	if n := l.Stats().AcceptErrors; n != 2 {
		t.Errorf("AcceptErrors = %d, want 2", n)
	}
	l.Close()
	if err := <-done; err != nil {
		t.Fatalf("StartListening = %v after Close, want nil", err)
	}
}

// TestAcceptFatalError checks that a permanent Accept error ends
// StartListening with that error.
func TestAcceptFatalError(t *testing.T) {
	fl := newFakeListener()
	l := newTestListener(t, fl, func([]byte) error { return nil }, nil)
	boom := errors.New("boom")
	fl.results <- boom
	if err := l.StartListening(); !errors.Is(err, boom) {
		t.Fatalf("StartListening = %v, want boom", err)
	}
}

// TestCloseDuringBackoff checks that Close does not wait out a back-off.
func TestCloseDuringBackoff(t *testing.T) {
	fl := newFakeListener()
	l := newTestListener(t, fl, func([]byte) error { return nil }, nil)
	l.backoffMin, l.backoffMax = 5*time.Second, 5*time.Second
	fl.results <- tempErr{}
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().AcceptErrors == 0 { // counted just before the back-off
		if time.Now().After(deadline) {
			t.Fatal("the temporary error was not seen")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	l.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v: it waited for the 5 s back-off", d)
	}
}

// TestBadInputLogged checks that the log says what was wrong with the input.
func TestBadInputLogged(t *testing.T) {
	var buf syncBuffer
	fl := newFakeListener()
	l := newTestListener(t, fl, func([]byte) error { return nil }, slog.New(slog.NewTextHandler(&buf, nil)))
	client, server := net.Pipe()
	defer client.Close()
	fl.results <- server
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), "negative length -36 in header 47 45 54") {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks the cause:\n%s", buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(buf.String(), "bad input") {
		t.Errorf("log does not say the input was bad:\n%s", buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
