package buffstreams_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestRead reads messages that arrive one byte at a time and in bulk. Over
// net.Pipe each Write of the peer is one read of the connection, so the
// first 8 bytes do arrive one at a time.
func TestRead(t *testing.T) {
	a, nc := net.Pipe()
	c := apiWrap(t, a, &bs.TCPConnConfig{Framing: bs.Fixed2})
	stream := []byte("\x00\x05hello\x00\x00\x00\x05world\x00\x03abc")
	go func() {
		defer nc.Close()
		for i := range stream[:8] {
			if _, err := nc.Write(stream[i : i+1]); err != nil {
				return
			}
		}
		nc.Write(stream[8:]) // a failure shows as a short read below
	}()
	buf := make([]byte, 16)
	for _, want := range []string{"hello", "", "world"} {
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("Read = %q, %v; want %q", buf[:n], err, want)
		}
	}
	// Too short a buffer keeps the message for the next Read.
	if n, err := c.Read(buf[:2]); n != 0 || err != io.ErrShortBuffer {
		t.Fatalf("short Read = %d, %v; want io.ErrShortBuffer", n, err)
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("Read = %q, %v; want abc", buf[:n], err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("Read at the end = %v, want io.EOF", err)
	}
	if st := c.Stats(); st.MessagesRead != 4 || st.BytesRead != 13 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReadBadInput checks that Read refuses oversized and malformed frames
// with errors callers can test.
func TestReadBadInput(t *testing.T) {
	rl := newRawListener(t)
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"\x80\x80\x02", bs.ErrMessageTooLarge},
		{"\x01\x00\x00", bs.ErrMalformedHeader},
		{"\xdc\x01\x00short", io.ErrUnexpectedEOF},
	} {
		c := dialAddr(t, rl.Addr().String(), bs.TCPConnConfig{})
		nc := rl.accept(t)
		if _, err := nc.Write([]byte(tc.in)); err != nil {
			t.Fatal(err)
		}
		nc.Close()
		if _, err := c.Read(make([]byte, 4096)); !errors.Is(err, tc.want) {
			t.Errorf("Read(% x) error = %v, want %v", tc.in, err, tc.want)
		}
	}
}

// TestReconnectAfterServerRestart writes to a listener, restarts it on the
// same port, and checks that Write dials again after it failed.
func TestReconnectAfterServerRestart(t *testing.T) {
	s := newSink()
	cfg := bs.TCPListenerConfig{Address: "127.0.0.1:0", Callback: s.callback}
	l := listen(t, cfg)
	addr := l.Addr().String()
	c := dialAddr(t, addr, bs.TCPConnConfig{})
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	s.wait(t, 1)
	l.Close()

	// Writes fail once the kernel has learned that the peer is gone; the
	// first ones after Close may still be accepted into the send buffer.
	eventually(t, "a failed Write to the closed server", func() bool {
		_, err := c.Write([]byte("lost"))
		return err != nil
	})

	cfg.Address = addr
	listen(t, cfg)
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatalf("Write after the restart: %v", err)
	}
	got := s.wait(t, 2)
	if string(got[len(got)-1]) != "after" {
		t.Fatalf("last message %q, want after", got[len(got)-1])
	}
	if st := c.Stats(); st.Reconnects != 1 || st.WriteErrors == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReopenAfterFailedWrite checks that Reopen dials even when a failed
