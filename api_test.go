package buffstreams_test

// Tests of the 3.0 API for servers that answer and for connections the
// caller brings: ConnCallback, Broadcast, Messages, NewConn, NewListener,
// Network "unix", the contexts, Stats and batching mode. Everything runs over
// real sockets (127.0.0.1 with a port from :0, or a Unix socket in
// t.TempDir) unless the test is about net.Pipe.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

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
	leakCheck(t)
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

// TestConnCallbackEcho: a server replies through ConnCallback and the
// client reads every reply, in order, over 10,000 round trips.
func TestConnCallbackEcho(t *testing.T) {
	l := apiStart(t, bs.TCPListenerConfig{ConnCallback: apiEcho}, nil)
	c := dial(t, l, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	const n = 10_000
	apiRoundTrip(t, c, n)
	if st := c.Stats(); st.MessagesWritten != n || st.MessagesRead != n || st.WriteErrors != 0 {
		t.Errorf("client stats %+v, want %d written and read", st, n)
	}
	eventually(t, "the listener to count every message", func() bool { return l.Stats().Messages == n })
}

// TestConnWriteWhileReading writes on an accepted connection from another
// goroutine while its read loop runs and its callback replies: the two
// streams of messages arrive whole and each in order.
func TestConnWriteWhileReading(t *testing.T) {
	conns := make(chan *bs.TCPConn, 1)
	l := apiStart(t, bs.TCPListenerConfig{ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		select {
		case conns <- conn:
		default:
		}
		_, err := conn.Write(append([]byte("echo "), msg...))
		return err
	}}, nil)
	c := dial(t, l, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	if _, err := c.Write([]byte("0")); err != nil {
		t.Fatal(err)
	}
	var conn *bs.TCPConn
	select {
	case conn = <-conns:
	case <-time.After(10 * time.Second):
		t.Fatal("no callback")
	}

	const echoes, pushes = 3000, 3000
	var wg sync.WaitGroup
	wg.Go(func() { // pushes from outside the read loop
		for i := range pushes {
			if _, err := conn.Write([]byte("push " + strconv.Itoa(i))); err != nil {
				t.Errorf("push %d: %v", i, err)
				return
			}
		}
	})
	wg.Go(func() { // client messages that the callback answers
		for i := 1; i < echoes; i++ {
			if _, err := c.Write([]byte(strconv.Itoa(i))); err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
		}
	})
	next := map[string]int{"echo": 0, "push": 0}
	got := 0
	for msg, err := range c.Messages() {
		if err != nil {
			t.Fatalf("after %d messages: %v", got, err)
		}
		kind, num, ok := strings.Cut(string(msg), " ")
		i, err := strconv.Atoi(num)
		if _, known := next[kind]; !ok || !known || err != nil || i != next[kind] {
			t.Fatalf("message %d is %q; want echo %d or push %d", got, msg, next["echo"], next["push"])
		}
		next[kind]++
		if got++; got == echoes+pushes {
			break
		}
	}
	wg.Wait()
	eventually(t, "the server conn to count its writes", func() bool {
		st := conn.Stats()
		return st.MessagesWritten == echoes+pushes && st.MessagesRead == echoes
	})
}

// TestBroadcastChat: every message a client sends is relayed with
// Broadcast to every other client, never back to its sender, in the order
// the sender wrote them.
func TestBroadcastChat(t *testing.T) {
	const clients, each = 5, 200
	var badCount atomic.Int64
	var l *bs.TCPListener // set before the listener accepts
	apiStart(t, bs.TCPListenerConfig{ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		n, err := l.Broadcast(msg, conn)
		if n != clients-1 {
			badCount.Add(1)
		}
		return err
	}}, func(x *bs.TCPListener) { l = x })
	cs := make([]*bs.TCPConn, clients)
	for i := range cs {
		cs[i] = dial(t, l, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	}
	eventually(t, "every client to be served", func() bool { return l.Conns() == clients })

	var wg sync.WaitGroup
	for id, c := range cs {
		wg.Go(func() {
			for i := range each {
				if _, err := c.Write([]byte(fmt.Sprintf("%d:%d", id, i))); err != nil {
					t.Errorf("client %d write %d: %v", id, i, err)
					return
				}
			}
		})
		wg.Go(func() {
			next := make([]int, clients)
			for k := 0; k < (clients-1)*each; k++ {
				msg, err := readOne(c)
				if err != nil {
					t.Errorf("client %d after %d messages: %v", id, k, err)
					return
				}
				var from, i int
				if _, err := fmt.Sscanf(msg, "%d:%d", &from, &i); err != nil {
					t.Errorf("client %d got %q", id, msg)
					return
				}
				if from == id {
					t.Errorf("client %d got its own message %q", id, msg)
					return
				}
				if i != next[from] {
					t.Errorf("client %d got %q, want %d:%d", id, msg, from, next[from])
					return
				}
				next[from]++
			}
		})
	}
	wg.Wait()
	if n := badCount.Load(); n != 0 {
		t.Errorf("%d Broadcasts did not reach %d clients", n, clients-1)
	}
	// A Broadcast with no exception reaches everyone, and is the next
	// message each reads: nobody got an echo of its own.
	n, err := l.Broadcast([]byte("bye"), nil)
	if n != clients || err != nil {
		t.Fatalf("Broadcast = %d, %v; want %d", n, err, clients)
	}
	for id, c := range cs {
		if msg, err := readOne(c); msg != "bye" || err != nil {
			t.Errorf("client %d: %q, %v; want bye", id, msg, err)
		}
	}
}

// readOne reads one message.
func readOne(c *bs.TCPConn) (string, error) {
	buf := make([]byte, c.MaxMessageSize())
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestBroadcastSkipsClosed: a connection closed by its peer is no longer
// counted by Broadcast, and a Broadcast with no connection is not an error.
func TestBroadcastSkipsClosed(t *testing.T) {
	l := apiStart(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }}, nil)
	if n, err := l.Broadcast([]byte("nobody"), nil); n != 0 || err != nil {
		t.Fatalf("Broadcast to nobody = %d, %v", n, err)
	}
	a := dial(t, l, bs.TCPConnConfig{ReadTimeout: 10 * time.Second})
	b := dial(t, l, bs.TCPConnConfig{})
	eventually(t, "two connections", func() bool { return l.Conns() == 2 })
	b.Close()
	eventually(t, "one connection", func() bool { return l.Conns() == 1 && l.Stats().Active == 1 })
	if n, err := l.Broadcast([]byte("left"), nil); n != 1 || err != nil {
		t.Fatalf("Broadcast = %d, %v; want 1", n, err)
	}
	if msg, err := readOne(a); msg != "left" || err != nil {
		t.Fatalf("read %q, %v", msg, err)
	}
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

// TestMessages reads with the iterator: N messages, breaking early (which
// loses nothing: the next iteration goes on from the next message), and
// io.EOF, once, when the peer closes.
func TestMessages(t *testing.T) {
	l := apiStart(t, bs.TCPListenerConfig{ConnCallback: apiCounter}, nil)
	c := dial(t, l, bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	const n = 1000
	if _, err := c.Write([]byte(strconv.Itoa(n))); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, stop := range []int{1, 4, 500, n} {
		for msg, err := range c.Messages() {
			if err != nil {
				t.Fatalf("after %d: %v", len(got), err)
			}
			got = append(got, string(msg))
			if len(got) == stop {
				break
			}
		}
	}
	for i, m := range got {
		if m != "m"+strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, m)
		}
	}
	if len(got) != n {
		t.Fatalf("got %d messages, want %d", len(got), n)
	}
	if st := c.Stats(); st.MessagesRead != n {
		t.Errorf("MessagesRead = %d, want %d", st.MessagesRead, n)
	}

	// The server closes: the iterator yields io.EOF once and stops.
	if _, err := c.Write([]byte("close")); err != nil {
		t.Fatal(err)
	}
	var errs []error
	for msg, err := range c.Messages() {
		if msg != nil {
			t.Errorf("message %q with error %v", msg, err)
		}
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], io.EOF) {
		t.Fatalf("after the peer closed, the iterator yielded %v; want [EOF]", errs)
	}
}

