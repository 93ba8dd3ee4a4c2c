package buffstreams_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestMain fails the run if any goroutine of the package outlives the tests.
func TestMain(m *testing.M) {
	if record := os.Getenv(ackChildRecordEnv); record != "" {
		os.Exit(ackChild(record)) // a listener process of TestAckAtLeastOnceAcrossKill
	}
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
// cleanup runs last, after the listeners and connections are closed. The
// helpers that start a listener (listen, apiStart, apiServe, serveOver) call
// it too, as they are normally a test's first step; those that only connect
// do not, since a check installed after the test's first goroutines would
// blame it for them. TestMain checks what any test left. It waits up to
// 10 s for goroutines to finish.
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

// apiEcho is a ConnCallback that writes every message back to its sender.
func apiEcho(conn *bs.TCPConn, msg []byte) error {
	_, err := conn.Write(msg)
	return err
}

// apiStart binds cfg (on 127.0.0.1 with a system-chosen port if Address is
// empty) and starts accepting. build receives the listener before it
// accepts, so a callback can refer to it without a race.
func apiStart(t testing.TB, cfg bs.TCPListenerConfig, build func(*bs.TCPListener)) *bs.TCPListener {
	t.Helper()
	leakCheck(t)
	if cfg.Address == "" && cfg.Network == "" {
		cfg.Address = "127.0.0.1:0"
	}
	l, err := bs.ListenTCP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if build != nil {
		build(l)
	}
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	return l
}

// apiServe starts serving the connections of ln.
func apiServe(t testing.TB, ln net.Listener, cfg bs.TCPListenerConfig) *bs.TCPListener {
	t.Helper()
	leakCheck(t)
	l, err := bs.NewListener(ln, cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	return l
}

// apiWrap wraps nc with NewConn and closes it at the end of the test.
func apiWrap(t testing.TB, nc net.Conn, cfg *bs.TCPConnConfig) *bs.TCPConn {
	t.Helper()
	c, err := bs.NewConn(nc, cfg)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// apiTCPPair returns the two ends of a loopback TCP connection.
func apiTCPPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return apiPair(t, ln, "tcp")
}

// apiPair dials ln and returns both ends.
func apiPair(t testing.TB, ln net.Listener, network string) (client, server net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
	}()
	client, err := net.DialTimeout(network, ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		client.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// apiSocketPath returns a path for a Unix domain socket in a temporary
// directory, or skips the test where Unix sockets are unavailable.
func apiSocketPath(t testing.TB) string {
	t.Helper()
	switch runtime.GOOS {
	case "plan9", "js", "wasip1":
		t.Skipf("no Unix domain sockets on %s", runtime.GOOS)
	}
	path := filepath.Join(t.TempDir(), "bs.sock")
	if len(path) > 100 { // sun_path holds 104 bytes on some systems
		dir, err := os.MkdirTemp("", "bs")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		path = filepath.Join(dir, "s")
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("Unix domain sockets unavailable: %v", err)
	}
	ln.Close()
	os.Remove(path)
	return path
}

// apiTLS returns a server configuration with the test PKI's certificate
// for 127.0.0.1 and a client configuration that trusts its CA.
func apiTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	p := pki(t)
	return serverTLS(p.server), &tls.Config{RootCAs: p.roots}
}

// apiRoundTrip writes n messages on c and checks that each comes back.
func apiRoundTrip(t testing.TB, c *bs.TCPConn, n int) {
	t.Helper()
	buf := make([]byte, c.MaxMessageSize())
	var out []byte
	for i := range n {
		out = strconv.AppendInt(append(out[:0], "msg "...), int64(i), 10)
		if _, err := c.Write(out); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(buf[:k], out) {
			t.Fatalf("reply %d is %q, want %q", i, buf[:k], out)
		}
	}
}

// readOne reads one message.
func readOne(c *bs.TCPConn) (string, error) {
	buf := make([]byte, c.MaxMessageSize())
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// apiCounter is a ConnCallback that answers "N" with N messages "m0" …
// "m<N-1>" and "close" by closing the connection.
func apiCounter(conn *bs.TCPConn, msg []byte) error {
	if string(msg) == "close" {
		return conn.Close()
	}
	n, err := strconv.Atoi(string(msg))
	if err != nil {
		return err
	}
	for i := range n {
		if _, err := conn.Write([]byte("m" + strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return nil
}

// seqMsg returns a message of size bytes (at least 4) that starts with seq.
func seqMsg(seq uint32, size int) []byte {
	p := payload(int(seq), size)
	binary.BigEndian.PutUint32(p, seq)
	return p
}

// seqLog records sequence numbers: the messages a server received, or the
// ones a client's OnWriteError was given. OnWriteError's nil messages, the
// ones the peer's TCP never acknowledged, are counted in unacked.
type seqLog struct {
	mu      sync.Mutex
	seen    map[uint32]int
	errs    []error
	n       atomic.Int64
	unacked atomic.Int64
}

func newSeqLog() *seqLog { return &seqLog{seen: make(map[uint32]int)} }

func (s *seqLog) add(p []byte, err error) {
	s.mu.Lock()
	if p == nil {
		s.unacked.Add(1)
	} else {
		s.seen[binary.BigEndian.Uint32(p)]++
	}
	if err != nil {
		s.errs = append(s.errs, err)
	}
	s.mu.Unlock()
	s.n.Add(1)
}

// callback is a ListenCallback that records messages.
func (s *seqLog) callback(p []byte) error { s.add(p, nil); return nil }

// hook is an OnWriteError that records messages and errors.
func (s *seqLog) hook(p []byte, err error) { s.add(p, err) }

func (s *seqLog) snapshot() (map[uint32]int, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[uint32]int, len(s.seen))
	for k, v := range s.seen {
		m[k] = v
	}
	return m, append([]error(nil), s.errs...)
}

// checkAccounting checks the invariant of OnWriteError: every one of given
// messages was counted as written or passed to the hook, once; none that
// reached the hook arrived at the server; none arrived twice.
func checkAccounting(t *testing.T, c *bs.TCPConn, given int, hooked, received *seqLog) {
	t.Helper()
	st := c.Stats()
	failed, _ := hooked.snapshot()
	got, _ := received.snapshot()
	if st.MessagesWritten+uint64(hooked.n.Load()) != uint64(given) {
		t.Errorf("%d messages given, %d written + %d passed to OnWriteError", given, st.MessagesWritten, hooked.n.Load())
	}
	if st.WriteErrors != uint64(hooked.n.Load()) {
		t.Errorf("WriteErrors = %d, OnWriteError called %d times", st.WriteErrors, hooked.n.Load())
	}
	for seq, n := range failed {
		if n != 1 {
			t.Errorf("message %d passed to OnWriteError %d times", seq, n)
		}
		if got[seq] != 0 {
			t.Errorf("message %d passed to OnWriteError but received by the server", seq)
		}
	}
	for seq, n := range got {
		if n != 1 {
			t.Errorf("message %d received %d times", seq, n)
		}
	}
	// A message reported unacknowledged (nil, so it cannot be matched by
	// sequence) may have arrived after all: a peer that read it and then
	// reset the connection before its delayed acknowledgement left sends
	// that acknowledgement only in the reset, whose ACK field the kernel
	// ignores (docs/guarantees.md). No more than those may.
	if extra := int64(len(got)) - int64(st.MessagesWritten); extra > hooked.unacked.Load() {
		t.Errorf("server received %d messages, client counted %d written and reported %d as unacknowledged", len(got), st.MessagesWritten, hooked.unacked.Load())
	} else if extra > 0 {
		t.Logf("%d messages reported unacknowledged arrived", extra)
	}
}

// stallPeer accepts connections on 127.0.0.1 and never reads from them.
type stallPeer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newStallPeer(t testing.TB) *stallPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stallPeer{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, nc)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, nc := range s.conns {
			nc.Close()
		}
	})
	return s
}

func (s *stallPeer) addr() string { return s.ln.Addr().String() }

// within fails t unless d lies in [lo, hi].
func within(t *testing.T, what string, d, lo, hi time.Duration) {
	t.Helper()
	if d < lo || d > hi {
		t.Errorf("%s took %v, want between %v and %v", what, d, lo, hi)
	}
}

// gatedListener starts a listener whose callback records the messages and
// waits while the gate is shut.
type gatedListener struct {
	*bs.TCPListener
	received *seqLog
	open     chan struct{}
	once     sync.Once
}

func newGatedListener(t *testing.T) *gatedListener {
	g := &gatedListener{received: newSeqLog(), open: make(chan struct{})}
	g.TCPListener = listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: func(p []byte) error {
		<-g.open
		return g.received.callback(p)
	}})
	t.Cleanup(g.release) // before the listener's Close, which waits for callbacks
	return g
}

