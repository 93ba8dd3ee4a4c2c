package buffstreams_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
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
	if left := waitCensus(nil, 10*time.Second); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "%d goroutines of the package outlived the tests:\n%s\n",
			len(left), strings.Join(left, "\n\n"))
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// pkgDir is the directory of the package's source files, as the runtime
// writes it in stack traces.
var pkgDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return path.Dir(filepath.ToSlash(file))
}()

// pkgPath is the package's import path, which starts the name of each of
// its functions in a stack trace.
const pkgPath = "github.com/buffstreams/buffstreams."

// census returns the stacks of the goroutines that run, or were started by,
// a function of the package's own (non-test) source files, keyed by their
// header ("goroutine 42"). Goroutines run by the testing package (tests,
// subtests, TestMain) are left out, as are functions of the internal test
// files, which share the package's import path.
func census() map[string]string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "\ntesting.tRunner(") || strings.Contains(g, "\nmain.main()") {
			continue
		}
		if ours(g) {
			id, _, _ := strings.Cut(g, " [")
			out[id] = g
		}
	}
	return out
}

// ours reports whether one goroutine's stack has a frame, or a "created by"
// line, naming a function of the package and pointing into one of its
// non-test source files.
func ours(stack string) bool {
	lines := strings.Split(stack, "\n")
	for i := 0; i+1 < len(lines); i++ {
		fn := strings.TrimPrefix(lines[i], "created by ")
		if !strings.HasPrefix(fn, pkgPath) {
			continue
		}
		file, _, _ := strings.Cut(strings.TrimSpace(lines[i+1]), ":")
		if path.Dir(file) == pkgDir && !strings.HasSuffix(file, "_test.go") {
			return true
		}
	}
	return false
}

// waitCensus waits up to timeout for every goroutine of the package not in
// before (nil for none) to end, and returns the stacks of those left.
func waitCensus(before map[string]string, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for id, g := range census() {
			if _, ok := before[id]; !ok {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listenerGoroutines returns the stacks of the goroutines of the census that
// are in a TCPListener method, waiting up to a second for ones that are
// returning (past their WaitGroup's Done).
func listenerGoroutines() string {
	deadline := time.Now().Add(time.Second)
	for {
		var out []string
		for _, g := range census() {
			if strings.Contains(g, pkgPath+"(*TCPListener).") {
				out = append(out, g)
			}
		}
		if len(out) == 0 || time.Now().After(deadline) {
			return strings.Join(out, "\n\n")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoGoroutines fails t unless every goroutine of the package has ended
// within 10 s.
func checkNoGoroutines(t testing.TB) {
	t.Helper()
	if left := waitCensus(nil, 10*time.Second); len(left) > 0 {
		t.Fatalf("%d goroutines of the package still running; the first:\n%s", len(left), left[0])
	}
}

// leakChecked holds the tests whose leak check is installed.
var leakChecked sync.Map // testing.TB -> struct{}

// leakCheck makes t fail if, once the test and its other cleanups are done,
// a goroutine of the package is still running that was not running when
// leakCheck was first called for t. Call it first in a test, so that its
// cleanup runs last, after the listeners and connections are closed; listen
// and dial call it too. It waits up to 10 s for goroutines to finish.
func leakCheck(t testing.TB) {
	t.Helper()
	if _, dup := leakChecked.LoadOrStore(t, struct{}{}); dup {
		return
	}
	before := census()
	t.Cleanup(func() {
		defer leakChecked.Delete(t)
		if left := waitCensus(before, 10*time.Second); len(left) > 0 {
			t.Errorf("%d goroutines of the package outlived the test; the first:\n%s",
				len(left), strings.Join(left[:min(len(left), 3)], "\n\n"))
		}
	})
}

// waitBlocked waits until some goroutine is parked in one of states (any
// state but running if none is given) with fn, a function of the package
// such as "(*TCPConn).Read", in its stack: the way to know that a call has
// blocked rather than to hope it has. A Read waiting for bytes is in state
// "IO wait".
func waitBlocked(t testing.TB, fn string, states ...string) {
	t.Helper()
	waitNewBlocked(t, nil, fn, states...)
}

// waitNewBlocked is waitBlocked for a goroutine not in before, a census
// taken before the goroutine was started.
func waitNewBlocked(t testing.TB, before map[string]string, fn string, states ...string) {
	t.Helper()
	eventually(t, fn+" blocked", func() bool {
		for id, g := range census() {
			if _, old := before[id]; old || !strings.Contains(g, pkgPath+fn+"(") {
				continue
			}
			head, _, _ := strings.Cut(g, "\n")
			if len(states) == 0 && !strings.Contains(head, "[running") && !strings.Contains(head, "[runnable") {
				return true
			}
			for _, st := range states {
				if strings.Contains(head, "["+st) {
					return true
				}
			}
		}
		return false
	})
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
	leakCheck(t)
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
	leakCheck(t)
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

// transport is one kind of connection the library runs over. listen returns
// a listener of that kind for a TCPListener to serve and a function that
// dials it.
type transport struct {
	name   string
	listen func(t testing.TB) (ln net.Listener, dial func() (net.Conn, error))
}

// transports are net.Pipe, TCP, TLS over TCP and a Unix domain socket.
var transports = []transport{
	{"pipe", func(t testing.TB) (net.Listener, func() (net.Conn, error)) {
		pl := newPipeListener()
		return pl, func() (net.Conn, error) { return pl.dial("client") }
	}},
	{"tcp", func(t testing.TB) (net.Listener, func() (net.Conn, error)) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln, func() (net.Conn, error) { return net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second) }
	}},
	{"tls", func(t testing.TB) (net.Listener, func() (net.Conn, error)) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		server, client := apiTLS(t)
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: client}
		return tls.NewListener(ln, server), func() (net.Conn, error) { return d.Dial("tcp", ln.Addr().String()) }
	}},
	{"unix", func(t testing.TB) (net.Listener, func() (net.Conn, error)) {
		path := apiSocketPath(t)
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		return ln, func() (net.Conn, error) { return net.DialTimeout("unix", path, 10*time.Second) }
	}},
}

// forEachTransport runs f as a subtest over each transport, after yamux's
// testConnTypes.
func forEachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

// endpoint is a TCPListener serving a transport's listener, and the way to
// reach it.
type endpoint struct {
	l    *bs.TCPListener
	dial func() (net.Conn, error)
}

// serveOver starts a TCPListener with cfg on a new listener of tr.
func serveOver(t testing.TB, tr transport, cfg bs.TCPListenerConfig) endpoint {
	t.Helper()
	leakCheck(t)
	ln, dial := tr.listen(t)
	return endpoint{apiServe(t, ln, cfg), dial}
}

// raw returns a new client connection, closed at the end of the test.
func (e endpoint) raw(t testing.TB) net.Conn {
	t.Helper()
	nc, err := e.dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// conn returns a new client connection wrapped by NewConn with cfg.
func (e endpoint) conn(t testing.TB, cfg bs.TCPConnConfig) *bs.TCPConn {
	t.Helper()
	return apiWrap(t, e.raw(t), &cfg)
}
