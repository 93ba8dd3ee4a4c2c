//go:build linux

package buffstreams

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// acceptAll listens on loopback until the test ends, and returns the
// address and a channel that receives each connection accepted.
func acceptAll(t *testing.T) (string, <-chan *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan *net.TCPConn, 8)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			select {
			case got <- nc.(*net.TCPConn):
			default:
				nc.Close()
			}
		}
	}()
	return ln.Addr().String(), got
}

// tallyFD returns the descriptor the tally writes on directly, or -1.
func tallyFD(tl *tally) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.fd
}

// ended reports whether no write can reach the socket of tl through its
// descriptor any more: the tally is sealed or retired.
func ended(tl *tally) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.sealed || tl.fd < 0
}

// TestTallyDescriptor checks which sockets are written on their descriptor
// directly: those the connection dialed, and never one the caller handed
// to NewConn, which the caller may close while the connection writes.
func TestTallyDescriptor(t *testing.T) {
	addr, _ := acceptAll(t)
	c, err := DialTCP(&TCPConnConfig{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tl := c.tally.Load()
	want := -2
	tl.rc.Control(func(fd uintptr) { want = int(fd) })
	if got := tallyFD(tl); got != want {
		t.Errorf("dialed: the tally writes on descriptor %d, want the socket's, %d", got, want)
	}

	addr, _ = acceptAll(t)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewConn(nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if tl := w.tally.Load(); tl == nil || tl.rc == nil {
		t.Fatal("NewConn over plain TCP: no counted tally")
	} else if got := tallyFD(tl); got != -1 {
		t.Errorf("NewConn: the tally writes on descriptor %d, want none (-1)", got)
	}
}

// TestTallyEndsBeforeSocket checks, for each way a dialed socket ends,
// that its tally is sealed or retired once the socket is closed, so that no
// write can land on its descriptor after the number is reused: Close, a
// Reopen, a write that fails after the peer reset the connection, and a
// new socket adopted while the old tally is still open.
func TestTallyEndsBeforeSocket(t *testing.T) {
	dial := func(t *testing.T) (*TCPConn, *net.TCPConn) {
		addr, peers := acceptAll(t)
		c, err := DialTCP(&TCPConnConfig{Address: addr, Framing: Fixed4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, <-peers
	}
	t.Run("Close", func(t *testing.T) {
		c, _ := dial(t)
		tl := c.tally.Load()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if !ended(tl) {
			t.Error("the tally is still open after Close")
		}
	})
	t.Run("Reopen", func(t *testing.T) {
		c, _ := dial(t)
		tl := c.tally.Load()
		if err := c.Reopen(); err != nil {
			t.Fatal(err)
		}
		if !ended(tl) {
			t.Error("the old socket's tally is still open after Reopen")
		}
	})
	t.Run("peer reset", func(t *testing.T) {
		c, peer := dial(t)
		tl := c.tally.Load()
		peer.SetLinger(0)
		peer.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := c.Write([]byte("x")); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("Writes to a reset peer kept succeeding")
			}
		}
		if !ended(tl) {
			t.Error("the tally is still open after a write failed on a reset socket")
		}
	})
	t.Run("adopt", func(t *testing.T) {
		c, _ := dial(t)
		tl := c.tally.Load()
		addr, _ := acceptAll(t)
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		c.mu.Lock()
		old := c.nc
		c.adopt(nc)
		c.mu.Unlock()
		defer old.Close()
		if got := tallyFD(tl); got != -1 {
			t.Errorf("the replaced tally still writes on descriptor %d", got)
		}
	})
}

// TestDirectWriteWaitsForRoom writes, on a dialed socket, far more than the
// two sockets hold to a peer that reads nothing until a write has found the
// socket full: the write made on the descriptor hands the rest to the
// poller, which waits for room, and every frame arrives once, in order.
func TestDirectWriteWaitsForRoom(t *testing.T) {
	addr, peers := acceptAll(t)
	c, err := DialTCP(&TCPConnConfig{Address: addr, Framing: Fixed4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-peers
	tl := c.tally.Load()
	tl.rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096) })

	const n, size = 2048, 1020 // 2 MiB of frames
	wrote := make(chan error, 1)
	go func() {
		for i := range n {
			m := make([]byte, size)
			binary.BigEndian.PutUint32(m, uint32(i))
			if _, err := c.Write(m); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	// Wait, without reading, until a write found the socket full.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tl.mu.Lock()
		waits := tl.waits
		tl.mu.Unlock()
		if waits > 0 {
			break
		}
		select {
		case err := <-wrote:
			t.Fatalf("every Write returned (%v) before one found the socket full", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no write found the socket full within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	frame := make([]byte, 4+size)
	for i := range n {
		if _, err := io.ReadFull(peer, frame); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if l := binary.BigEndian.Uint32(frame); l != size {
			t.Fatalf("frame %d: header %d, want %d", i, l, size)
		}
		if seq := binary.BigEndian.Uint32(frame[4:]); seq != uint32(i) || !bytes.Equal(frame[8:], make([]byte, size-4)) {
			t.Fatalf("frame %d: carries message %d", i, seq)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().MessagesWritten; got != n {
		t.Errorf("MessagesWritten = %d, want %d", got, n)
	}
}
