package buffstreams_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	bs "github.com/buffstreams/buffstreams"
)

// tcpState returns the state of the IPv4 TCP socket bound to local, as
// /proc/net/tcp writes it ("01" is ESTABLISHED), or "" if it is not there.
func tcpState(t *testing.T, local net.Addr) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skip("no /proc/net/tcp")
	}
	a := local.(*net.TCPAddr)
	want := fmt.Sprintf(":%04X", a.Port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) {
			return f[3]
		}
	}
	return ""
}

// TestClosePeerGone checks that Close reports a peer that had closed the
// connection, one that reset it, and a TLS server answering a plain
// client, and reports nothing while the peer is there.
func TestClosePeerGone(t *testing.T) {
	leakCheck(t)
	t.Run("alive", func(t *testing.T) {
		s := newSink()
		l := listen(t, bs.TCPListenerConfig{Callback: s.callback})
		c := dial(t, l, bs.TCPConnConfig{})
		c.Write([]byte("hi"))
		s.wait(t, 1)
		if err := c.Close(); err != nil {
			t.Fatalf("Close = %v with the listener alive", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s := newSink()
		l := listen(t, bs.TCPListenerConfig{Callback: s.callback})
		c := dial(t, l, bs.TCPConnConfig{})
		c.Write([]byte("hi"))
		s.wait(t, 1)
		local := c.LocalAddr()
		l.Close()
		eventually(t, "the peer's FIN", func() bool { return tcpState(t, local) != "01" })
		if err := c.Close(); !errors.Is(err, bs.ErrPeerClosed) {
			t.Fatalf("Close = %v, want ErrPeerClosed", err)
		}
	})
	t.Run("TLS server", func(t *testing.T) {
		p := pki(t)
		s := newSink()
		l := listen(t, bs.TCPListenerConfig{Callback: s.callback, TLSConfig: serverTLS(p.server)})
		c := dial(t, l, bs.TCPConnConfig{})
		local := c.LocalAddr()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the TLS server to close", func() bool { return tcpState(t, local) != "01" })
		err := c.Close()
		if !errors.Is(err, bs.ErrPeerClosed) && !errors.Is(err, bs.ErrWrongProtocol) {
			t.Fatalf("Close = %v, want ErrPeerClosed or ErrWrongProtocol", err)
		}
		if s.len() != 0 {
			t.Fatal("the TLS listener delivered a plain message")
		}
	})
}
