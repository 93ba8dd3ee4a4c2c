package buffstreams_test

// Protocol sniffing: a peer whose first frame fails is named in the error
// and the log when its bytes are those of TLS, HTTP, SSH or another framing.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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
		{"uvarint client to fixed4", bs.Fixed4, framedPeer(bs.Uvarint), "uvarint framing"},
		{"buffstreams client to fixed4", bs.Fixed4, framedPeer(nil), "buffstreams framing"},
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

// framed returns msgs as a TCPConn with framing f and MaxMessageSize max
// writes them.
func framed(t testing.TB, f bs.Framing, max int, msgs ...[]byte) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	c, err := bs.NewConn(a, &bs.TCPConnConfig{Framing: f, MaxMessageSize: max})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte, 1)
	go func() {
		p, _ := io.ReadAll(b)
		out <- p
	}()
	for _, m := range msgs {
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	return <-out
}

// connEnd is one call of OnConnEnd.
type connEnd struct {
	err       error
	delivered uint64 // messages handed to the callback
}

// framingServer is a listener with framing f and MaxMessageSize max that
// reports every connection's end on the returned channel.
func framingServer(t testing.TB, f bs.Framing, max int) (*bs.TCPListener, chan connEnd) {
	ends := make(chan connEnd, 1)
	l := listen(t, bs.TCPListenerConfig{Framing: f, MaxMessageSize: max, Callback: func([]byte) error { return nil },
		OnConnEnd: func(conn *bs.TCPConn, err error) { ends <- connEnd{err, conn.Stats().MessagesRead} }})
	return l, ends
}

// sendAndEnd sends p on a new connection to l in one write, closes its
// sending side, and returns how the listener ended the connection.
func sendAndEnd(t testing.TB, l *bs.TCPListener, ends chan connEnd, p []byte) connEnd {
	t.Helper()
	nc := rawDial(t, l.Addr())
	if _, err := nc.Write(p); err != nil {
		t.Fatal(err)
	}
	nc.(*net.TCPConn).CloseWrite()
	select {
	case e := <-ends:
		nc.Close()
		return e
	case <-time.After(20 * time.Second):
		t.Fatal("the connection did not end")
	}
	return connEnd{}
}

// threeNotes are the messages the framing tests send: three of 110 bytes,
// the size of a small protobuf message.
func threeNotes() [][]byte { return [][]byte{payload(7, 110), payload(8, 110), payload(9, 110)} }

// TestSniffFramingPairs sends messages in one framing to a listener that
// expects another and checks the diagnosis: byte-order, header-width and
// MaxMessageSize mismatches are named as such.
func TestSniffFramingPairs(t *testing.T) {
	for _, tc := range []struct {
		client    bs.Framing
		clientMax int
		server    bs.Framing
		serverMax int
		want      []string
	}{
		// Byte order.
		{bs.Fixed4LE, 0, bs.Fixed4, 0, []string{"little-endian", "fixed4le framing, not fixed4"}},
		{bs.Fixed4, 0, bs.Fixed4LE, 0, []string{"big-endian", "fixed4 framing, not fixed4le"}},
		{bs.Fixed2LE, 0, bs.Fixed2, 0, []string{"little-endian", "fixed2le framing, not fixed2"}},
		{bs.Fixed2, 0, bs.Fixed2LE, 0, []string{"big-endian", "fixed2 framing, not fixed2le"}},
		{bs.Fixed8LE, 0, bs.Fixed8, 0, []string{"little-endian", "fixed8le framing, not fixed8"}},
		{bs.Fixed8, 0, bs.Fixed8LE, 0, []string{"big-endian", "fixed8 framing, not fixed8le"}},
		{bs.Fixed4LE, 0, bs.Fixed4Inclusive, 0, []string{"little-endian", "fixed4le framing, not fixed4incl"}},
		// MaxMessageSize of the BuffStreams framing: docs/wire.md's case, a
		// server with 65536 and a client with the default, and others.
		{nil, 0, nil, 65536, []string{"different MaxMessageSize", "its 3-byte headers mean a MaxMessageSize of 256 to 65535, ours is 65536 (4-byte headers)"}},
		{nil, 255, nil, 0, []string{"different MaxMessageSize", "its 2-byte headers mean a MaxMessageSize of 1 to 255, ours is 4096 (3-byte headers)"}},
		{nil, 65536, nil, 1 << 24, []string{"different MaxMessageSize", "its 4-byte headers"}},
		// Width of a fixed length.
		{bs.Fixed2, 0, bs.Fixed4, 0, []string{"fixed2 framing, with a 2-byte length, not fixed4, with a 4-byte length"}},
		{bs.Fixed4, 0, bs.Fixed8, 0, []string{"fixed4 framing, with a 4-byte length, not fixed8, with an 8-byte length"}},
		{bs.Fixed3, 0, bs.Fixed4, 0, []string{"fixed3 framing, with a 3-byte length"}},
		{bs.Fixed2LE, 0, bs.Fixed4LE, 0, []string{"fixed2le framing, with a 2-byte length"}},
		{bs.Fixed8LE, 0, bs.Fixed4, 0, []string{"fixed8le framing, with an 8-byte length"}},
		// Unrelated framings.
		{bs.Uvarint, 0, bs.Fixed4, 0, []string{"uvarint framing (or fixed1, which frames these messages alike), not fixed4"}},
		{bs.Fixed1, 0, nil, 0, []string{"(or fixed1", "not buffstreams"}},
		{nil, 0, bs.Fixed4, 0, []string{"buffstreams framing (with a MaxMessageSize of 256 to 65535), not fixed4"}},
		{bs.Fixed4, 0, nil, 65536, []string{"fixed4 framing, not buffstreams"}},
		{bs.Fixed2, 0, nil, 0, []string{"fixed2 framing, not buffstreams"}},
		{bs.Fixed4Inclusive, 0, bs.Fixed8, 0, []string{"fixed4incl framing, with a 4-byte length"}},
	} {
		name := fmt.Sprintf("%s(%d) to %s(%d)", orDefault(tc.client), tc.clientMax, orDefault(tc.server), tc.serverMax)
		t.Run(name, func(t *testing.T) {
			l, ends := framingServer(t, tc.server, tc.serverMax)
			e := sendAndEnd(t, l, ends, framed(t, tc.client, tc.clientMax, threeNotes()...))
			if !errors.Is(e.err, bs.ErrWrongProtocol) {
				t.Fatalf("connection ended with %v, want ErrWrongProtocol", e.err)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.err.Error(), w) {
					t.Errorf("%v\ndoes not say %q", e.err, w)
				}
			}
		})
	}
}

