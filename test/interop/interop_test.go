// Package interop proves that programs using the protobuf runtimes of other
// languages exchange messages with buffstreams in the Uvarint and Fixed4
// framings: a Python peer (python/peer.py, Debian's python3-protobuf, framed
// by hand) and a JavaScript peer (js/peer.js, protobufjs), each as a client of
// a buffstreams TCPListener and as a server for a buffstreams TCPConn.
//
// The tests skip when the tools are missing, so that `go test ./...` passes
// with only Go. With BUFFSTREAMS_INTEROP=1 (CI, through run.sh) a missing
// tool fails them instead.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/buffstreams/buffstreams"
	"github.com/buffstreams/buffstreams/test/message"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

const (
	// count is how many notes each test sends one way.
	count = 10000
	// maxMessageSize leaves room for the 18000-byte comments.
	maxMessageSize = 1 << 16
	// timeout bounds each test, foreign program included.
	timeout = 60 * time.Second
	// requiredEnv set to 1 turns a skip for a missing tool into a failure.
	requiredEnv = "BUFFSTREAMS_INTEROP"
)

// The notes every peer sends and expects: note i in python/peer.py and
// js/peer.js must be the same. Between them they have negative dates, dates
// beyond 2^53 (where JavaScript numbers lose precision) and at both ends of
// int64, comments that are empty, non-ASCII (two-, three- and four-byte
// UTF-8, a tab, a NUL) and long enough to need two- and three-byte varints.
var commentUnits = []string{"a", "\u00e9", "\u65e5\u672c\u8a9e", "\U0001F9AB", "\u03a9mega\t\x00 "}

// bigComment is 18000 bytes, so its note's length needs a 3-byte varint.
var bigComment = strings.Repeat("\u00fc\u20ac\U0001D11E", 2000)

func noteDate(i int) int64 {
	n := int64(i)
	switch i % 6 {
	case 0:
		return -n
	case 1:
		return n * 1_000_000_007
	case 2:
		return math.MaxInt64 - (n - 2) // math.MaxInt64 for note 2
	case 3:
		return math.MinInt64 + (n - 3) // math.MinInt64 for note 3
	case 4:
		return -(1<<53 + n)
	default:
		return n
	}
}

func noteComment(i int) string {
	if i%1000 == 999 {
		return bigComment
	}
	return strings.Repeat(commentUnits[i%len(commentUnits)], i%97)
}

func note(i int) *message.Note {
	return &message.Note{Name: "note-" + strconv.Itoa(i), Date: noteDate(i), Comment: noteComment(i)}
}

// checkNote reports what differs between got, decoded from size bytes, and
// note i.
func checkNote(i int, got *message.Note, size int) error {
	want := note(i)
	switch {
	case got.GetName() != want.Name:
		return fmt.Errorf("message %d: name = %q, want %q", i, got.GetName(), want.Name)
	case got.GetDate() != want.Date:
		return fmt.Errorf("message %d: date = %d, want %d", i, got.GetDate(), want.Date)
	case got.GetComment() != want.Comment:
		return fmt.Errorf("message %d: comment = %.40q (%d bytes), want %.40q (%d bytes)",
			i, got.GetComment(), len(got.GetComment()), want.Comment, len(want.Comment))
	case size != proto.Size(want):
		// The fields match, so the payload holds something more.
		return fmt.Errorf("message %d: %d bytes, want %d", i, size, proto.Size(want))
	}
	return nil
}

// TestNotes checks that the notes cover what the interop tests claim to
// cover. It needs no other language.
func TestNotes(t *testing.T) {
	var (
		empty, nonASCII, negative, beyond53, extremes int
		headerSizes                                   = map[int]int{}
	)
	for i := range count {
		n := note(i)
		if !utf8.ValidString(n.Comment) {
			t.Fatalf("note %d: comment is not UTF-8", i)
		}
		if n.Comment == "" {
			empty++
		}
		if utf8.RuneCountInString(n.Comment) != len(n.Comment) {
			nonASCII++
		}
		if n.Date < 0 {
			negative++
		}
		if n.Date > 1<<53 || n.Date < -(1<<53) {
			beyond53++
		}
		if n.Date == math.MaxInt64 || n.Date == math.MinInt64 {
			extremes++
		}
		headerSizes[protowire.SizeVarint(uint64(proto.Size(n)))]++
	}
	t.Logf("of %d notes: %d empty comments, %d non-ASCII, %d negative dates, %d beyond 2^53, varint header sizes %v",
		count, empty, nonASCII, negative, beyond53, headerSizes)
	if empty == 0 || nonASCII == 0 || negative == 0 || beyond53 == 0 || extremes != 2 {
		t.Errorf("notes miss a case: %d empty, %d non-ASCII, %d negative, %d beyond 2^53, %d at the ends of int64",
			empty, nonASCII, negative, beyond53, extremes)
	}
	for size := 1; size <= 3; size++ {
		if headerSizes[size] == 0 {
			t.Errorf("no note has a %d-byte varint length", size)
		}
	}
}

