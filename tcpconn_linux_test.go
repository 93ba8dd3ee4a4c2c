//go:build linux

package buffstreams_test

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// blackhole is a listening socket on 127.0.0.1 with a backlog of 0 that
// never accepts once its queue is full: further dials to it hang in SYN
// retries, as to an unreachable host.
type blackhole struct {
	fd   int
	addr string
}

func newBlackhole(t *testing.T) *blackhole {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return &blackhole{fd: fd, addr: "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)}
}

// resetFirst accepts the first connection and resets it.
func (b *blackhole) resetFirst(t *testing.T) {
	t.Helper()
	nfd, _, err := syscall.Accept(b.fd)
	if err != nil {
		t.Fatal(err)
	}
	syscall.SetsockoptLinger(nfd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	syscall.Close(nfd)
}

// fill queues connections until a dial times out: from then on dials hang.
func (b *blackhole) fill(t *testing.T) {
	t.Helper()
	for range 64 {
		nc, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond)
		if err != nil {
			return
		}
		t.Cleanup(func() { nc.Close() })
	}
	t.Fatal("the accept queue never filled")
}

// waitFailure writes until the reset connection makes Write fail.
func waitFailure(t *testing.T, c *bs.TCPConn) {
	t.Helper()
	eventually(t, "a failed write", func() bool {
		_, err := c.Write([]byte("x"))
		return err != nil
	})
}

// TestCloseInterruptsRedial checks that Close ends a Write that is dialing
// again, and that a Read after Close does not wait for that dial.
func TestCloseInterruptsRedial(t *testing.T) {
	b := newBlackhole(t)
	c := dialAddr(t, b.addr, bs.TCPConnConfig{})
	b.resetFirst(t)
	b.fill(t)
	waitFailure(t, c)

	done := make(chan error, 1)
	go func() { _, err := c.Write([]byte("y")); done <- err }() // dials again and hangs
	waitBlocked(t, "(*TCPConn).dial")
	if err := c.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write during Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write still dialing 5 s after Close")
	}
	read := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 8)); read <- err }()
	select {
	case err := <-read:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read after Close blocked")
	}
}

// TestCloseDuringReopen checks that a Close while Reopen dials wins: Reopen
// fails, Close returns nil, and the connection stays closed.
func TestCloseDuringReopen(t *testing.T) {
	b := newBlackhole(t)
	c := dialAddr(t, b.addr, bs.TCPConnConfig{})
	b.resetFirst(t)
	b.fill(t)

	done := make(chan error, 1)
	go func() { done <- c.Reopen() }()
	waitBlocked(t, "(*TCPConn).dial")
	if err := c.Close(); err != nil {
		t.Fatalf("Close during Reopen = %v, want nil", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Reopen succeeded although Close was called during it")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Reopen still dialing 5 s after Close")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// drain accepts every queued and future connection until the test ends, so
// hanging dials complete at their next SYN retry.
func (b *blackhole) drain(t *testing.T) {
	go func() {
		for {
			nfd, _, err := syscall.Accept(b.fd)
			if err != nil {
				return
			}
			t.Cleanup(func() { syscall.Close(nfd) })
		}
	}()
	t.Cleanup(func() { syscall.Shutdown(b.fd, syscall.SHUT_RDWR) })
}
