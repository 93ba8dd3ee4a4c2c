package buffstreams_test

// Protocol sniffing: a peer whose first frame fails is named in the error
// and the log when its bytes are those of TLS, HTTP, SSH or another framing.

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestWrongProtocolLogged connects peers speaking something else and checks
// that the listener closes them, counts them in WrongProtocol and BadInput,
// names what they speak in the log, and keeps serving a good client.
func TestWrongProtocolLogged(t *testing.T) {
	httpGet := func(nc net.Conn) { nc.Write([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")) }
	for _, tc := range []struct {
		name    string
		framing bs.Framing
		peer    func(t *testing.T, addr string)
		want    string
	}{
		{"tls.Dial to buffstreams", nil, tlsDialPeer, "speaks TLS"},
		{"tls.Dial to fixed4", bs.Fixed4, tlsDialPeer, "speaks TLS"},
		{"tls.Dial to fixed2", bs.Fixed2, tlsDialPeer, "speaks TLS"},
		{"HTTP GET to buffstreams", nil, rawPeer(httpGet), "speaks HTTP"},
		{"HTTP GET to fixed4", bs.Fixed4, rawPeer(httpGet), "speaks HTTP"},
		{"HTTP GET to fixed8", bs.Fixed8, rawPeer(httpGet), "speaks HTTP"},
		{"HTTP/2 preface to fixed4", bs.Fixed4, rawPeer(func(nc net.Conn) { nc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) }), "speaks HTTP"},
		{"SSH to buffstreams", nil, rawPeer(func(nc net.Conn) { nc.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n")) }), "speaks SSH"},
		{"uvarint client to fixed4", bs.Fixed4, framedPeer(bs.Uvarint), "uvarint framing, not fixed4"},
		{"buffstreams client to fixed4", bs.Fixed4, framedPeer(nil), "buffstreams framing, not fixed4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			var log logBuf
			s := newSink()
			l := listen(t, bs.TCPListenerConfig{Framing: tc.framing, Logger: log.logger(), Callback: s.callback})
			good := dial(t, l, bs.TCPConnConfig{Framing: tc.framing})
			if _, err := good.Write([]byte("before")); err != nil {
				t.Fatal(err)
			}
			tc.peer(t, l.Addr().String())
			eventually(t, "the peer counted", func() bool { return l.Stats().WrongProtocol == 1 })
			if _, err := good.Write([]byte("after")); err != nil {
				t.Fatal(err)
			}
			if got := s.wait(t, 2); len(got) != 2 || string(got[0]) != "before" || string(got[1]) != "after" {
				t.Fatalf("callback got %q, want only the good client's messages", got)
			}
			eventually(t, "the peer gone", func() bool { return l.Stats().Active == 1 })
			if st := l.Stats(); st.BadInput != 1 {
				t.Errorf("stats %+v: want BadInput 1", st)
			}
			out := log.String()
			if !strings.Contains(out, tc.want) || !strings.Contains(out, "bad input") {
				t.Fatalf("log does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestTruncatedWrongProtocol checks that a peer speaking another protocol is
// recognised even when its first bytes are a plausible start of a frame, so
// that only the end of the connection shows the frame cannot be read: an
// HTTP request to a uvarint listener ("G" declares 71 bytes) from a client
// that gives up and closes, and one that waits for an answer until
// ReadTimeout.
func TestTruncatedWrongProtocol(t *testing.T) {
	for _, tc := range []struct {
		name    string
		framing bs.Framing
		close   bool
	}{
		{"uvarint, client closes", bs.Uvarint, true},
		{"fixed1, client closes", bs.Fixed1, true},
		{"uvarint, read timeout", bs.Uvarint, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			var log logBuf
			l := listen(t, bs.TCPListenerConfig{Framing: tc.framing, Logger: log.logger(), ReadTimeout: 200 * time.Millisecond,
				Callback: func([]byte) error { return nil }})
			nc := rawDial(t, l.Addr())
			if _, err := nc.Write([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				nc.(*net.TCPConn).CloseWrite()
			}
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			nc.Read(make([]byte, 1))
			eventually(t, "the connection closed", func() bool { st := l.Stats(); return st.Accepted == 1 && st.Active == 0 })
			if st := l.Stats(); st.WrongProtocol != 1 || !strings.Contains(log.String(), "speaks HTTP") {
				t.Fatalf("stats %+v; log:\n%s\nwant the HTTP client recognised", st, log.String())
			}
		})
	}
}

// tlsDialPeer makes a real TLS handshake attempt, which must fail.
func tlsDialPeer(t *testing.T, addr string) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	nc, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: "localhost"})
	if err == nil {
		nc.Close()
		t.Fatal("TLS handshake with a plaintext listener succeeded")
	}
}

// rawPeer returns a peer that writes with send on a plain TCP connection and
// waits for the server to close it.
func rawPeer(send func(net.Conn)) func(*testing.T, string) {
	return func(t *testing.T, addr string) {
		nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		send(nc)
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Read(make([]byte, 1)); isTimeout(err) {
			t.Fatal("the server did not close the connection")
		}
	}
}

// framedPeer returns a peer that writes a 110-byte message in framing f.
func framedPeer(f bs.Framing) func(*testing.T, string) {
	return func(t *testing.T, addr string) {
		c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr, Framing: f, ReadTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(payload(7, 110)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 200)); isTimeout(err) {
			t.Fatal("the server did not close the connection")
		}
	}
}