// unavailable skips the test because a tool is missing, or fails it when
// BUFFSTREAMS_INTEROP=1 says the tools must be there.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(requiredEnv) == "1" {
		t.Fatalf("%s (%s=1 requires the interop tools)", msg, requiredEnv)
	}
	t.Skipf("%s; test/interop/run.sh installs the tools and runs this test", msg)
}

// peer is a program of another language (python/peer.py, js/peer.js): path
// runs it with args, then the mode ("client" or "server") and its flags.
type peer struct {
	name string
	path string
	args []string
}

func (p peer) command(ctx context.Context, mode string, f framing, extra ...string) *exec.Cmd {
	args := slices.Concat(p.args, []string{mode, "--framing", f.name, "--count", strconv.Itoa(count)}, extra)
	cmd := exec.CommandContext(ctx, p.path, args...)
	cmd.WaitDelay = 5 * time.Second // pipes left open by a killed program
	return cmd
}

type framing struct {
	name    string
	framing buffstreams.Framing
}

var framings = []framing{{"uvarint", buffstreams.Uvarint}, {"fixed4", buffstreams.Fixed4}}

func TestPython(t *testing.T) {
	py := findPython(t)
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		unavailable(t, "no protoc to generate message_pb2.py (Debian: apt-get install protobuf-compiler)")
	}
	script, err := filepath.Abs(filepath.Join("python", "peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	pb2 := generatePython(t, py, protoc)
	testPeer(t, peer{name: "python", path: py, args: []string{script, "--pb2-dir", pb2}})
}

func TestJavaScript(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "no node in PATH (Debian: apt-get install nodejs npm)")
	}
	script, err := filepath.Abs(filepath.Join("js", "peer.js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("js", "node_modules", "protobufjs", "package.json")); err != nil {
		unavailable(t, "protobufjs is not installed (run npm ci in test/interop/js): %v", err)
	}
	testPeer(t, peer{name: "js", path: node, args: []string{script}})
}

// findPython returns a Python interpreter that can import google.protobuf.
// Debian's python3-protobuf serves /usr/bin/python3, which need not be the
// python3 first in PATH (pyenv, virtualenvs).
func findPython(t *testing.T) string {
	t.Helper()
	var tried []string
	seen := map[string]bool{}
	for _, name := range []string{"/usr/bin/python3", "python3", "python"} {
		path, err := exec.LookPath(name)
		if err != nil || seen[path] {
			continue
		}
		seen[path] = true
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		out, err := exec.CommandContext(ctx, path, "-c", "import google.protobuf").CombinedOutput()
		cancel()
		if err == nil {
			return path
		}
		tried = append(tried, fmt.Sprintf("%s: %v: %s", path, err, lastLine(out)))
	}
	unavailable(t, "no Python that can import google.protobuf (Debian: apt-get install python3-protobuf); tried %q", tried)
	return ""
}

