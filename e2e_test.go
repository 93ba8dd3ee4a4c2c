package buffstreams_test

// End-to-end tests: they build the programs in test/server and test/client,
// run them against each other on 127.0.0.1, and check that their final lines
// agree: over every kind of framing, TLS, replies (-echo), batching, a
// server restart under a client with a retry policy, and a server stopped by
// a signal while a client is sending. Each subtest is bounded by e2eTimeout;
// the programs are killed when it ends.

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

	framings := []string{"buffstreams", "uvarint", "fixed2", "fixed4", "fixed8", "fixed4le", "fixed4incl",
		`delim:\x00`} // the client's Notes never contain a zero byte
	for _, framing := range framings {
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
				c := e2eCheckClient(t, cli, e2eMessages, e2eNoteSize)
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
		c := e2eCheckClient(t, cli, e2eMessages, e2eNoteSize)
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
		cli.exit(ctx, t, 1)
		if got := e2eFinal(t, cli, "sent="); got["sent"] != "0" {
			t.Errorf("client reported sent=%s, want 0", got["sent"])
		}
	})

	t.Run("tls", func(t *testing.T) { e2eTLS(t, server, client) })
	t.Run("echo", func(t *testing.T) { e2eEcho(t, server, client) })
	t.Run("batch", func(t *testing.T) { e2eBatch(t, server, client) })
	t.Run("restart", func(t *testing.T) { e2eRestart(t, server, client) })
	t.Run("shutdown", func(t *testing.T) { e2eShutdown(t, server, client) })
}

// e2eTLS runs the server with a self-signed certificate. A client that
// trusts it (-tls-ca) gets every message through; one that speaks TLS but
// does not trust it fails its handshake, says why, exits 1 and sends
// nothing; one that does not speak TLS gets nothing delivered.
func e2eTLS(t *testing.T, server, client string) {
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	cert, key := e2eCert(t)
	srv := e2eStart(ctx, t, server, "-addr", "127.0.0.1:0", "-tls-cert", cert, "-tls-key", key)
	addr := srv.listening(ctx, t)

	untrusting := e2eStart(ctx, t, client, "-addr", addr, "-tls", "-n", "10")
	untrusting.exit(ctx, t, 1)
	if u := e2eFinal(t, untrusting, "sent="); u["sent"] != "0" || u["written"] != "0" {
		t.Errorf("client without -tls-ca reported sent=%s written=%s, want 0", u["sent"], u["written"])
	}
	if !strings.Contains(untrusting.stderr.String(), "x509: certificate signed by unknown authority") {
		t.Errorf("client without -tls-ca does not say that it does not trust the certificate\nstderr:\n%s", untrusting.stderr)
	}

	// What the plaintext client's Writes return depends on how soon the
	// server's handshake fails; only the server's count matters.
	plain := e2eStart(ctx, t, client, "-addr", addr, "-n", "10")
	select {
	case <-plain.done:
	case <-ctx.Done():
		t.Fatal("plaintext client did not exit")
	}

	cli := e2eStart(ctx, t, client, "-addr", addr, "-tls-ca", cert,
		"-n", strconv.Itoa(e2eMessages), "-conns", "2")
	cli.wait(ctx, t)
	c := e2eCheckClient(t, cli, e2eMessages, e2eNoteSize)

	// Shutdown delivers everything the clients sent before they closed.
	srv.signal(t, os.Interrupt)
	srv.wait(ctx, t)
	s := e2eFinal(t, srv, "received=")
	want := map[string]uint64{
		"received": e2eUint(t, c, "written"),
		"bytes":    e2eUint(t, c, "bytes"),
	}
	for k, v := range want {
		if got := e2eUint(t, s, k); got != v {
			t.Errorf("server %s=%d, want %d", k, got, v)
		}
	}
	// Every connection but the trusting client's two failed its
	// handshake. The plaintext client dials again after a failed Write, so
	// it may have made more than one.
	if errs, conns := e2eUint(t, s, "errors"), e2eUint(t, s, "conns"); conns < 4 || errs != conns-2 {
		t.Errorf("server conns=%d errors=%d, want at least 4 connections, all but 2 failing their handshake", conns, errs)
	}
	t.Logf("plaintext client: %s", plain.stdout.lines()[0])
}

