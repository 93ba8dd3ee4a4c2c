package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// TestNoteHasNoZeroByte checks what the doc promises for -framing
// delim:\x00: a marshaled Note never contains a zero byte, whatever its
// size, connection number or date.
func TestNoteHasNoZeroByte(t *testing.T) {
	dates := []int64{
		time.Now().UnixNano(),
		1 << 56, // the smallest 9-byte varint (1972)
		1<<63 - 1,
		1<<56 + 1<<7, // a continuation byte of 0x80
		1 << 62,
	}
	for size := range 4097 {
		for _, i := range []int{0, 1, 9, 10, 99, 100, 127, 128, 1000, 12345} {
			n := newNote(size, i)
			for _, d := range dates {
				n.Date = d
				b, err := proto.Marshal(n)
				if err != nil {
					t.Fatal(err)
				}
				if k := bytes.IndexByte(b, 0); k >= 0 {
					t.Fatalf("size %d, connection %d, date %d: zero byte at %d of %x", size, i, d, k, b)
				}
			}
		}
	}
}

// TestNoteSize checks that a Note has the size asked for, and keeps it when
// -echo stamps it again with the current time.
func TestNoteSize(t *testing.T) {
	minSize := proto.Size(newNote(0, 0))
	for size := minSize; size <= 4096; size++ {
		n := newNote(size, 3)
		if got := proto.Size(n); got != size {
			t.Fatalf("newNote(%d) has %d bytes", size, got)
		}
		n.Date = time.Now().UnixNano()
		if got := proto.Size(n); got != size {
			t.Fatalf("newNote(%d) stamped again has %d bytes", size, got)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := bucket(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucket(%d) = %d after %d: not contiguous", v, b, prev)
		}
		prev = b
	}
	for _, v := range []uint64{0, 1, 127, 128, 1000, 123456789, 1 << 40, 1<<63 - 1} {
		b := bucket(v)
		if b >= len(histogram{}.counts) {
			t.Fatalf("bucket(%d) = %d is out of range", v, b)
		}
		mid := bucketMid(b)
		if diff := max(mid, v) - min(mid, v); float64(diff) > float64(v)/64+1 {
			t.Errorf("bucket(%d) has middle %d, off by more than 1/64", v, mid)
		}
	}
}

func TestHistogramQuantile(t *testing.T) {
	var h histogram
	if got := h.quantile(0.5); got != 0 {
		t.Errorf("empty histogram: p50 = %v, want 0", got)
	}
	// 1..1000 µs, shuffled: p50 is 500 µs and p99 990 µs, within 1/64.
	for _, k := range rand.Perm(1000) {
		h.record(time.Duration(k+1) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := (got - c.want).Abs(); d > c.want/64+time.Microsecond {
			t.Errorf("quantile(%v) = %v, want %v within 1/64", c.q, got, c.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int{"262144": 262144, "256KiB": 256 << 10, "1MiB": 1 << 20, "0": 0} {
		var b byteSize
		if err := b.Set(in); err != nil || int(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1GiB", "1.5MiB", "99999999MiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, b)
		}
	}
}

// The tests below build this program and the server in ../server, and run
// them as processes on 127.0.0.1, as a user would. They are skipped with
// -short.

// programs holds the programs built for the tests, once per test binary.
var programs struct {
	once           sync.Once
	dir            string
	client, server string
	err            error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if programs.dir != "" {
		os.RemoveAll(programs.dir)
	}
	os.Exit(code)
}

// build returns the paths of the client and server programs, building them
// the first time.
func build(t *testing.T) (client, server string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the programs: skipped with -short")
	}
	programs.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			programs.err = err
			return
		}
		if programs.dir, programs.err = os.MkdirTemp("", "buffstreams-programs"); programs.err != nil {
			return
		}
		programs.client = filepath.Join(programs.dir, "client")
		programs.server = filepath.Join(programs.dir, "server")
		for _, b := range [][2]string{{programs.client, "."}, {programs.server, "../server"}} {
			out, err := exec.Command(gobin, "build", "-o", b[0], b[1]).CombinedOutput()
			if err != nil {
				programs.err = fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
				return
			}
		}
	})
	if programs.err != nil {
		t.Fatal(programs.err)
	}
	return programs.client, programs.server
}

// syncBuffer is a bytes.Buffer safe for a process writing to it while a
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A process is a program started by a test, with its output.
type process struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	exited         chan struct{} // closed when the process has exited
	code           int           // exit status, once exited is closed
}

// start runs program with args. The process is killed at the end of the
// test if it is still running.
func start(t *testing.T, program string, args ...string) *process {
	t.Helper()
	p := &process{name: filepath.Base(program), exited: make(chan struct{})}
	p.cmd = exec.Command(program, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s %s\nstdout:\n%s\nstderr:\n%s", p.name, strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// wait waits up to d for the process to exit, and returns its exit status.
func (p *process) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(d):
		t.Fatalf("%s still running after %v", p.name, d)
		return 0
	}
}

// poll waits up to d for cond to hold.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startServer starts the server on a free port of 127.0.0.1 with args and
// returns it with its address.
func startServer(t *testing.T, server string, args ...string) (*process, string) {
	t.Helper()
	p := start(t, server, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	var addr string
	poll(t, 30*time.Second, "listening", func() bool {
		for line := range strings.Lines(p.stdout.String()) {
			if a, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on "); ok {
				addr = a
				return true
			}
		}
		return false
	})
	return p, addr
}

// result returns the key=value fields of the last line of out, which must
// begin with first, as numbers.
func result(t *testing.T, out, first string) map[string]float64 {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, first+"=") {
		t.Fatalf("last line %q does not begin with %s=", last, first)
	}
	fields := make(map[string]float64)
	for _, f := range strings.Fields(last) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("field %q of %q is not key=value", f, last)
		}
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			fields[k] = n
		}
	}
	return fields
}