// TestMessagesBufferLifetime documents that a message from Messages is
// valid only until the next iteration: a slice kept past it may be
// overwritten by the next message, while a copy is not. Each message is
// sent only after the previous one was read, so every read starts at the
// front of the buffer again.
func TestMessagesBufferLifetime(t *testing.T) {
	a, b := apiTCPPair(t)
	w := apiWrap(t, a, nil)
	r := apiWrap(t, b, &bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	const n = 100
	want := func(i int) []byte { return bytes.Repeat([]byte{byte('A' + i%26)}, 32) }
	if _, err := w.Write(want(0)); err != nil {
		t.Fatal(err)
	}
	var kept, copies [][]byte
	for msg, err := range r.Messages() {
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, msg)
		copies = append(copies, bytes.Clone(msg))
		if len(kept) == n {
			break
		}
		if _, err := w.Write(want(len(kept))); err != nil {
			t.Fatal(err)
		}
	}
	changed := 0
	for i := range n {
		if !bytes.Equal(copies[i], want(i)) {
			t.Fatalf("copy %d is %q, want %q", i, copies[i], want(i))
		}
		if !bytes.Equal(kept[i], want(i)) {
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("no kept message changed: the buffer-lifetime rule is not exercised")
	}
	t.Logf("%d of %d messages kept past their iteration were overwritten; their copies were not", changed, n)
}

// TestNewConnPipe runs framed messages over net.Pipe, in both directions,
// with Read and Messages, and checks what a wrapped connection does once
// its peer is gone.
func TestNewConnPipe(t *testing.T) {
	a, b := net.Pipe()
	cfg := &bs.TCPConnConfig{Framing: bs.Fixed4, ReadTimeout: 20 * time.Second}
	ca, cb := apiWrap(t, a, cfg), apiWrap(t, b, cfg)
	const n = 200
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := ca.Write(payload(i, i)); err != nil {
				done <- err
				return
			}
		}
		done <- ca.Close()
	}()
	buf := make([]byte, n)
	for i := range n / 2 {
		k, err := cb.Read(buf)
		if err != nil || !bytes.Equal(buf[:k], payload(i, i)) {
			t.Fatalf("Read %d: %q, %v", i, buf[:k], err)
		}
	}
	i := n / 2
	for msg, err := range cb.Messages() {
		if i == n {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after the last message: %q, %v; want io.EOF", msg, err)
			}
			break
		}
		if err != nil || !bytes.Equal(msg, payload(i, i)) {
			t.Fatalf("message %d: %q, %v", i, msg, err)
		}
		i++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := cb.Reopen(); err == nil {
		t.Error("Reopen of a wrapped connection succeeded")
	}
	if _, err := cb.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after the peer closed: %v; want net.ErrClosed", err)
	}
	if _, err := cb.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after the peer closed: %v; want net.ErrClosed", err)
	}
	if st := cb.Stats(); st.MessagesRead != n || st.WriteErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestNewConnUnix runs framed messages both ways over a Unix domain socket