// generatePython writes message_pb2.py into a temporary directory with
// protoc and checks that py can import it.
func generatePython(t *testing.T, py, protoc string) string {
	t.Helper()
	protoDir, err := filepath.Abs(filepath.Join("..", "message"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, protoc, "--proto_path="+protoDir, "--python_out="+dir,
		filepath.Join(protoDir, "message.proto")).CombinedOutput()
	if err != nil {
		t.Fatalf("protoc --python_out: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, py, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import message_pb2", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		version, _ := exec.CommandContext(ctx, protoc, "--version").Output()
		unavailable(t, "%s cannot import the message_pb2.py of %s (%s): %v: %s",
			py, protoc, bytes.TrimSpace(version), err, lastLine(out))
	}
	return dir
}

// testPeer runs both directions in both framings.
func testPeer(t *testing.T, p peer) {
	for _, f := range framings {
		t.Run(fmt.Sprintf("%s/%s-client-to-go-listener", f.name, p.name), func(t *testing.T) {
			toGo(t, p, f)
		})
		t.Run(fmt.Sprintf("%s/go-conn-to-%s-server", f.name, p.name), func(t *testing.T) {
			fromGo(t, p, f)
		})
	}
}

// receiver is a listener callback that checks it receives exactly notes
// 0..want-1, in order.
type receiver struct {
	want int
	done chan struct{} // closed at the last note or the first error
	once sync.Once

	mu  sync.Mutex
	n   int   // notes received; guarded by mu
	err error // the first error; guarded by mu
}

func newReceiver(want int) *receiver {
	return &receiver{want: want, done: make(chan struct{})}
}

func (r *receiver) callback(b []byte) error {
	var got message.Note
	uerr := proto.Unmarshal(b, &got)
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.n
	r.n++
	var err error
	switch {
	case i >= r.want:
		err = fmt.Errorf("message %d: more than the %d sent", i, r.want)
	case uerr != nil:
		err = fmt.Errorf("message %d: %w", i, uerr)
	default:
		err = checkNote(i, &got, len(b))
	}
	if err != nil && r.err == nil {
		r.err = err
	}
	if err != nil || r.n == r.want {
		r.once.Do(func() { close(r.done) })
	}
	return err
}

func (r *receiver) result() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.err
}

// toGo runs the foreign client against a buffstreams TCPListener.
func toGo(t *testing.T, p peer, f framing) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()

	r := newReceiver(count)
	l, err := buffstreams.ListenTCP(buffstreams.TCPListenerConfig{
		Address:        "127.0.0.1:0",
		Framing:        f.framing,
		MaxMessageSize: maxMessageSize,
		Callback:       r.callback,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port

	cmd := p.command(ctx, "client", f, "--port", strconv.Itoa(port))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if runErr == nil {
		// The client has exited: its notes are sent, perhaps not all read.
		select {
		case <-r.done:
		case <-ctx.Done():
		}
	}
	l.Close() // no callback runs after this
	n, err := r.result()
	switch {
	case runErr != nil:
		t.Fatalf("%s client: %v (%v)\nstderr: %s\nthe listener had %d notes (error: %v)",
			p.name, runErr, ctx.Err(), stderr.Bytes(), n, err)
	case err != nil:
		t.Fatalf("from the %s client: %v", p.name, err)
	case n != count:
		t.Fatalf("from the %s client: %d notes, want %d (%v)", p.name, n, count, ctx.Err())
	}
	if got, want := lastLine(stdout.Bytes()), fmt.Sprintf("sent %d", count); got != want {
		t.Fatalf("%s client's last line is %q, want %q", p.name, got, want)
	}
	t.Logf("%s client -> Go listener (%s): %d notes checked in %v", p.name, f.name, n, time.Since(start).Round(time.Millisecond))
}

// fromGo runs a buffstreams TCPConn against the foreign server.
func fromGo(t *testing.T, p peer, f framing) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()

	port, fail, finish := startServer(t, p.command(ctx, "server", f), cancel, p.name+" server")

	c, err := buffstreams.DialTCP(&buffstreams.TCPConnConfig{
		Address:        net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Framing:        f.framing,
		MaxMessageSize: maxMessageSize,
	})
	if err != nil {
		fail("dial: %v", err)
	}
	if err := writeNotes(c, count); err != nil {
		c.Close()
		fail("%v", err)
	}
	if err := c.Close(); err != nil {
		fail("close: %v", err)
	}

	last, err := finish()
	if err != nil {
		t.Fatalf("%v (%v)", err, ctx.Err())
	}
	if want := fmt.Sprintf("received %d", count); last != want {
		t.Fatalf("%s server's last line is %q, want %q", p.name, last, want)
	}
	t.Logf("Go conn -> %s server (%s): %d notes checked in %v", p.name, f.name, count, time.Since(start).Round(time.Millisecond))
}

// lastLine returns the last non-empty line of out.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// startServer starts cmd, a peer that listens and prints "port N" first,
// and returns that port, a fail function that ends cmd (through cancel,
// which ends the context it runs under) and fails the test with what it
// printed on stderr, and a finish function that reads the rest of its
// output and waits for it, returning its last line and, if it failed, an
// error with its stderr. name names the peer in messages.
func startServer(t *testing.T, cmd *exec.Cmd, cancel context.CancelFunc, name string) (port int, fail func(string, ...any), finish func() (string, error)) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	fail = func(format string, args ...any) {
		t.Helper()
		cancel()
		for lines.Scan() {
		}
		werr := cmd.Wait()
		t.Fatalf("%s\n%s: %v\nstderr: %s", fmt.Sprintf(format, args...), name, werr, stderr.Bytes())
	}
	finish = func() (string, error) {
		var last string
		for lines.Scan() {
			last = lines.Text()
		}
		if err := cmd.Wait(); err != nil {
			return last, fmt.Errorf("%s: %w\nstderr: %s", name, err, stderr.Bytes())
		}
		return last, nil
	}
	if !lines.Scan() {
		fail("the %s printed no port", name)
	}
	if _, err := fmt.Sscanf(lines.Text(), "port %d", &port); err != nil {
		fail("the %s's first line %q is not \"port N\"", name, lines.Text())
	}
	return port, fail, finish
}

// writeNotes marshals and writes the notes 0 to count-1 on c.
func writeNotes(c *buffstreams.TCPConn, count int) error {
	for i := range count {
		b, err := proto.Marshal(note(i))
		if err != nil {
			return fmt.Errorf("marshal note %d: %w", i, err)
		}
		if _, err := c.Write(b); err != nil {
			return fmt.Errorf("write note %d: %w", i, err)
		}
	}
	return nil
}