func (g *gatedListener) release() { g.once.Do(func() { close(g.open) }) }

// testPKI holds a CA and the certificates it signed, plus a client
// certificate it did not sign.
type testPKI struct {
	roots     *x509.CertPool  // trusts the CA
	server    tls.Certificate // for 127.0.0.1, ::1 and localhost
	expired   tls.Certificate // for 127.0.0.1, expired yesterday
	wrongHost tls.Certificate // for wrong.example only
	client    tls.Certificate // client authentication, signed by the CA
	rogue     tls.Certificate // client authentication, self-signed
}

var pkiOnce = sync.OnceValues(newPKI)

// pki returns the test certificates, made once per test binary.
func pki(t testing.TB) *testPKI {
	t.Helper()
	p, err := pkiOnce()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newPKI() (*testPKI, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "buffstreams test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl.SerialNumber = serial()
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if parent == nil { // self-signed
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, nil
	}
	serverAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	p := &testPKI{roots: x509.NewCertPool()}
	p.roots.AddCert(ca)
	for _, c := range []struct {
		dst    *tls.Certificate
		parent *x509.Certificate
		tmpl   *x509.Certificate
	}{
		{&p.server, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "server"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IPAddresses: loopback, DNSNames: []string{"localhost"}, ExtKeyUsage: serverAuth}},
		{&p.expired, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "expired"},
			NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour),
			IPAddresses: loopback, DNSNames: []string{"localhost"}, ExtKeyUsage: serverAuth}},
		{&p.wrongHost, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "wrong host"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			DNSNames: []string{"wrong.example"}, ExtKeyUsage: serverAuth}},
		{&p.client, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "buffstreams test client"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: clientAuth}},
		{&p.rogue, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "rogue client"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: clientAuth}},
	} {
		var parentKey *ecdsa.PrivateKey
		if c.parent != nil {
			parentKey = caKey
		}
		if *c.dst, err = leaf(c.parent, parentKey, c.tmpl); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// serverTLS returns a server configuration presenting cert.
func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// tlsRecorder is a ConnCallback that echoes every message and records it
// with the common name of the client certificate, if any.
type tlsRecorder struct {
	mu   sync.Mutex
	msgs []string
	cns  []string
	n    atomic.Int64
}

func (r *tlsRecorder) callback(conn *bs.TCPConn, p []byte) error {
	cn := "-"
	if st, ok := conn.ConnectionState(); ok && len(st.PeerCertificates) > 0 {
		cn = st.PeerCertificates[0].Subject.CommonName
	} else if !ok {
		cn = "not TLS"
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, string(p))
	r.cns = append(r.cns, cn)
	r.mu.Unlock()
	r.n.Add(1)
	_, err := conn.Write(p)
	return err
}

func (r *tlsRecorder) got() (msgs, cns []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...), append([]string(nil), r.cns...)
}

