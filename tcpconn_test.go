package buffstreams_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

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
	leakCheck(t)
	cfg.Address = addr
	c, err := bs.DialTCP(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestWireBytes checks the exact bytes Write puts on the wire.
func TestWireBytes(t *testing.T) {
	rl := newRawListener(t)
	hello := []byte("hello world")
	for _, tc := range []struct {
		name string
		cfg  bs.TCPConnConfig
		data []byte
		want string
	}{
		{"buffstreams 2.0, 110 bytes", bs.TCPConnConfig{}, make([]byte, 110), "dc0100" + hex.EncodeToString(make([]byte, 110))},
		{"buffstreams 2.0, max 255", bs.TCPConnConfig{MaxMessageSize: 255}, hello, "1600" + hex.EncodeToString(hello)},
		{"buffstreams 2.0, empty", bs.TCPConnConfig{}, nil, "000000"},
		{"uvarint", bs.TCPConnConfig{Framing: bs.Uvarint}, hello, "0b" + hex.EncodeToString(hello)},
		{"fixed4 (tokio, Netty)", bs.TCPConnConfig{Framing: bs.Fixed4}, hello, "0000000b" + hex.EncodeToString(hello)},
		{"fixed8", bs.TCPConnConfig{Framing: bs.Fixed8}, hello, "000000000000000b" + hex.EncodeToString(hello)},
		{"uvarint, vectored", bs.TCPConnConfig{Framing: bs.Uvarint, MaxMessageSize: 1 << 20}, bytes.Repeat([]byte{7}, 300000), "e0a712" + hex.EncodeToString(bytes.Repeat([]byte{7}, 300000))},
	} {
		c := dialAddr(t, rl.Addr().String(), tc.cfg)
		nc := rl.accept(t)
		if n, err := c.Write(tc.data); err != nil || n != len(tc.data) {
			t.Fatalf("%s: Write = %d, %v; want %d, nil", tc.name, n, err, len(tc.data))
		}
		c.Close()
		got, err := io.ReadAll(nc)
		if err != nil {
			t.Fatal(err)
		}
		if g := hex.EncodeToString(got); g != tc.want {
			t.Errorf("%s: wire bytes %.40s..., want %.40s...", tc.name, g, tc.want)
		}
	}
}

// TestWriteTooLarge checks that an oversized message is refused and that
// nothing of it is sent.
func TestWriteTooLarge(t *testing.T) {
	rl := newRawListener(t)
	for _, tc := range []struct {
		cfg  bs.TCPConnConfig
		size int
	}{
		{bs.TCPConnConfig{}, 4097},
		{bs.TCPConnConfig{}, 2 << 20}, // BuffStreams 2.0 panicked here
		{bs.TCPConnConfig{Framing: bs.Fixed1, MaxMessageSize: 4096}, 256},
		{bs.TCPConnConfig{MaxMessageSize: 100, Framing: bs.Fixed4}, 101},
	} {
		c := dialAddr(t, rl.Addr().String(), tc.cfg)
		nc := rl.accept(t)
		if n, err := c.Write(make([]byte, tc.size)); !errors.Is(err, bs.ErrMessageTooLarge) || n != 0 {
			t.Fatalf("Write(%d bytes) = %d, %v; want ErrMessageTooLarge", tc.size, n, err)
		}
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatalf("the connection is unusable after a refused write: %v", err)
		}
		c.Close()
		got, _ := io.ReadAll(nc)
		if len(got) > 9 {
			t.Fatalf("%d bytes on the wire, want only the small message", len(got))
		}
		if st := c.Stats(); st.WriteErrors != 1 || st.MessagesWritten != 1 {
			t.Fatalf("stats %+v", st)
		}
	}
}

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

// TestWriteAllocs checks that Write allocates nothing, on the copying path
// and on the vectored one.
func TestWriteAllocs(t *testing.T) {
	l := listen(t, bs.TCPListenerConfig{MaxMessageSize: 1 << 20, Callback: func([]byte) error { return nil }})
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 1 << 20})
	for _, n := range []int{110, 4096, 64 << 10} {
		msg := make([]byte, n)
		if _, err := c.Write(msg); err != nil { // allocates the write buffer
			t.Fatal(err)
		}
		var failed error
		a := testing.AllocsPerRun(200, func() {
			if m, err := c.Write(msg); (err != nil || m != n) && failed == nil {
				failed = fmt.Errorf("Write of %d bytes = %d, %v", n, m, err)
			}
		})
		if failed != nil {
			t.Fatal(failed)
		}
		if a != 0 {
			t.Errorf("Write of %d bytes: %.1f allocations, want 0", n, a)
		}
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