// e2eEcho runs the server with -echo and the client with -echo: every
// message comes back, and the client reports round-trip times.
func e2eEcho(t *testing.T, server, client string) {
	for _, tc := range []struct {
		name, framing string
		conns         int
		args          []string
	}{
		{"default", "buffstreams", 2, nil},
		{"batch", "fixed4", 2, []string{"-batch"}},
		{"delim", `delim:\x00`, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
			defer cancel()
			framing, conns := tc.framing, tc.conns
			srv := e2eStart(ctx, t, server, "-addr", "127.0.0.1:0", "-echo", "-framing", framing,
				"-n", strconv.Itoa(e2eMessages))
			addr := srv.listening(ctx, t)
			args := append([]string{"-addr", addr, "-framing", framing, "-echo", "-n", strconv.Itoa(e2eMessages),
				"-conns", strconv.Itoa(conns)}, tc.args...)
			cli := e2eStart(ctx, t, client, args...)
			cli.wait(ctx, t)
			c := e2eCheckClient(t, cli, e2eMessages, e2eNoteSize)
			if got := e2eUint(t, c, "replies"); got != e2eMessages {
				t.Errorf("client replies=%d, want %d", got, e2eMessages)
			}
			p50, p99 := e2eDuration(t, c, "rtt_p50"), e2eDuration(t, c, "rtt_p99")
			if p50 <= 0 || p99 < p50 || p99 > e2eTimeout {
				t.Errorf("client rtt_p50=%v rtt_p99=%v: want 0 < p50 <= p99", p50, p99)
			}
			srv.wait(ctx, t)
			e2eCheckServer(t, srv, c, conns)
		})
	}
}

// e2eBatch runs the client in batching mode: every message arrives, and the
// client's line accounts for every message (written + failed = sent, no
// failure). The small buffer makes Write wait for room, and with 2000-byte
// Notes, above a quarter of it, it makes Write write them itself.
func e2eBatch(t *testing.T, server, client string) {
	for _, tc := range []struct {
		name string
		size int
		args []string
	}{
		{"default", e2eNoteSize, nil},
		{"small buffer", e2eNoteSize, []string{"-buffer", "4KiB", "-flush-interval", "1ms"}},
		{"large messages", 2000, []string{"-buffer", "4KiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
			defer cancel()
			srv := e2eStart(ctx, t, server, "-addr", "127.0.0.1:0", "-framing", "uvarint",
				"-n", strconv.Itoa(e2eMessages))
			addr := srv.listening(ctx, t)
			args := append([]string{"-addr", addr, "-framing", "uvarint", "-batch", "-n", strconv.Itoa(e2eMessages),
				"-conns", "2", "-size", strconv.Itoa(tc.size)}, tc.args...)
			cli := e2eStart(ctx, t, client, args...)
			cli.wait(ctx, t)
			c := e2eCheckClient(t, cli, e2eMessages, tc.size)
			srv.wait(ctx, t)
			e2eCheckServer(t, srv, c, 2)
		})
	}
}