// Write already closed the socket (BuffStreams 2.0 returned early).
func TestReopenAfterFailedWrite(t *testing.T) {
	rl := newRawListener(t)
	c := dialAddr(t, rl.Addr().String(), bs.TCPConnConfig{})
	first := rl.accept(t)
	first.(*net.TCPConn).SetLinger(0)
	first.Close() // reset: the next writes fail
	eventually(t, "a failed write", func() bool {
		_, err := c.Write([]byte("x"))
		return err != nil
	})
	if err := c.Reopen(); err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	second := rl.accept(t)
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(second, buf); err != nil || string(buf[3:]) != "again" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// TestCloseAndReopen checks Write and Read after Close, a second Close, and
// Reopen undoing Close.
func TestCloseAndReopen(t *testing.T) {
	rl := newRawListener(t)
	c := dialAddr(t, rl.Addr().String(), bs.TCPConnConfig{})
	rl.accept(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Reopen(); err != nil {
		t.Fatal(err)
	}
	rl.accept(t)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("Write after Reopen: %v", err)
	}
}

// TestCloseUnblocksRead checks that Close ends a Read waiting for data.
func TestCloseUnblocksRead(t *testing.T) {
	rl := newRawListener(t)
	c := dialAddr(t, rl.Addr().String(), bs.TCPConnConfig{})
	rl.accept(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	waitBlocked(t, "(*TCPConn).Read", "IO wait")
	select {
	case err := <-done:
		t.Fatalf("Read returned %v before Close", err)
	default:
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
}

func TestDialErrors(t *testing.T) {
	if _, err := bs.DialTCP(nil); !errors.Is(err, bs.ErrInvalidConfig) {
		t.Errorf("nil config: %v", err)
	}
	if _, err := bs.DialTCP(&bs.TCPConnConfig{}); !errors.Is(err, bs.ErrInvalidConfig) {
		t.Errorf("no address: %v", err)
	}
	if _, err := bs.DialTCP(&bs.TCPConnConfig{Address: "127.0.0.1:1", MaxMessageSize: -5}); !errors.Is(err, bs.ErrInvalidConfig) {
		t.Errorf("negative max: %v", err)
	}
	// A port nobody listens on: bind one and close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr}); err == nil {
		t.Error("dialing a closed port succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bs.DialTCPContext(ctx, &bs.TCPConnConfig{Address: addr}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// TestReadInterruptedByReopen checks that a Read cut short by Reopen does not
// report the connection as closed, and that the next Read uses the new one.
func TestReadInterruptedByReopen(t *testing.T) {
	rl := newRawListener(t)
	c := dialAddr(t, rl.Addr().String(), bs.TCPConnConfig{Framing: bs.Fixed2})
	rl.accept(t)
	read := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 8)); read <- err }()
	waitBlocked(t, "(*TCPConn).Read", "IO wait")
	if err := c.Reopen(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if err == nil || errors.Is(err, net.ErrClosed) {
			t.Fatalf("interrupted Read = %v, want an error not matching net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read not interrupted by Reopen")
	}
	second := rl.accept(t)
	if _, err := second.Write([]byte("\x00\x02hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("Read after Reopen = %q, %v", buf[:n], err)
	}
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

// TestDialTimeout checks that DialTimeout bounds the dial and the TLS
// handshake, and ReadTimeout a Read.
func TestDialTimeout(t *testing.T) {
	leakCheck(t)
	const timeout = 200 * time.Millisecond
	start := time.Now()
	_, err := bs.DialTCP(&bs.TCPConnConfig{Address: "127.0.0.1:1", DialTimeout: timeout,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial that hangs: %v, want context.DeadlineExceeded", err)
	}
	within(t, "the dial that hangs", time.Since(start), timeout, timeout+5*time.Second)

	peer := newStallPeer(t) // accepts, never answers the ClientHello
	start = time.Now()
	_, err = bs.DialTCP(&bs.TCPConnConfig{Address: peer.addr(), DialTimeout: timeout, TLSConfig: &tls.Config{}})
	if err == nil || !isTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("TLS handshake with a silent peer: %v, want a timeout", err)
	}
	within(t, "the handshake that hangs", time.Since(start), timeout, timeout+5*time.Second)

	c := dialAddr(t, peer.addr(), bs.TCPConnConfig{ReadTimeout: timeout})
	start = time.Now()
	if _, err := c.Read(make([]byte, 16)); !isTimeout(err) {
		t.Errorf("Read from a silent peer: %v, want a timeout", err)
	}
	within(t, "the Read", time.Since(start), timeout, timeout+5*time.Second)
}

// TestDialAckListenerHangsUp dials, again and again, a listener that
// accepts the session and hangs up at once: the reader of
// acknowledgements fails while DialTCP is still returning. The connection
// must forget the dead socket, and the race detector must find no access
// to it outside the connection's lock.
func TestDialAckListenerHangsUp(t *testing.T) {
	leakCheck(t)
	addr := fakeAckListener(t, func(nc net.Conn) { nc.Write(acceptAnswer(0)) })
	for range 20 {
		c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, Acks: &bs.AckConfig{}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		eventually(t, "the dead socket forgotten", func() bool { return c.LocalAddr() == nil })
		c.Close()
	}
}

// TestDialAddresses checks that a dial tries the addresses in order and
// takes the first that answers, from Addresses or from Resolve, and that
// it names every address's failure when none answers.
func TestDialAddresses(t *testing.T) {
	leakCheck(t)
	s := newSink()
	l := listen(t, bs.TCPListenerConfig{Callback: s.callback})
	down := closedAddr(t)
	for _, tc := range []struct {
		name string
		cfg  bs.TCPConnConfig
	}{
		{"Addresses", bs.TCPConnConfig{Address: down, Addresses: []string{down, l.Addr().String()}}},
		{"Addresses only", bs.TCPConnConfig{Addresses: []string{down, l.Addr().String()}}},
		{"Resolve", bs.TCPConnConfig{Address: "ignored:1", Resolve: func(context.Context) ([]string, error) {
			return []string{down, l.Addr().String()}, nil
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.len()
			c, err := bs.DialTCP(&tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			s.wait(t, before+1)
			if got, want := c.RemoteAddr().String(), l.Addr().String(); got != want {
				t.Fatalf("connected to %s, want %s", got, want)
			}
		})
	}

	down2 := closedAddr(t)
	_, err := bs.DialTCP(&bs.TCPConnConfig{Address: down, Addresses: []string{down2}})
	if err == nil || !strings.Contains(err.Error(), down) || !strings.Contains(err.Error(), down2) {
		t.Fatalf("DialTCP to two closed ports: %v; want an error naming both", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("DialTCP to two closed ports: %v; want it to match ECONNREFUSED", err)
	}
	boom := errors.New("boom")
	_, err = bs.DialTCP(&bs.TCPConnConfig{Resolve: func(context.Context) ([]string, error) { return nil, boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("DialTCP with a failing Resolve: %v; want it to wrap its error", err)
	}
	_, err = bs.DialTCP(&bs.TCPConnConfig{Resolve: func(context.Context) ([]string, error) { return nil, nil }})
	if err == nil {
		t.Fatal("DialTCP with a Resolve that returns no address succeeded")
	}
}

// closedAddr returns a loopback address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestDialMovesOnAtGoaway checks that a connection whose listener said
// goaway dials the next address first, even though the first one would
// still answer.
func TestDialMovesOnAtGoaway(t *testing.T) {
	leakCheck(t)
	var accepted atomic.Int32
	first := fakeAckListener(t, func(nc net.Conn) {
		accepted.Add(1)
		nc.Write(acceptAnswer(0))
		io.ReadFull(nc, make([]byte, 3+5)) // "hello" with the 3-byte header
		nc.Write(record(0x12, 1))          // goaway, after acknowledging it
		io.Copy(io.Discard, nc)
	})
	s := newSink()
	second := listen(t, bs.TCPListenerConfig{Callback: s.callback, Acks: &bs.AckConfig{}})
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: first, Addresses: []string{second.Addr().String()},
		Retry: &bs.RetryPolicy{InitialBackoff: time.Millisecond}, Acks: &bs.AckConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got := s.wait(t, 1)
	if string(got[0]) != "again" || accepted.Load() != 1 {
		t.Fatalf("the second listener got %q, the first accepted %d connections; want \"again\" and 1", got, accepted.Load())
	}
}

// TestDialFailoverAcrossKill writes numbered messages with acknowledged
// delivery to two listener processes, given as Address and Addresses,
// kills the first with SIGKILL mid-stream, and checks that the
// connection moves to the second and replays its window there. Without a
// shared SessionStore every message arrives at least once, and the
// duplicates, counted, are no more than the window holds; with one (a
// file both processes commit to with each Save), every message is
// committed exactly once.
func TestDialFailoverAcrossKill(t *testing.T) {
	switch runtime.GOOS {
	case "js", "wasip1", "ios":
		t.Skipf("no child processes on %s", runtime.GOOS)
	}
	leakCheck(t)
	for _, tc := range []struct {
		name  string
		store bool
	}{{"at-least-once", false}, {"shared store", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const (
				n      = 20000
				size   = 32
				window = 64 << 10
			)
			dir := t.TempDir()
			store := filepath.Join(dir, "store")
			var env []string
			if tc.store {
				env = append(env, ackChildStoreEnv+"="+store)
			}
			rec1, rec2 := filepath.Join(dir, "first"), filepath.Join(dir, "second")
			first := startAckChild(t, rec1, "127.0.0.1:0", env...)
			second := startAckChild(t, rec2, "127.0.0.1:0", env...)
			var failed atomic.Int64
			c, err := bs.DialTCP(&bs.TCPConnConfig{
				Address:   first.addr,
				Addresses: []string{second.addr},
				Retry:     &bs.RetryPolicy{MaxAttempts: 100, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
				Acks:      &bs.AckConfig{Window: window},
				OnWriteError: func([]byte, error) {
					failed.Add(1)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			killed, wrote := make(chan struct{}), make(chan error, 1)
			go func() {
				msg := make([]byte, size)
				for i := range n {
					if i == 2*n/3 {
						<-killed
					}
					binary.BigEndian.PutUint64(msg, uint64(i))
					if _, err := c.Write(msg); err != nil {
						wrote <- fmt.Errorf("message %d: %w", i, err)
						return
					}
				}
				wrote <- nil
			}()
			eventually(t, "a third of the messages acknowledged", func() bool { return c.Stats().MessagesAcked >= n/3 })
			first.stop()
			close(killed)
			select {
			case err := <-wrote:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the writer did not finish within 60 s")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			st := c.Stats()
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := second.end(); err != nil {
				t.Errorf("the second listener process: %v", err)
			}
			if first.complained() || second.complained() {
				t.Error("a listener process reported a race or a panic")
			}
			if st.MessagesAcked != n || failed.Load() != 0 || st.Reconnects == 0 {
				t.Fatalf("acked %d, failed %d, reconnects %d; want %d, 0, at least 1", st.MessagesAcked, failed.Load(), st.Reconnects, n)
			}

			if tc.store {
				ids := readAckRecord(t, store)[1:] // after the position
				for i, id := range ids {
					if id != uint64(i) {
						t.Fatalf("the store's record %d is message %d; want every message once, in order", i, id)
					}
				}
				if len(ids) != n {
					t.Fatalf("the store committed %d messages; want %d", len(ids), n)
				}
				return
			}
			ids1, ids2 := readAckRecord(t, rec1), readAckRecord(t, rec2)
			checkEveryOnce(t, n, ids1, ids2)
			dups := len(ids1) + len(ids2) - n
			t.Logf("first listener: %d records, second: %d; %d duplicates", len(ids1), len(ids2), dups)
			if most := window / (size + 16); dups > most {
				t.Fatalf("%d duplicates; the replay window holds at most %d messages", dups, most)
			}
		})
	}
}

// TestDialMovesOnWhenSilent checks that a connection whose listener went
// silent dials the next address first, even though the first one (a
// proxy that froze its connections but passes new ones) would still
// answer, and that the session's messages arrive exactly once.
func TestDialMovesOnWhenSilent(t *testing.T) {
	leakCheck(t)
	oc := newOrderCheck()
	l := listen(t, bs.TCPListenerConfig{Acks: &bs.AckConfig{}, Callback: oc.callback})
	px := newProxy(t, l.Addr().String())
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: px.addr(), Addresses: []string{l.Addr().String()},
		Retry: ackRetry(), Acks: &bs.AckConfig{HeartbeatTimeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 100
	for i := range n {
		if i == n/2 {
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			px.freeze()
		}
		if _, err := c.Write(numbered(0, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := c.RemoteAddr().String(), l.Addr().String(); got != want || c.Stats().SilentPeers == 0 {
		t.Fatalf("after the proxy froze: connected to %s with %d silent peers; want %s and at least 1", got, c.Stats().SilentPeers, want)
	}
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if len(oc.bad) > 0 || oc.total != n {
		t.Fatalf("delivered %d, problems %v; want %d in order, once each", oc.total, oc.bad, n)
	}
}