func orDefault(f bs.Framing) string {
	if f == nil {
		return "buffstreams"
	}
	return f.String()
}

// sniffed are the length-prefixed framings of TestSniffFramingMatrix, with
// the BuffStreams framing at each header width and the text that names
// each.
var sniffed = []struct {
	name string
	f    bs.Framing
	max  int
	says string // how the diagnosis names it
}{
	{"uvarint", bs.Uvarint, 0, " uvarint framing"},
	{"fixed1", bs.Fixed1, 0, "fixed1"},
	{"fixed2", bs.Fixed2, 0, " fixed2 framing"},
	{"fixed3", bs.Fixed3, 0, " fixed3 framing"},
	{"fixed4", bs.Fixed4, 0, " fixed4 framing"},
	{"fixed8", bs.Fixed8, 0, " fixed8 framing"},
	{"fixed2le", bs.Fixed2LE, 0, " fixed2le framing"},
	{"fixed4le", bs.Fixed4LE, 0, " fixed4le framing"},
	{"fixed8le", bs.Fixed8LE, 0, " fixed8le framing"},
	{"fixed4incl", bs.Fixed4Inclusive, 0, " fixed4incl framing"},
	{"bs2", bs.BuffStreamsFraming(255), 255, "MaxMessageSize of 1 to 255"},
	{"bs3", bs.BuffStreamsFraming(4096), 4096, "MaxMessageSize of 256 to 65535"},
	{"bs4", bs.BuffStreamsFraming(65536), 65536, "MaxMessageSize of 65536 to 16777215"},
	{"bs5", bs.BuffStreamsFraming(1 << 24), 1 << 24, "MaxMessageSize of 16777216 to"},
}

// unsniffable lists, for threeNotes, the pairs "client server" in which
// the server reads the client's first frame without an error, so there is
// no failure to explain; see the comment at the top of sniff.go.
var unsniffable = map[string]bool{}

func init() {
	for client, servers := range map[string]string{
		"uvarint":    "fixed1",
		"fixed1":     "uvarint",
		"fixed2":     "fixed1 uvarint",
		"fixed3":     "bs2 fixed1 fixed2 fixed2le uvarint",
		"fixed4":     "bs2 bs3 fixed1 fixed2 fixed2le fixed3 fixed4incl uvarint",
		"fixed8":     "bs2 bs3 bs4 bs5 fixed1 fixed2 fixed2le fixed3 fixed4 fixed4le uvarint",
		"fixed2le":   "bs2 fixed1 uvarint",
		"fixed4le":   "bs2 bs3 bs4 fixed1 fixed2le uvarint",
		"fixed8le":   "bs2 bs3 bs4 bs5 fixed1 fixed2le fixed4le uvarint",
		"fixed4incl": "bs2 bs3 fixed1 fixed2 fixed2le fixed3 fixed4 uvarint",
		"bs2":        "fixed1 uvarint",
		"bs3":        "bs2 fixed1 uvarint",
		"bs4":        "bs2 bs3 fixed1 uvarint",
		"bs5":        "bs2 bs3 bs4 fixed1 uvarint",
	} {
		for _, s := range strings.Fields(servers) {
			unsniffable[client+" "+s] = true
		}
	}
}

// TestSniffFramingMatrix sends threeNotes in every length-prefixed framing
// to a listener of every other one, and checks that the diagnosis names the
// client's framing, except for the pairs listed in unsniffable, where the
// listener must have delivered a (wrong) first message instead.
func TestSniffFramingMatrix(t *testing.T) {
	for _, s := range sniffed {
		t.Run("to "+s.name, func(t *testing.T) {
			l, ends := framingServer(t, s.f, s.max)
			for _, c := range sniffed {
				if c.name == s.name {
					continue
				}
				e := sendAndEnd(t, l, ends, framed(t, c.f, c.max, threeNotes()...))
				pair := c.name + " " + s.name
				switch {
				case unsniffable[pair]:
					if e.delivered == 0 || errors.Is(e.err, bs.ErrWrongProtocol) {
						t.Errorf("%s: ended with %v after %d messages; listed as read without an error", pair, e.err, e.delivered)
					}
				case !errors.Is(e.err, bs.ErrWrongProtocol):
					t.Errorf("%s: ended with %v, want ErrWrongProtocol", pair, e.err)
				case !strings.Contains(e.err.Error(), c.says):
					t.Errorf("%s: %v\ndoes not say %q", pair, e.err, c.says)
				}
			}
		})
	}
}