// e2eRestart restarts the server under a client that streams at a steady
// rate with a retry policy. The client carries on, on the new server, and
// accounts for every message; the two servers together received no message
// twice and lost only what was in flight when the first one closed.
//
// The bound on the loss: once SIGINT arrives, server 1 keeps reading for its
// -grace while the client goes on writing at -rate, so when it closes the
// connections only the frames that arrived since its last read are unread.
// After that, each connection may have one more frame accepted by the kernel
// before the peer's reset comes back. The test allows 2 frames per
// connection plus half a second of the stream (a read loop kept off the CPU
// that long). The kernel's buffers, the only hard limit, could hold far
// more: up to tcp_wmem + tcp_rmem bytes per connection, megabytes.
func e2eRestart(t *testing.T, server, client string) {
	if runtime.GOOS == "windows" {
		t.Skip("os.Interrupt cannot be sent on Windows")
	}
	const (
		n         = 9000
		rate      = 3000 // messages per second: 3 s in all
		conns     = 2
		lossBound = 2*conns + rate/2
	)
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	srv1 := e2eStart(ctx, t, server, "-addr", "127.0.0.1:0", "-grace", "200ms")
	addr := srv1.listening(ctx, t)
	cli := e2eStart(ctx, t, client, "-addr", addr, "-n", strconv.Itoa(n), "-rate", strconv.Itoa(rate),
		"-conns", strconv.Itoa(conns), "-retries", "30", "-retry-wait", "20s")

	// The server's first progress line comes a second in: a third of the
	// way through the stream.
	if _, err := srv1.stderr.waitLine(ctx, srv1.done, func(line string) bool {
		return strings.HasPrefix(line, "progress ") && e2eFields(line)["received"] != "0"
	}); err != nil {
		t.Fatalf("server 1 received nothing: %v", err)
	}
	srv1.signal(t, os.Interrupt)
	srv1.wait(ctx, t)
	s1 := e2eFinal(t, srv1, "received=")

	srv2 := e2eStart(ctx, t, server, "-addr", addr)
	if got := srv2.listening(ctx, t); got != addr {
		t.Fatalf("server 2 listens on %s, want %s", got, addr)
	}
	// Every message is written or failed, the messages the server's TCP
	// had not acknowledged at the restart failed, and the client exits 1:
	// the server closed connections under it, and without
	// acknowledgements it cannot know what its process did not read. It
	// says so.
	cli.exit(ctx, t, 1)
	if !strings.Contains(cli.stderr.String(), "what was written just before may be lost") {
		t.Errorf("the client did not report the server's closes:\n%s", e2eTail(cli.stderr.String(), 2000))
	}
	c := e2eFinal(t, cli, "sent=")
	sent, written, failed := e2eUint(t, c, "sent"), e2eUint(t, c, "written"), e2eUint(t, c, "failed")
	if sent != n || written+failed != sent {
		t.Errorf("client sent=%d written=%d failed=%d, want sent=%d = written + failed", sent, written, failed, n)
	}
	if got := e2eUint(t, c, "reconnects"); got < conns {
		t.Errorf("client reconnects=%d, want at least %d (one per connection)", got, conns)
	}

	// The client has closed its connections: Shutdown delivers all they
	// sent to server 2.
	srv2.signal(t, os.Interrupt)
	srv2.wait(ctx, t)
	s2 := e2eFinal(t, srv2, "received=")
	r1, r2 := e2eUint(t, s1, "received"), e2eUint(t, s2, "received")
	t.Logf("server 1 received %d, server 2 %d, client wrote %d: %d lost at the restart", r1, r2, written, int64(written)-int64(r1+r2))
	if r1 == 0 || r2 == 0 {
		t.Errorf("servers received %d and %d: the restart was not mid-stream", r1, r2)
	}
	if r1+r2 > written {
		t.Errorf("servers received %d + %d > %d written: duplicates", r1, r2, written)
	}
	if r1+r2+lossBound < written {
		t.Errorf("servers received %d + %d, client wrote %d: more than %d lost", r1, r2, written, lossBound)
	}
	for i, s := range []map[string]string{s1, s2} {
		if got := e2eUint(t, s, "errors"); got != 0 {
			t.Errorf("server %d errors=%d, want 0", i+1, got)
		}
	}
}