// recvOne reads one message from c.
func recvOne(c *bs.TCPConn) (string, error) {
	buf := make([]byte, c.MaxMessageSize())
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// isTimeout reports whether err is a timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// pipeListener is an in-memory net.Listener: Accept returns the server ends
// of net.Pipe connections made by dial.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *pipeListener) Addr() net.Addr { return pipeAddr("listener") }

// dial returns the client end of a new connection, once the listener has
// accepted the server end, whose LocalAddr is name.
func (p *pipeListener) dial(name string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case p.conns <- namedConn{server, name}:
		return client, nil
	case <-p.closed:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	}
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }

func (a pipeAddr) String() string { return string(a) }

// namedConn is a net.Conn whose LocalAddr names it, so that a ConnCallback
// can tell connections apart.
type namedConn struct {
	net.Conn
	name string
}

func (c namedConn) LocalAddr() net.Addr { return pipeAddr(c.name) }

// syscallReset is the error of reading a connection the peer reset.
var syscallReset = syscall.ECONNRESET

// freeAddr returns a 127.0.0.1 address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// rawListener accepts one connection at a time on 127.0.0.1 and hands it
// over, for tests that look at the bytes on the wire.
type rawListener struct {
	net.Listener
	conns chan net.Conn
}

func newRawListener(t testing.TB) *rawListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &rawListener{ln, make(chan net.Conn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			rl.conns <- nc
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(rl.conns)
		for nc := range rl.conns {
			nc.Close()
		}
	})
	return rl
}

