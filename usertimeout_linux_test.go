package buffstreams

import (
	"syscall"
	"testing"
	"time"
)

// TestUserTimeout checks that a listener sets TCP_USER_TIMEOUT on the
// socket of a session to the heartbeat timeout the dialer's hello carries,
// and leaves it alone when the dialer turned heartbeats off.
func TestUserTimeout(t *testing.T) {
	for _, c := range []struct {
		set  time.Duration
		want int
	}{{700 * time.Millisecond, 700}, {0, 5000}, {-1, 0}} {
		got := make(chan int, 1)
		l, err := ListenTCP(TCPListenerConfig{Address: "127.0.0.1:0", Acks: &AckConfig{},
			ConnCallback: func(conn *TCPConn, _ []byte) error {
				v := -1
				if rc := rawTCP(conn.current()); rc != nil {
					rc.Control(func(fd uintptr) {
						v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout)
					})
				}
				got <- v
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.StartListeningAsync(); err != nil {
			t.Fatal(err)
		}
		conn, err := DialTCP(&TCPConnConfig{Address: l.Addr().String(), Acks: &AckConfig{HeartbeatTimeout: c.set}})
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case v := <-got:
			if v != c.want {
				t.Errorf("HeartbeatTimeout %v: TCP_USER_TIMEOUT %d ms on the listener's socket, want %d", c.set, v, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the callback was not called")
		}
		conn.Close()
		l.Close()
	}
}
