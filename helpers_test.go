package buffstreams_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestMain fails the run if any goroutine of the package outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the package:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// ourGoroutines returns the stacks of goroutines running the package's
// accept or read loops.
func ourGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "buffstreams.(*TCPListener).") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func waitNoGoroutines(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		g := ourGoroutines()
		if g == "" || time.Now().After(deadline) {
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkNoGoroutines fails t if goroutines of the package are still running.
func checkNoGoroutines(t testing.TB) {
	t.Helper()
	if g := waitNoGoroutines(5 * time.Second); g != "" {
		t.Fatalf("goroutines still running:\n%s", g)
	}
}

// sink records copies of the messages a listener receives.
type sink struct {
	mu   sync.Mutex
	msgs [][]byte
	wake chan struct{}
}

func newSink() *sink { return &sink{wake: make(chan struct{}, 1)} }

func (s *sink) callback(p []byte) error {
	s.mu.Lock()
	s.msgs = append(s.msgs, bytes.Clone(p))
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *sink) all() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.msgs...)
}

// wait waits until at least n messages arrived.
func (s *sink) wait(t testing.TB, n int) [][]byte {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for s.len() < n {
		select {
		case <-s.wake:
		case <-time.After(50 * time.Millisecond):
		case <-timeout:
			t.Fatalf("received %d messages, want %d", s.len(), n)
		}
	}
	return s.all()
}

// listen starts a listener on 127.0.0.1 with a system-chosen port.
func listen(t testing.TB, cfg bs.TCPListenerConfig) *bs.TCPListener {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	l, err := bs.ListenTCP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	return l
}

// dial connects to a listener with the given settings.
func dial(t testing.TB, l *bs.TCPListener, cfg bs.TCPConnConfig) *bs.TCPConn {
	t.Helper()
	cfg.Address = l.Addr().String()
	c, err := bs.DialTCP(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawDial opens a plain TCP connection, for sending arbitrary bytes.
func rawDial(t testing.TB, addr net.Addr) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// framings lists every framing with a name for subtests.
var framings = []struct {
	name string
	f    bs.Framing
}{
	{"buffstreams", nil},
	{"uvarint", bs.Uvarint},
	{"fixed1", bs.Fixed1},
	{"fixed2", bs.Fixed2},
	{"fixed3", bs.Fixed3},
	{"fixed4", bs.Fixed4},
	{"fixed8", bs.Fixed8},
	{"fixed2le", bs.Fixed2LE},
	{"fixed4le", bs.Fixed4LE},
	{"fixed8le", bs.Fixed8LE},
	{"fixed4incl", bs.Fixed4Inclusive},
}

// delimited lists the delimited framings, kept apart from framings because
// their payloads cannot hold the delimiter.
var delimited = []struct {
	name string
	f    bs.Framing
}{
	{"lines", bs.Lines},
	{"crlf", mustDelimited("\r\n")},
	{"nul", mustDelimited("\x00")},
}

func mustDelimited(delim string) bs.Framing {
	f, err := bs.Delimited([]byte(delim))
	if err != nil {
		panic(err)
	}
	return f
}

// payload returns n bytes that identify their message: a seed-dependent
// pattern, so a message mixed with another cannot compare equal.
func payload(seed, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(seed*31 + i*7 + seed>>8)
	}
	return p
}