func (rl *rawListener) accept(t testing.TB) net.Conn {
	t.Helper()
	select {
	case nc := <-rl.conns:
		t.Cleanup(func() { nc.Close() })
		return nc
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
		return nil
	}
}

func dialAddr(t testing.TB, addr string, cfg bs.TCPConnConfig) *bs.TCPConn {
	t.Helper()
	cfg.Address = addr
	c, err := bs.DialTCP(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// logBuf collects a logger's output; it is safe for the logger and the test
// at once.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// A background writer streams messages on a connection at a steady pace,
// as a well-behaved client does beside a test's misbehaving ones.
type background struct {
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	sent atomic.Int64 // messages written
}

// streamInBackground writes msg(i) on c, for i from 0, until n messages, a
// minute, or end, pausing 1 ms after every pace messages so that the
// listener's other connections get their turn. A failed Write fails the
// test. end runs at the test's cleanup too.
func streamInBackground(t testing.TB, c *bs.TCPConn, n, pace int, msg func(i int) []byte) *background {
	b := &background{stop: make(chan struct{})}
	b.wg.Go(func() {
		deadline := time.Now().Add(time.Minute)
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			select {
			case <-b.stop:
				return
			default:
			}
			if _, err := c.Write(msg(i)); err != nil {
				t.Error(err)
				return
			}
			b.sent.Add(1)
			if i%pace == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	t.Cleanup(b.end)
	return b
}

// end stops the writer and waits for it.
func (b *background) end() {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
}

// fakeAckListener accepts connections, reads each one's hello and hands the
// connection to serve, which plays the listener's part by hand, from the
// protocol's documentation.
func fakeAckListener(t *testing.T, serve func(nc net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				h := make([]byte, 44)
				if _, err := io.ReadFull(nc, h); err != nil {
					return
				}
				name := make([]byte, binary.BigEndian.Uint16(h[42:]))
				if _, err := io.ReadFull(nc, name); err != nil {
					return
				}
				serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

var magic = []byte{0xff, 0xff, 0xff, 0xff, 'B', 'S', 'A', 'K'}

// ackVersion is the version of the acknowledgement protocol.
const ackVersion = 2

// acceptAnswer returns the answer accepting a session whose listener
// delivered up to d.
func acceptAnswer(d uint64) []byte {
	b := append(append([]byte(nil), magic...), ackVersion, 0x02)
	return binary.BigEndian.AppendUint64(b, d)
}

// neverAcks accepts every session and reads its frames without
// acknowledging any.
func neverAcks(nc net.Conn) {
	nc.Write(acceptAnswer(0))
	io.Copy(io.Discard, nc)
}

// proxy forwards TCP connections to a target, as a middlebox does, and can
// fail the connections going through it in two ways: cut resets them all
// at once, as a crashed middlebox does; freeze makes them stop forwarding
// both ways while they stay open, as a partition or a NAT entry gone dark
// does. Connections made afterwards pass. It counts, by type, the records
// a listener of acknowledged delivery sends back after its accept answer.
type proxy struct {
	ln      net.Listener
	target  string
	done    chan struct{} // closed by close: frozen pipes return
	cuts    atomic.Int64
	freezes atomic.Int64
	records [256]atomic.Int64 // records seen on the way back, by type
	wg      sync.WaitGroup

	mu    sync.Mutex
	links []*link // guarded by mu
}

// A link is one connection through the proxy: a from the dialer, b to the
// target.
type link struct {
	a, b      net.Conn
	frozen    atomic.Bool
	forwarded atomic.Int64 // bytes forwarded from a to b

	// back is held by the pipe toward the dialer while it checks frozen
	// and forwards, and by freeze while it sets frozen, so that nothing
	// the target sends once freeze has returned reaches the dialer.
	back sync.Mutex
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
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
		l := &link{a: a, b: b}
		p.mu.Lock()
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(l, b, a, &l.forwarded, nil, nil)
		go p.pipe(l, a, b, nil, new(recordParser), &l.back)
	}
}

// pipe copies src to dst until either fails or the link freezes; then it
// forwards nothing more, and reads nothing more, until the proxy closes.
// Toward the target (guard nil) everything it reads it forwards, so what
// the dialer of a frozen link wrote is either forwarded (counted in n, if
// set) or still unread in the proxy's socket. Toward the dialer it
// forwards under guard, and drops what it read once the link is frozen.
// rp, if set, counts the records that pass.
func (p *proxy) pipe(l *link, dst, src net.Conn, n *atomic.Int64, rp *recordParser, guard *sync.Mutex) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if guard != nil {
			guard.Lock()
			if l.frozen.Load() {
				k = 0
			}
		}
		if k > 0 {
			if rp != nil {
				rp.feed(buf[:k], func(typ byte) { p.records[typ].Add(1) })
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				err = werr
			} else if n != nil {
				n.Add(int64(k))
			}
		}
		if guard != nil {
			guard.Unlock()
		}
		if l.frozen.Load() {
			<-p.done
			return
		}
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
}

// cut closes every connection going through the proxy, discarding what it
// has not forwarded yet; new connections are still accepted.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		for _, c := range []net.Conn{l.a, l.b} {
			c.(*net.TCPConn).SetLinger(0) // a reset, as a crashed middlebox gives
			c.Close()
		}
	}
	p.links = nil
	p.cuts.Add(1)
}

// freeze makes every connection going through the proxy stop forwarding,
// both ways, and stay open: what arrives is neither passed on nor read,
// and no FIN or reset is sent; once it returns, nothing more reaches a
// dialer. New connections still pass. It returns the links it froze.
func (p *proxy) freeze() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.back.Lock() // waits for a forward toward the dialer under way
		l.frozen.Store(true)
		l.back.Unlock()
		l.a.SetReadDeadline(longAgo) // wakes a pipe blocked in Read
		l.b.SetReadDeadline(longAgo)
	}
	p.freezes.Add(1)
	return slices.Clone(p.links)
}

