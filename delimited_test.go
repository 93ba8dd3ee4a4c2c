package buffstreams_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	bs "github.com/buffstreams/buffstreams"
)

// TestDelimitedRoundTrip sends text messages in each delimited framing over
// a real socket and checks that each arrives whole and in order, that a
// payload holding the delimiter is refused before anything is sent, and
// that a line longer than MaxMessageSize closes the connection as bad input.
func TestDelimitedRoundTrip(t *testing.T) {
	for _, fr := range delimited {
		t.Run(fr.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			l := listen(t, bs.TCPListenerConfig{Framing: fr.f, MaxMessageSize: 64, Callback: func(p []byte) error {
				mu.Lock()
				got = append(got, string(p))
				mu.Unlock()
				return nil
			}})
			var failed []string
			c := dial(t, l, bs.TCPConnConfig{Framing: fr.f, MaxMessageSize: 64, OnWriteError: func(msg []byte, err error) {
				failed = append(failed, string(msg))
			}})
			var want []string
			for i := range 200 {
				msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i%40))
				if i%50 == 0 {
					msg = "" // empty messages are frames of the delimiter alone
				}
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				want = append(want, msg)
			}
			inside := []byte("before" + delimOf(t, fr.f) + "after")
			if _, err := c.Write(inside); !errors.Is(err, bs.ErrDelimiterInPayload) {
				t.Fatalf("Write of a payload holding the delimiter: %v, want ErrDelimiterInPayload", err)
			}
			if len(failed) != 1 || failed[0] != string(inside) {
				t.Fatalf("OnWriteError got %q, want the refused payload once", failed)
			}
			if _, err := c.Write([]byte("last")); err != nil {
				t.Fatal(err)
			}
			want = append(want, "last")
			eventually(t, "every message", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) >= len(want)
			})
			mu.Lock()
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("got %q\nwant %q", got, want)
			}
			mu.Unlock()

			// A raw peer sending 65 bytes without a delimiter exceeds the
			// limit of 64 and is closed.
			nc := rawDial(t, l.Addr())
			if _, err := nc.Write([]byte(strings.Repeat("y", 65+len(delimOf(t, fr.f))))); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the long line counted as bad input", func() bool { return l.Stats().BadInput == 1 })
		})
	}
}

// delimOf returns the delimiter of a delimited framing, from its name.
func delimOf(t *testing.T, f bs.Framing) string {
	t.Helper()
	name := f.String()
	if name == "lines" {
		return "\n"
	}
	g, err := bs.ParseFraming(name, 0)
	if err != nil || g.String() != name {
		t.Fatalf("framing %q does not parse back: %v", name, err)
	}
	for _, d := range []string{"\r\n", "\x00", "\n"} {
		if h, _ := bs.Delimited([]byte(d)); h.String() == name {
			return d
		}
	}
	t.Fatalf("unknown delimiter in %q", name)
	return ""
}
