//go:build linux

package buffstreams

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// keepAlive returns whether keep-alive is on for nc and its idle time in
// seconds.
func keepAlive(t *testing.T, nc net.Conn) (on bool, idle int) {
	t.Helper()
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is not a *net.TCPConn", nc)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v, i int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); serr != nil {
			return
		}
		i, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
	})
	if err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return v != 0, i
}

// TestKeepAlive checks the keep-alive settings of dialed and accepted
// sockets: the net package's 15 s by default, the period given, or off.
func TestKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		period time.Duration
		on     bool
		idle   int
	}{
		{"default", 0, true, 15},
		{"7s", 7 * time.Second, true, 7},
		{"off", -1, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepted := make(chan *TCPConn, 1)
			l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0", KeepAlive: tc.period,
				ConnCallback: func(c *TCPConn, _ []byte) error {
					select {
					case accepted <- c:
					default:
					}
					return nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := l.StartListeningAsync(); err != nil {
				t.Fatal(err)
			}
			c, err := DialTCP(&TCPConnConfig{Address: l.Addr().String(), KeepAlive: tc.period})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			var server *TCPConn
			select {
			case server = <-accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("no connection")
			}
			for side, nc := range map[string]net.Conn{"dialed": c.current(), "accepted": server.current()} {
				on, idle := keepAlive(t, nc)
				if on != tc.on || on && idle != tc.idle {
					t.Errorf("%s socket: keep-alive %v, idle %d s; want %v, %d s", side, on, idle, tc.on, tc.idle)
				}
			}
		})
	}
}
