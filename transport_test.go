package buffstreams_test

// The core behaviours over every transport the library runs on (net.Pipe,
// TCP, TLS and a Unix socket): round trips with replies in every framing,
// close semantics, and bad input that closes only its own connection.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// letters returns n bytes of lower-case letters, a payload that holds no
// delimiter of any delimited framing.
func letters(seed, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte('a' + (seed+i)%26)
	}
	return p
}

// TestTransportRoundTrip sends messages of several sizes, up to the limit,
// in every framing; the server replies to each with its reverse, and the
// client checks every reply.
func TestTransportRoundTrip(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		all := append(framings[:len(framings):len(framings)], delimited...)
		for _, fr := range all {
			t.Run(fr.name, func(t *testing.T) {
				e := serveOver(t, tr, bs.TCPListenerConfig{Framing: fr.f,
					ConnCallback: func(conn *bs.TCPConn, p []byte) error {
						r := bytes.Clone(p)
						for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
							r[i], r[j] = r[j], r[i]
						}
						_, err := conn.Write(r)
						return err
					}})
				c := e.conn(t, bs.TCPConnConfig{Framing: fr.f, ReadTimeout: 20 * time.Second})
				buf := make([]byte, c.MaxMessageSize())
				for i, n := range []int{1, 2, 100, 255, c.MaxMessageSize()} {
					n = min(n, c.MaxMessageSize())
					msg := letters(i, n)
					if _, err := c.Write(msg); err != nil {
						t.Fatalf("Write of %d bytes: %v", n, err)
					}
					m, err := c.Read(buf)
					if err != nil {
						t.Fatalf("reply to %d bytes: %v", n, err)
					}
					want := bytes.Clone(msg)
					for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
						want[i], want[j] = want[j], want[i]
					}
					if !bytes.Equal(buf[:m], want) {
						t.Fatalf("reply to %d bytes: got %d bytes %.20q, want %.20q", n, m, buf[:m], want)
					}
				}
				eventually(t, "the messages counted", func() bool { return e.l.Stats().Messages == 5 })
			})
		}
	})
}

// TestTransportClose checks that Close ends a Read that is blocked waiting
// for a message, and that Read and Write after Close return errors matching
// net.ErrClosed.
func TestTransportClose(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		e := serveOver(t, tr, bs.TCPListenerConfig{ConnCallback: apiEcho})
		c := e.conn(t, bs.TCPConnConfig{})
		apiRoundTrip(t, c, 1)
		read := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, c.MaxMessageSize()))
			read <- err
		}()
		waitBlocked(t, "(*TCPConn).Read")
		select {
		case err := <-read:
			t.Fatalf("Read returned %v before Close", err)
		default:
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		select {
		case err := <-read:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read ended by Close = %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Read still blocked 10 s after Close")
		}
		if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
		}
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close = %v, want nil", err)
		}
	})
}

// TestTransportBadInput sends an oversized header and a malformed one: the
// listener closes that connection, counts it as bad input, and goes on
// serving another client.
func TestTransportBadInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		framing bs.Framing
		bytes   []byte
	}{
		{"oversized", bs.Fixed4, []byte{0x7f, 0xff, 0xff, 0xff, 1, 2, 3}},
		{"malformed", nil, []byte("GET / HTTP/1.1\r\n")}, // "G" declares a negative length
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr transport) {
				e := serveOver(t, tr, bs.TCPListenerConfig{Framing: tc.framing, ConnCallback: apiEcho})
				good := e.conn(t, bs.TCPConnConfig{Framing: tc.framing, ReadTimeout: 20 * time.Second})
				apiRoundTrip(t, good, 1)
				bad := e.raw(t)
				// Over net.Pipe a write completes only as the other end
				// reads it, so the listener may close the pipe before it
				// has taken all of the bad bytes.
				if _, err := bad.Write(tc.bytes); err != nil && !errors.Is(err, io.ErrClosedPipe) {
					t.Fatal(err)
				}
				if err := bad.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil && !errors.Is(err, io.ErrClosedPipe) {
					t.Fatal(err)
				}
				// The listener closes the connection, after a refusal that
				// names the bad frame, except for a peer of another
				// protocol, which gets no answer in ours.
				got, err := io.ReadAll(bad)
				if isTimeout(err) {
					t.Fatalf("the bad client read % x, then %v: want its connection closed", got, err)
				}
				refused := len(got) > 10 && bytes.HasPrefix(got, magic) && got[9] == 0x03
				if want := tc.name == "oversized"; refused != want || !want && len(got) > 0 {
					t.Fatalf("the bad client read % x; want a refusal: %v", got, want)
				}
				eventually(t, "the bad connection counted and gone", func() bool {
					st := e.l.Stats()
					return st.BadInput == 1 && st.Active == 1
				})
				apiRoundTrip(t, good, 3)
			})
		})
	}
}
