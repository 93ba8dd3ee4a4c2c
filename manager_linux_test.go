package buffstreams_test

import (
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// TestManagerCloseDuringDial checks that a Dial overtaken by Manager.Close
// fails and does not take the place of a Dial started after Close.
func TestManagerCloseDuringDial(t *testing.T) {
	b := newBlackhole(t)
	b.fill(t)
	m := bs.NewManager()
	t.Cleanup(func() { m.Close() })
	first := make(chan error, 1)
	go func() { first <- m.Dial(&bs.TCPConnConfig{Address: b.addr}) }()
	waitBlocked(t, "(*TCPConn).dial")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	before := census()
	go func() { second <- m.Dial(&bs.TCPConnConfig{Address: b.addr}) }()
	waitNewBlocked(t, before, "(*TCPConn).dial")
	b.drain(t)
	for _, tc := range []struct {
		name string
		ch   chan error
		ok   bool
	}{{"dial before Close", first, false}, {"dial after Close", second, true}} {
		select {
		case err := <-tc.ch:
			if (err == nil) != tc.ok {
				t.Errorf("%s = %v", tc.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still dialing", tc.name)
		}
	}
	if m.Writer(b.addr) == nil {
		t.Error("the Dial after Close left no connection")
	}
}