// e2eShutdown signals the server while a client is connected and sending as
// fast as it can, so that the connection never pauses: the server must
// close it when -grace runs out, and exit 0 within 5 s with its final line.
// The client, left without a server, gives up, accounts for every message,
// and exits 1 because some failed.
func e2eShutdown(t *testing.T, server, client string) {
	if runtime.GOOS == "windows" {
		t.Skip("signals cannot be sent on Windows")
	}
	for _, tc := range []struct {
		name string
		sig  os.Signal
		args []string
	}{
		{"SIGTERM", syscall.SIGTERM, nil}, // the default grace of 3 s
		{"SIGINT", os.Interrupt, []string{"-grace", "1s", "-echo"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
			defer cancel()
			srv := e2eStart(ctx, t, server, append([]string{"-addr", "127.0.0.1:0"}, tc.args...)...)
			addr := srv.listening(ctx, t)
			args := []string{"-addr", addr, "-n", "0"}
			if slices.Contains(tc.args, "-echo") {
				args = append(args, "-echo", "-reply-wait", "1s")
			}
			cli := e2eStart(ctx, t, client, args...)
			if _, err := srv.stderr.waitLine(ctx, srv.done, func(line string) bool {
				return strings.HasPrefix(line, "progress ") && e2eFields(line)["received"] != "0"
			}); err != nil {
				t.Fatalf("server received nothing: %v", err)
			}
			start := time.Now()
			srv.signal(t, tc.sig)
			limit, stopLimit := context.WithTimeout(ctx, 5*time.Second)
			defer stopLimit()
			srv.wait(limit, t)
			t.Logf("server exited %v after the signal", time.Since(start).Round(time.Millisecond))
			if got := e2eUint(t, e2eFinal(t, srv, "received="), "received"); got == 0 {
				t.Error("server received=0")
			}

			select {
			case <-cli.done:
			case <-ctx.Done():
				t.Fatal("client did not give up after the server left")
			}
			c := e2eFinal(t, cli, "sent=")
			sent, written, failed := e2eUint(t, c, "sent"), e2eUint(t, c, "written"), e2eUint(t, c, "failed")
			if written+failed != sent || failed == 0 {
				t.Errorf("client sent=%d written=%d failed=%d, want sent = written + failed and failed > 0", sent, written, failed)
			}
			var ee *exec.ExitError
			if !errors.As(cli.err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("client exited with %v, want exit status 1 since messages failed", cli.err)
			}
		})
	}
}

// e2eCheckClient checks that the exited client sent n messages of size
// bytes with no error, and returns its final line's fields.
func e2eCheckClient(t *testing.T, cli *e2eProc, n, size int) map[string]string {
	t.Helper()
	c := e2eFinal(t, cli, "sent=")
	want := map[string]uint64{
		"sent":    uint64(n),
		"written": uint64(n),
		"failed":  0,
		"errors":  0,
		"bytes":   uint64(n * size),
	}
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
// reported writing, on conns connections, with no error.
func e2eCheckServer(t *testing.T, srv *e2eProc, client map[string]string, conns int) {
	t.Helper()
	s := e2eFinal(t, srv, "received=")
	want := map[string]uint64{
		"received": e2eUint(t, client, "written"),
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

// e2eCert writes the test PKI's certificate for 127.0.0.1 and its key
// into a temporary directory, as PEM files, and returns their paths. A
// client that trusts the certificate file trusts the server.
func e2eCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	cert := pki(t).server
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
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

// exit waits for the program to exit and fails the test unless its exit
// status is code.
func (p *e2eProc) exit(ctx context.Context, t *testing.T, code int) {
	t.Helper()
	select {
	case <-p.done:
	case <-ctx.Done():
		t.Fatalf("%s did not exit: %v", filepath.Base(p.cmd.Path), ctx.Err())
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != code {
		t.Fatalf("%s exited with %v, want exit status %d\nstderr:\n%s", filepath.Base(p.cmd.Path), p.err, code, e2eTail(p.stderr.String(), 2000))
	}
}

// signal sends sig to the program.
func (p *e2eProc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
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

func e2eDuration(t *testing.T, fields map[string]string, key string) time.Duration {
	t.Helper()
	v, err := time.ParseDuration(fields[key])
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