// want checks the fields named in want.
func want(t *testing.T, who string, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: %s=%v, want %v", who, k, g, v)
		}
	}
}

// TestAckEndToEnd sends messages with -ack to a server with -ack, in both
// write modes: every message is acknowledged, and counted once at each end.
func TestAckEndToEnd(t *testing.T) {
	client, server := build(t)
	const n = 30000
	for _, mode := range []struct {
		name string
		args []string
	}{{"default", nil}, {"batch", []string{"-batch"}}} {
		t.Run(mode.name, func(t *testing.T) {
			srv, addr := startServer(t, server, "-ack", "-n", strconv.Itoa(n))
			cl := start(t, client, append([]string{"-addr", addr, "-ack", "-n", strconv.Itoa(n), "-conns", "3"}, mode.args...)...)
			if code := cl.wait(t, time.Minute); code != 0 {
				t.Errorf("client exited with %d, want 0", code)
			}
			want(t, "client", result(t, cl.stdout.String(), "sent"),
				map[string]float64{"sent": n, "written": n, "acked": n, "failed": 0, "errors": 0, "bytes": n * 110})
			if code := srv.wait(t, 30*time.Second); code != 0 {
				t.Errorf("server exited with %d, want 0", code)
			}
			want(t, "server", result(t, srv.stdout.String(), "received"),
				map[string]float64{"received": n, "errors": 0, "conns": 3})
		})
	}
}

// TestAckMismatch runs a client with -ack against servers whose settings
// differ: it exits 1 within a few seconds, naming the difference, and the
// server receives nothing. -retries does not make it try again.
func TestAckMismatch(t *testing.T) {
	client, server := build(t)
	for _, c := range []struct {
		name   string
		server []string
		want   string
	}{
		{"acks off", nil, "acknowledged delivery is on at one end only"},
		{"framing", []string{"-ack", "-framing", "uvarint"}, "the dialer uses the buffstreams framing, the listener uvarint"},
		{"max", []string{"-ack", "-max", "65536"}, "the dialer's MaxMessageSize is 4096, the listener's 65536"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, addr := startServer(t, server, c.server...)
			cl := start(t, client, "-addr", addr, "-ack", "-n", "1000", "-conns", "2", "-retries", "3")
			if code := cl.wait(t, 5*time.Second); code != 1 {
				t.Errorf("client exited with %d, want 1", code)
			}
			if !strings.Contains(cl.stderr.String(), c.want) {
				t.Errorf("client's errors do not say %q", c.want)
			}
			want(t, "client", result(t, cl.stdout.String(), "sent"), map[string]float64{"sent": 0, "written": 0, "acked": 0})
			if err := srv.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			if code := srv.wait(t, 30*time.Second); code != 0 {
				t.Errorf("server exited with %d, want 0", code)
			}
			want(t, "server", result(t, srv.stdout.String(), "received"), map[string]float64{"received": 0})
		})
	}
}

// TestServerGone kills the server under a client with -retries 3, in both
// write modes, with and without -ack: the client exits 1 within the retry
// policy's MaxWait (plus the time to close and print), and still accounts
// for every message.
func TestServerGone(t *testing.T) {
	client, server := build(t)
	const maxWait = 2 * time.Second
	for _, c := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"batch", []string{"-batch"}},
		{"ack", []string{"-ack"}},
		{"ack batch", []string{"-ack", "-batch"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ack := slices.Contains(c.args, "-ack")
			var serverArgs []string
			if ack {
				serverArgs = []string{"-ack"}
			}
			srv, addr := startServer(t, server, serverArgs...)
			cl := start(t, client, append([]string{"-addr", addr, "-rate", "5000", "-retries", "3", "-retry-wait", maxWait.String()}, c.args...)...)
			// The progress lines, once a second, say when something was
			// written (acknowledged, with -ack).
			poll(t, 30*time.Second, "written", func() bool {
				for line := range strings.Lines(cl.stderr.String()) {
					if strings.HasPrefix(line, "progress ") && !strings.Contains(line, " written=0 ") {
						return true
					}
				}
				return false
			})
			if err := srv.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			srv.wait(t, 10*time.Second)
			code := cl.wait(t, maxWait+3*time.Second)
			t.Logf("client exited %v after the server was killed", time.Since(killed).Round(time.Millisecond))
			if code != 1 {
				t.Errorf("client exited with %d, want 1", code)
			}
			if !strings.Contains(cl.stderr.String(), "reconnect failed") {
				t.Error("client's errors do not say that the reconnect failed")
			}
			got := result(t, cl.stdout.String(), "sent")
			if got["written"]+got["failed"] != got["sent"] || got["failed"] == 0 {
				t.Errorf("written %v + failed %v, want sent %v, with some failed", got["written"], got["failed"], got["sent"])
			}
			if ack && got["acked"] != got["written"] {
				t.Errorf("acked %v, want written %v", got["acked"], got["written"])
			}
		})
	}
}

// TestAckFlags checks that -ack and -echo are refused together, with exit
// status 2, by both programs.
func TestAckFlags(t *testing.T) {
	client, server := build(t)
	for _, program := range []string{client, server} {
		p := start(t, program, "-addr", "127.0.0.1:0", "-ack", "-echo")
		if code := p.wait(t, 30*time.Second); code != 2 {
			t.Errorf("%s -ack -echo exited with %d, want 2", p.name, code)
		}
		if !strings.Contains(p.stderr.String(), "-ack and -echo") {
			t.Errorf("%s -ack -echo: stderr %q does not name the flags", p.name, p.stderr.String())
		}
	}
}
