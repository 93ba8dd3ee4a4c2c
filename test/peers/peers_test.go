package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

// testOptions bounds cells by count only: the durations are far longer than
// the counts take.
func testOptions(n uint64) options {
	return options{ctx: context.Background(), d: time.Minute, warm: time.Minute, n: n, timeout: 20 * time.Second}
}

// TestTransports runs every transport for a small count of messages and
// checks that the server counted each one, with its bytes, and that nothing
// was left running.
func TestTransports(t *testing.T) {
	cases := []struct {
		size, conns int
		n           uint64
	}{
		{110, 1, 3000},
		{110, 3, 3000},
		{0, 2, 100},
		{65536, 1, 60},
		{65536, 4, 60},
	}
	for _, tr := range transports {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/size=%d/conns=%d", tr.Name(), c.size, c.conns), func(t *testing.T) {
				r, leaked := runCell(tr, c.size, c.conns, testOptions(c.n))
				if r.Error != "" {
					t.Fatalf("cell failed: %s", r.Error)
				}
				if leaked {
					t.Fatal("goroutines left behind")
				}
				want := c.n / uint64(c.conns) * uint64(c.conns)
				if r.Messages != want || r.Bytes != want*uint64(c.size) {
					t.Fatalf("sent %d messages, %d bytes; want %d, %d", r.Messages, r.Bytes, want, want*uint64(c.size))
				}
				if r.MsgsPerSec <= 0 {
					t.Fatalf("msgs/s = %v", r.MsgsPerSec)
				}
			})
		}
	}
}

func TestLatency(t *testing.T) {
	for _, e := range echoers {
		for _, size := range []int{110, 70000} {
			t.Run(fmt.Sprintf("%s/size=%d", e.Name(), size), func(t *testing.T) {
				l, leaked := runLatency(e, size, 200, testOptions(1))
				if l.Error != "" {
					t.Fatalf("cell failed: %s", l.Error)
				}
				if leaked {
					t.Fatal("goroutines left behind")
				}
				if l.Rounds != 200 || l.P50 <= 0 || l.P99 < l.P50 {
					t.Fatalf("got %+v, want 200 rounds and 0 < p50 <= p99", l)
				}
			})
		}
	}
}

// fakeSession "receives" every message sent, give or take extra once
// anything was sent, and size bytes for each.
type fakeSession struct {
	size  uint64
	extra int64
	sent  atomic.Uint64
}

func (f *fakeSession) Send(_ int, stop *atomic.Bool, limit uint64) (uint64, error) {
	var n uint64
	for n < limit && !stop.Load() {
		n++
	}
	f.sent.Add(n)
	return n, nil
}

func (f *fakeSession) Received() (uint64, uint64) {
	n := f.sent.Load()
	if n > 0 { // miscount what is sent, not what was there before
		n = uint64(int64(n) + f.extra)
	}
	return n, n * f.size
}

func (f *fakeSession) Close() error { return nil }

// TestPhaseCatchesMiscounts proves that a server counting one message too
// many or too few fails the cell.
func TestPhaseCatchesMiscounts(t *testing.T) {
	for _, c := range []struct {
		extra int64
		want  string
	}{
		{0, ""},
		{+1, "server counted 1001 messages"},
		{-1, "timeout: sent 1000 messages, server counted 999"},
	} {
		f := &fakeSession{size: 10, extra: c.extra}
		sent, _, err := phase(context.Background(), f, 10, 2, time.Minute, 1000, 50*time.Millisecond)
		if sent != 1000 {
			t.Errorf("extra %d: sent %d, want 1000", c.extra, sent)
		}
		switch {
		case c.want == "" && err != nil:
			t.Errorf("extra %d: %v", c.extra, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("extra %d: error %v, want one containing %q", c.extra, err, c.want)
		}
	}
}

func TestFrameReader(t *testing.T) {
	in := append(frames(3, 2), frames(0, 1)...)
	in = append(in, frames(5, 1)...)
	fr := newFrameReader(iotest.OneByteReader(bytes.NewReader(in)), 4+5)
	for i, want := range []int{3, 3, 0, 5} {
		got, err := fr.next()
		if err != nil || len(got) != 4+want || !bytes.Equal(got, frames(want, 1)) {
			t.Fatalf("frame %d: %x, %v; want %x", i, got, err, frames(want, 1))
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}

	fr = newFrameReader(bytes.NewReader(frames(6, 1)), 4+5)
	if _, err := fr.next(); err == nil || !strings.Contains(err.Error(), "above the limit") {
		t.Fatalf("frame over the limit: %v", err)
	}
	fr = newFrameReader(bytes.NewReader(frames(5, 1)[:7]), 4+5)
	if _, err := fr.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	if p50, p99, p100 := percentile(ds, 50), percentile(ds, 99), percentile(ds, 100); p50 != 50 || p99 != 99 || p100 != 100 {
		t.Fatalf("p50, p99, p100 = %d, %d, %d; want 50, 99, 100", p50, p99, p100)
	}
	if p := percentile([]time.Duration{7}, 99); p != 7 {
		t.Fatalf("p99 of one = %d", p)
	}
}

func TestSelectNames(t *testing.T) {
	all, err := selectNames("")
	if err != nil || len(all) != len(transports) {
		t.Fatalf("all: %v, %v", all, err)
	}
	if _, err := selectNames("grpc,nope"); err == nil {
		t.Fatal("unknown name accepted")
	}
}
