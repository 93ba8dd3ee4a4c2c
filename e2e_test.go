package buffstreams_test

// End-to-end tests: they build the programs in test/server and test/client,
// run them against each other on 127.0.0.1, and check that their final lines
// agree.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	e2eMessages = 20000
	e2eNoteSize = 110 // the client's default -size
	e2eTimeout  = 60 * time.Second
)

func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the test programs")
	}
	server, client := e2eBuild(t)

	for _, framing := range []string{"buffstreams", "uvarint", "fixed2", "fixed4", "fixed8"} {
		for _, conns := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/conns=%d", framing, conns), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
				defer cancel()
				srv := e2eStart(ctx, t, server, "-addr", "127.0.0.1:0", "-framing", framing,
					"-n", strconv.Itoa(e2eMessages))
				addr := srv.listening(ctx, t)
				cli := e2eStart(ctx, t, client, "-addr", addr, "-framing", framing,
					"-n", strconv.Itoa(e2eMessages), "-conns", strconv.Itoa(conns))
				cli.wait(ctx, t)
				c := e2eCheckClient(t, cli, e2eMessages)
				srv.wait(ctx, t)
				e2eCheckServer(t, srv, c, conns)
			})
		}
	}

	t.Run("interrupt", func(t *testing.T) {
		if runtime.GOOS == "windows" {
			t.Skip("os.Interrupt cannot be sent on Windows")
		}
		ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
		defer cancel()
		srv := e2eStart(ctx, t, server, "-addr", "127.0.0.1:0", "-framing", "uvarint")
		addr := srv.listening(ctx, t)
		cli := e2eStart(ctx, t, client, "-addr", addr, "-framing", "uvarint",
			"-n", strconv.Itoa(e2eMessages), "-conns", "2")
		cli.wait(ctx, t)
		c := e2eCheckClient(t, cli, e2eMessages)
		// The server reports its count every second; interrupt it once it
		// has everything, which may be a little after the client is done.
		want := strconv.Itoa(e2eMessages)
		if _, err := srv.stderr.waitLine(ctx, srv.done, func(line string) bool {
			return strings.HasPrefix(line, "progress ") && e2eFields(line)["received"] == want
		}); err != nil {
			t.Fatalf("server never reported receiving %s messages: %v\nstderr:\n%s", want, err, srv.stderr)
		}
		if err := srv.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		srv.wait(ctx, t)
		e2eCheckServer(t, srv, c, 2)
	})

	t.Run("no server", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
		defer cancel()
		// A port that was just free is very likely still closed.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cli := e2eStart(ctx, t, client, "-addr", addr, "-n", "10")
		select {
		case <-cli.done:
		case <-ctx.Done():
			t.Fatal("client did not exit")
		}
		var ee *exec.ExitError
		if !errors.As(cli.err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("client exited with %v, want exit status 1\nstderr:\n%s", cli.err, cli.stderr)
		}
		if got := e2eFinal(t, cli, "sent="); got["sent"] != "0" {
			t.Errorf("client reported sent=%s, want 0", got["sent"])
		}
	})
}

// e2eCheckClient checks that the exited client sent n messages with no
// error, and returns its final line's fields.
func e2eCheckClient(t *testing.T, cli *e2eProc, n int) map[string]string {
	t.Helper()
	c := e2eFinal(t, cli, "sent=")
	want := map[string]uint64{"sent": uint64(n), "errors": 0, "bytes": uint64(n * e2eNoteSize)}
	for k, v := range want {
		if got := e2eUint(t, c, k); got != v {
			t.Errorf("client %s=%d, want %d", k, got, v)
		}
	}
	e2eCheckFloats(t, c)
	if t.Failed() {
		t.FailNow()
	}
	return c
}

// e2eCheckServer checks that the exited server received what the client
// reported sending, on conns connections, with no error.
func e2eCheckServer(t *testing.T, srv *e2eProc, client map[string]string, conns int) {
	t.Helper()
	s := e2eFinal(t, srv, "received=")
	want := map[string]uint64{
		"received": e2eUint(t, client, "sent"),
		"bytes":    e2eUint(t, client, "bytes"),
		"errors":   0,
		"conns":    uint64(conns),
	}
	for k, v := range want {
		if got := e2eUint(t, s, k); got != v {
			t.Errorf("server %s=%d, want %d", k, got, v)
		}
	}
	e2eCheckFloats(t, s)
}