// wrapped with NewConn, with concurrent writers on each side.
func TestNewConnUnix(t *testing.T) {
	path := apiSocketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, b := apiPair(t, ln, "unix")
	cfg := &bs.TCPConnConfig{Framing: bs.Uvarint, ReadTimeout: 20 * time.Second}
	ends := []*bs.TCPConn{apiWrap(t, a, cfg), apiWrap(t, b, cfg)}
	const writers, each = 4, 500
	var wg sync.WaitGroup
	for side, c := range ends {
		peer := ends[1-side]
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					if _, err := c.Write(payload(side*writers+w, 10+i%50)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Go(func() {
			got := 0
			for msg, err := range peer.Messages() {
				if err != nil {
					t.Errorf("side %d after %d: %v", side, got, err)
					return
				}
				ok := false
				for w := range writers {
					ok = ok || bytes.Equal(msg, payload(side*writers+w, len(msg)))
				}
				if !ok {
					t.Errorf("side %d: mixed message %x", side, msg)
					return
				}
				if got++; got == writers*each {
					return
				}
			}
		})
	}
	wg.Wait()
	if a := ends[0].LocalAddr(); a == nil || a.Network() != "unix" {
		t.Errorf("LocalAddr = %v", a)
	}
}

// TestNewListenerUnix serves a Unix socket listener made by the caller;
// clients reach it with Network "unix" and with NewConn.
func TestNewListenerUnix(t *testing.T) {
	path := apiSocketPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l := apiServe(t, ln, bs.TCPListenerConfig{ConnCallback: apiEcho})
	if l.Addr().Network() != "unix" || l.Addr().String() != path {
		t.Errorf("Addr = %v %v", l.Addr().Network(), l.Addr())
	}
	c, err := bs.DialTCP(&bs.TCPConnConfig{Network: "unix", Address: path, ReadTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	apiRoundTrip(t, c, 100)

	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	w := apiWrap(t, nc, &bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	apiRoundTrip(t, w, 100)
	if st := l.Stats(); st.Accepted != 2 || st.Active != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestNewListenerTLS serves a tls.Listener made by the caller: its
// connections complete the handshake, and the callback sees the TLS state.
func TestNewListenerTLS(t *testing.T) {
	srv, cli := apiTLS(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var plain atomic.Int64
	l := apiServe(t, tls.NewListener(raw, srv), bs.TCPListenerConfig{ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		if st, ok := conn.ConnectionState(); !ok || !st.HandshakeComplete {
			plain.Add(1)
		}
		return apiEcho(conn, msg)
	}})
	c := dial(t, l, bs.TCPConnConfig{TLSConfig: cli, ReadTimeout: 20 * time.Second})
	apiRoundTrip(t, c, 500)
	if _, ok := c.ConnectionState(); !ok {
		t.Error("the client connection is not TLS")
	}

	// A TLS connection dialed by the caller, wrapped with NewConn.
	tc, err := tls.Dial("tcp", l.Addr().String(), cli)
	if err != nil {
		t.Fatal(err)
	}
	w := apiWrap(t, tc, &bs.TCPConnConfig{ReadTimeout: 20 * time.Second})
	apiRoundTrip(t, w, 500)
	if n := plain.Load(); n != 0 {
		t.Errorf("%d callbacks saw a connection without a completed handshake", n)
	}
	if st := l.Stats(); st.Messages == 0 || st.TLSErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestNetworkUnix listens and dials with Network "unix". Closing the
// listener removes the socket file, so the path can be listened on again.
func TestNetworkUnix(t *testing.T) {
	path := apiSocketPath(t)
	for round := range 2 {
		l, err := bs.ListenTCPContext(context.Background(), bs.TCPListenerConfig{Network: "unix", Address: path, ConnCallback: apiEcho})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := l.StartListeningAsync(); err != nil {
			t.Fatal(err)
		}
		if a := l.Addr(); a.Network() != "unix" || a.String() != path {
			t.Errorf("Addr = %s %s", a.Network(), a)
		}
		c, err := bs.DialTCPContext(context.Background(), &bs.TCPConnConfig{Network: "unix", Address: path, ReadTimeout: 20 * time.Second})
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		apiRoundTrip(t, c, 100)
		c.Close()
		l.Close()
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file after Close: %v", err)
		}
	}
	if _, err := bs.DialTCP(&bs.TCPConnConfig{Network: "unix", Address: path}); err == nil {
		t.Error("dialed a closed Unix socket")
	}
}

// TestContexts: DialTCPContext fails with the context's error, and the
// DialContext hook receives the network and address and carries messages.
func TestContexts(t *testing.T) {
	l := apiStart(t, bs.TCPListenerConfig{ConnCallback: apiEcho}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bs.DialTCPContext(ctx, &bs.TCPConnConfig{Address: l.Addr().String()}); !errors.Is(err, context.Canceled) {
		t.Errorf("DialTCPContext with a cancelled context: %v", err)
	}
	if _, err := bs.ListenTCPContext(context.Background(), bs.TCPListenerConfig{Address: "127.0.0.1:0"}); !errors.Is(err, bs.ErrInvalidConfig) {
		t.Errorf("ListenTCPContext without a callback: %v", err)
	}

	var seen atomic.Value
	c, err := bs.DialTCPContext(context.Background(), &bs.TCPConnConfig{
		Address:     "server.invalid:1", // never resolved: the hook decides
		ReadTimeout: 20 * time.Second,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			seen.Store(network + " " + address)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", l.Addr().String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	apiRoundTrip(t, c, 10)
	if s := seen.Load(); s != "tcp server.invalid:1" {
		t.Errorf("DialContext got %v", s)
	}
}

// TestStatsUnderTraffic reads the counters at least 10,000 times, and
// until the clients are done, while they stream, a callback fails now and then and a connection sends garbage,
// and checks that every read is consistent and none waits; then it checks
// the final counts. A connection whose Write is stuck on a peer that does
// not read must answer Stats too.
func TestStatsUnderTraffic(t *testing.T) {
	const clients, each, size, failEvery = 4, 5000, 100, 50
	l := apiStart(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: func(p []byte) error {
		if p[0] == 'E' {
			return errors.New("refused")
		}
		return nil
	}}, nil)
	cs := make([]*bs.TCPConn, clients)
	for i := range cs {
		cs[i] = dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4})
	}

	// A writer stuck on a peer that accepted but never reads.
	stuckPeer := newRawListener(t)
	stuck := dialAddr(t, stuckPeer.Addr().String(), bs.TCPConnConfig{MaxMessageSize: 1 << 20})
	stuckPeer.accept(t)
	stuckDone := make(chan struct{})
	go func() {
		defer close(stuckDone)
		big := make([]byte, 1<<20)
		for range 1000 {
			if _, err := stuck.Write(big); err != nil {
				return
			}
		}
	}()

	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			msg := make([]byte, size)
			for i := range each {
				msg[0] = 'g'
				if i%failEvery == 0 {
					msg[0] = 'E'
				}
				if _, err := c.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	bad := rawDial(t, l.Addr())
	if _, err := bad.Write([]byte{0x80, 0, 0, 0}); err != nil { // declares 2 GiB
		t.Fatal(err)
	}

	var streaming atomic.Bool
	streaming.Store(true)
	go func() { wg.Wait(); streaming.Store(false) }()
	reads := make(chan error, 1)
	var during atomic.Int64 // reads that saw the stream under way
	go func() {
		var last bs.ListenerStats
		lastOut := make([]uint64, clients)
		for i := 0; i < 10_000 || streaming.Load(); i++ {
			st := l.Stats()
			if st.Messages > 0 && st.Messages < clients*each {
				during.Add(1)
			}
			switch {
			case st.Messages < last.Messages || st.Bytes < last.Bytes || st.Accepted < last.Accepted:
				reads <- fmt.Errorf("read %d: counters went back: %+v after %+v", i, st, last)
				return
			case st.Bytes < st.Messages*size:
				reads <- fmt.Errorf("read %d: %d messages but only %d bytes", i, st.Messages, st.Bytes)
				return
			case st.Active < 0 || st.Active > clients+1:
				reads <- fmt.Errorf("read %d: %d active of %d accepted", i, st.Active, st.Accepted)
				return
			}
			last = st
			for k, c := range cs {
				out := c.Stats().MessagesWritten
				if out < lastOut[k] {
					reads <- fmt.Errorf("read %d: client %d went back", i, k)
					return
				}
				lastOut[k] = out
			}
			_ = stuck.Stats()
		}
		reads <- nil
	}()
	select {
	case err := <-reads:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("10,000 reads of Stats did not finish: Stats blocks")
	}
	wg.Wait()
	t.Logf("%d reads of Stats saw the stream under way", during.Load())

	const total = clients * each
	eventually(t, "the final counts", func() bool {
		st := l.Stats()
		return st.Messages == total && st.BadInput == 1 && st.Active == clients
	})
	st := l.Stats()
	want := bs.ListenerStats{
		Accepted:       clients + 1,
		Active:         clients,
		Messages:       total,
		Bytes:          total * size,
		CallbackErrors: total / failEvery,
		BadInput:       1,
	}
	if st != want {
		t.Errorf("listener stats\n%+v, want\n%+v", st, want)
	}
	if _, err := cs[0].Write(make([]byte, 5000)); !errors.Is(err, bs.ErrMessageTooLarge) {
		t.Errorf("oversized Write: %v", err)
	}
	for k, c := range cs {
		want := bs.ConnStats{MessagesWritten: each, BytesWritten: each * size}
		if k == 0 {
			want.WriteErrors = 1
		}
		if got := c.Stats(); got != want {
			t.Errorf("client %d: %+v, want %+v", k, got, want)
		}
		c.Close()
	}
	eventually(t, "no active connection", func() bool { return l.Stats().Active == 0 })
	select {
	case <-stuckDone:
		t.Error("the stuck writer was not stuck")
	default:
	}
	stuck.Close()
	<-stuckDone
}

// TestBatchingRoundTrip writes in batching mode with Write, WriteBatch and
// large messages that bypass the buffer, Flushes half-way and Closes
// without flushing: every message arrives, in order, and MessagesWritten
// counts them all.
func TestBatchingRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bs.TCPConnConfig
	}{
		{"eager", bs.TCPConnConfig{WriteBufferSize: 4096}},
		{"linger", bs.TCPConnConfig{WriteBufferSize: 4096, FlushInterval: time.Millisecond}},
		{"small buffer", bs.TCPConnConfig{WriteBufferSize: 256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const max = 8 << 10
			s := newSink()
			l := apiStart(t, bs.TCPListenerConfig{MaxMessageSize: max, Callback: s.callback}, nil)
			cfg := tc.cfg
			cfg.Address = l.Addr().String()
			cfg.MaxMessageSize = max
			c, err := bs.DialTCP(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			msg := func(i int) []byte {
				if i%997 == 0 {
					return payload(i, 2000) // large: written from the caller's slice
				}
				return payload(i, 1+i%64)
			}
			const half, total = 5000, 10_000
			next := 0
			write := func(upTo int) {
				for next < upTo {
					if next%3 == 0 {
						if _, err := c.Write(msg(next)); err != nil {
							t.Fatal(err)
						}
						next++
						continue
					}
					var batch [][]byte
					for len(batch) < 10 && next < upTo {
						batch = append(batch, msg(next))
						next++
					}
					if n, err := c.WriteBatch(batch); n != len(batch) || err != nil {
						t.Fatalf("WriteBatch = %d, %v", n, err)
					}
				}
			}
			write(half)
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if st := c.Stats(); st.MessagesWritten != half {
				t.Fatalf("after Flush, MessagesWritten = %d, want %d", st.MessagesWritten, half)
			}
			write(total)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if st := c.Stats(); st.MessagesWritten != total || st.WriteErrors != 0 {
				t.Fatalf("after Close, stats %+v, want %d written", st, total)
			}
			got := s.wait(t, total)
			for i, m := range got {
				if !bytes.Equal(m, msg(i)) {
					t.Fatalf("message %d is %x, want %x", i, m, msg(i))
				}
			}
		})
	}
}

// TestAcceptedWriteTimeout: a write on an accepted connection, from
// outside its read loop, to a peer that does not read fails with
// ErrWriteTimeout once WriteTimeout passes, by Write and by Broadcast,
// which counts the connection as not reached and reports the error. The
// connection is then closed and its read loop ends cleanly.
func TestAcceptedWriteTimeout(t *testing.T) {
	for _, how := range []string{"Write", "Broadcast"} {
		t.Run(how, func(t *testing.T) {
			conns := make(chan *bs.TCPConn, 1)
			l := apiStart(t, bs.TCPListenerConfig{
				MaxMessageSize: 1 << 20,
				IdleTimeout:    time.Minute,
				WriteTimeout:   100 * time.Millisecond,
				ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
					select {
					case conns <- conn:
					default:
					}
					return nil
				},
			}, nil)
			c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 1 << 20}) // never reads
			if _, err := c.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			conn := <-conns
			big := make([]byte, 1<<20)
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				if how == "Write" {
					_, err = conn.Write(big)
					continue
				}
				var n int
				n, err = l.Broadcast(big, nil)
				if err == nil && n != 1 {
					t.Fatalf("Broadcast %d reached %d connections and returned no error", i, n)
				}
				if err != nil && n != 0 {
					t.Fatalf("Broadcast %d failed (%v) but counts %d", i, err, n)
				}
			}
			if !errors.Is(err, bs.ErrWriteTimeout) {
				t.Fatalf("writes to a peer that does not read: %v; want ErrWriteTimeout", err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%v is not a net.Error with Timeout", err)
			}
			// Conns drops before Active: wait for both.
			eventually(t, "the connection to be dropped", func() bool { return l.Conns() == 0 && l.Stats().Active == 0 })
			if st := l.Stats(); st.Panics != 0 || st.Active != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestReplyFailsInCallback: a reply that fails inside the callback (by
// WriteTimeout, the peer not reading) is returned to the callback as
// ErrWriteTimeout, and the read loop then ends cleanly: it is not counted
// as a panic, and the connection is closed.
func TestReplyFailsInCallback(t *testing.T) {
	errs := make(chan error, 1)
	l := apiStart(t, bs.TCPListenerConfig{
		MaxMessageSize: 1 << 20,
		IdleTimeout:    time.Minute,
		WriteTimeout:   100 * time.Millisecond,
		ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
			big := make([]byte, 1<<20)
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				_, err = conn.Write(big)
			}
			errs <- err
			return err
		},
	}, nil)
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 1 << 20}) // never reads
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, bs.ErrWriteTimeout) {
		t.Errorf("reply to a peer that does not read: %v; want ErrWriteTimeout", err)
	}
	eventually(t, "the connection to be dropped", func() bool { return l.Stats().Active == 0 })
	if st := l.Stats(); st.Panics != 0 || st.CallbackErrors != 1 {
		t.Errorf("stats %+v; want no panic and 1 callback error", st)
	}
}

// TestReadOnServedConn: Read and Messages on a connection a listener
// serves fail at once, rather than racing its read loop for the bytes: the
// read loop owns the reads, and every message still reaches the callback.
func TestReadOnServedConn(t *testing.T) {
	conns := make(chan *bs.TCPConn, 1)
	var got atomic.Int64
	l := apiStart(t, bs.TCPListenerConfig{ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
		select {
		case conns <- conn:
		default:
		}
		got.Add(1)
		return nil
	}}, nil)
	c := dial(t, l, bs.TCPConnConfig{})
	if _, err := c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	conn := <-conns
	const n = 1000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i < n; i++ {
			if _, err := c.Write([]byte("more")); err != nil {
				t.Error(err)
				return
			}
		}
	})
	buf := make([]byte, 4096)
	for range 10 {
		if _, err := conn.Read(buf); err == nil {
			t.Fatal("Read on a served connection succeeded")
		}
		for msg, err := range conn.Messages() {
			if err == nil {
				t.Fatalf("Messages on a served connection yielded %q", msg)
			}
		}
	}
	wg.Wait()
	eventually(t, "every message in the callback", func() bool { return got.Load() == n })
}

// TestCloseWhileFlushing closes connections in batching mode while their
// flusher is writing: Close must write everything still buffered, so every
// message is counted as written and arrives.
func TestCloseWhileFlushing(t *testing.T) {
	var got atomic.Int64
	l := apiStart(t, bs.TCPListenerConfig{Callback: func([]byte) error { got.Add(1); return nil }}, nil)
	const rounds, each = 100, 500
	msg := make([]byte, 100)
	for round := range rounds {
		var failure atomic.Value
		c, err := bs.DialTCP(&bs.TCPConnConfig{
			Address:         l.Addr().String(),
			WriteBufferSize: 4096,
			OnWriteError:    func(_ []byte, err error) { failure.CompareAndSwap(nil, err) },
		})
		if err != nil {
			t.Fatal(err)
		}
		for range each {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.MessagesWritten != each {
			t.Fatalf("round %d: Close left %d of %d messages unwritten (first error: %v)", round, each-int(st.MessagesWritten), each, failure.Load())
		}
	}
	eventually(t, "every message", func() bool { return got.Load() == rounds*each })
}