// longAgo is a deadline in the past.
var longAgo = time.Unix(1, 0)

// held reads what the frozen link's dialer sent that the proxy's socket
// holds unread, which the proxy's TCP acknowledged, and returns its length.
// It is called once the dialer's connection has ended: the bytes are all
// there, and a read that finds none waits for nothing more.
func (l *link) held() int {
	n := 0
	buf := make([]byte, 64<<10)
	for {
		l.a.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, err := l.a.Read(buf)
		n += k
		if err != nil {
			return n
		}
	}
}

// seen returns the number of records of type typ that went back through
// the proxy.
func (p *proxy) seen(typ byte) int64 { return p.records[typ].Load() }

func (p *proxy) close() {
	p.ln.Close()
	close(p.done)
	p.cut()
	p.wg.Wait()
}

// recordParser splits the stream a listener of acknowledged delivery sends
// into its records, after the accept answer, from the protocol's
// documentation.
type recordParser struct {
	buf      []byte
	answered bool
}

func (rp *recordParser) feed(p []byte, record func(typ byte)) {
	rp.buf = append(rp.buf, p...)
	b := rp.buf
	for {
		n := 9 // type and sequence number
		switch {
		case !rp.answered:
			n = 18 // magic, version, type, delivered
		case len(b) >= 11 && b[0] == 0x11: // rejected: and a text
			n = 11 + int(binary.BigEndian.Uint16(b[9:11]))
		case len(b) > 0 && b[0] == 0x11:
			n = 11
		}
		if len(b) < n {
			break
		}
		if rp.answered {
			record(b[0])
		}
		rp.answered = true
		b = b[n:]
	}
	rp.buf = append(rp.buf[:0], b...)
}