func e2eCheckFloats(t *testing.T, fields map[string]string) {
	t.Helper()
	for _, k := range []string{"elapsed", "rate"} {
		if v, err := strconv.ParseFloat(fields[k], 64); err != nil || v < 0 {
			t.Errorf("%s=%q is not a non-negative number", k, fields[k])
		}
	}
}

// e2eBuild builds the test programs into a temporary directory and returns
// their paths.
func e2eBuild(t *testing.T) (server, client string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	// go test puts its own go first in PATH. With -o naming a directory,
	// go build writes one executable per package there.
	out, err := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"./test/server", "./test/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var exe string
	if runtime.GOOS == "windows" {
		exe = ".exe"
	}
	return filepath.Join(dir, "server"+exe), filepath.Join(dir, "client"+exe)
}

// e2eProc is a running test program.
type e2eProc struct {
	cmd            *exec.Cmd
	stdout, stderr *e2eOutput
	done           chan struct{} // closed when the program has exited
	err            error         // the result of Wait; set before done is closed
}

// e2eStart starts bin with args. The program is killed when ctx is done or
// the test ends.
func e2eStart(ctx context.Context, t *testing.T, bin string, args ...string) *e2eProc {
	t.Helper()
	p := &e2eProc{
		cmd:    exec.CommandContext(ctx, bin, args...),
		stdout: newE2EOutput(),
		stderr: newE2EOutput(),
		done:   make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill() // fails harmlessly if it has exited
		<-p.done
		if t.Failed() {
			t.Logf("%s %s\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), p.stdout, e2eTail(p.stderr.String(), 2000))
		}
	})
	return p
}

// listening waits for the server's "listening on ADDR" line and returns ADDR.
func (p *e2eProc) listening(ctx context.Context, t *testing.T) string {
	t.Helper()
	line, err := p.stdout.waitLine(ctx, p.done, func(line string) bool {
		return strings.HasPrefix(line, "listening on ")
	})
	if err != nil {
		t.Fatalf("server did not say it was listening: %v", err)
	}
	addr := strings.TrimPrefix(line, "listening on ")
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("server listens on %q, want 127.0.0.1:PORT", addr)
	}
	return addr
}

// wait waits for the program to exit and fails the test unless it exited 0.
func (p *e2eProc) wait(ctx context.Context, t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("%s: %v", filepath.Base(p.cmd.Path), p.err)
		}
	case <-ctx.Done():
		t.Fatalf("%s did not exit: %v", filepath.Base(p.cmd.Path), ctx.Err())
	}
}

// e2eFinal returns the fields of the exited program's one stdout line that
// starts with prefix.
func e2eFinal(t *testing.T, p *e2eProc, prefix string) map[string]string {
	t.Helper()
	var found []string
	for _, line := range p.stdout.lines() {
		if strings.HasPrefix(line, prefix) {
			found = append(found, line)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s printed %d lines starting with %q, want 1", filepath.Base(p.cmd.Path), len(found), prefix)
	}
	return e2eFields(found[0])
}

// e2eFields parses a line of space-separated key=value fields.
func e2eFields(line string) map[string]string {
	m := make(map[string]string)
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

func e2eUint(t *testing.T, fields map[string]string, key string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(fields[key], 10, 64)
	if err != nil {
		t.Fatalf("field %s=%q: %v", key, fields[key], err)
	}
	return v
}

func e2eTail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// e2eOutput collects a program's output and lets a test wait for a line.
type e2eOutput struct {
	mu   sync.Mutex
	buf  []byte
	wake chan struct{} // closed and replaced by every Write
}

func newE2EOutput() *e2eOutput { return &e2eOutput{wake: make(chan struct{})} }

func (o *e2eOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	close(o.wake)
	o.wake = make(chan struct{})
	return len(p), nil
}

func (o *e2eOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf)
}

// lines returns the complete lines written so far.
func (o *e2eOutput) lines() []string {
	s := o.String()
	s = s[:strings.LastIndexByte(s, '\n')+1]
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// waitLine waits for a complete line for which match is true, until ctx is
// done or exited is closed.
func (o *e2eOutput) waitLine(ctx context.Context, exited <-chan struct{}, match func(string) bool) (string, error) {
	for gone := false; ; {
		o.mu.Lock()
		wake := o.wake
		o.mu.Unlock()
		for _, line := range o.lines() {
			if match(line) {
				return line, nil
			}
		}
		if gone {
			return "", errors.New("the program exited")
		}
		select {
		case <-wake:
		case <-exited:
			gone = true // look once more: Wait has copied all the output
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}
