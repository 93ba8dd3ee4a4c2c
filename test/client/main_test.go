package main

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// TestNoteHasNoZeroByte checks what the doc promises for -framing
// delim:\x00: a marshaled Note never contains a zero byte, whatever its
// size, connection number or date.
func TestNoteHasNoZeroByte(t *testing.T) {
	dates := []int64{
		time.Now().UnixNano(),
		1 << 56, // the smallest 9-byte varint (1972)
		1<<63 - 1,
		1<<56 + 1<<7, // a continuation byte of 0x80
		1 << 62,
	}
	for size := range 4097 {
		for _, i := range []int{0, 1, 9, 10, 99, 100, 127, 128, 1000, 12345} {
			n := newNote(size, i)
			for _, d := range dates {
				n.Date = d
				b, err := proto.Marshal(n)
				if err != nil {
					t.Fatal(err)
				}
				if k := bytes.IndexByte(b, 0); k >= 0 {
					t.Fatalf("size %d, connection %d, date %d: zero byte at %d of %x", size, i, d, k, b)
				}
			}
		}
	}
}

// TestNoteSize checks that a Note has the size asked for, and keeps it when
// -echo stamps it again with the current time.
func TestNoteSize(t *testing.T) {
	minSize := proto.Size(newNote(0, 0))
	for size := minSize; size <= 4096; size++ {
		n := newNote(size, 3)
		if got := proto.Size(n); got != size {
			t.Fatalf("newNote(%d) has %d bytes", size, got)
		}
		n.Date = time.Now().UnixNano()
		if got := proto.Size(n); got != size {
			t.Fatalf("newNote(%d) stamped again has %d bytes", size, got)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := bucket(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucket(%d) = %d after %d: not contiguous", v, b, prev)
		}
		prev = b
	}
	for _, v := range []uint64{0, 1, 127, 128, 1000, 123456789, 1 << 40, 1<<63 - 1} {
		b := bucket(v)
		if b >= len(histogram{}.counts) {
			t.Fatalf("bucket(%d) = %d is out of range", v, b)
		}
		mid := bucketMid(b)
		if diff := max(mid, v) - min(mid, v); float64(diff) > float64(v)/64+1 {
			t.Errorf("bucket(%d) has middle %d, off by more than 1/64", v, mid)
		}
	}
}

func TestHistogramQuantile(t *testing.T) {
	var h histogram
	if got := h.quantile(0.5); got != 0 {
		t.Errorf("empty histogram: p50 = %v, want 0", got)
	}
	// 1..1000 µs, shuffled: p50 is 500 µs and p99 990 µs, within 1/64.
	for _, k := range rand.Perm(1000) {
		h.record(time.Duration(k+1) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := (got - c.want).Abs(); d > c.want/64+time.Microsecond {
			t.Errorf("quantile(%v) = %v, want %v within 1/64", c.q, got, c.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int{"262144": 262144, "256KiB": 256 << 10, "1MiB": 1 << 20, "0": 0} {
		var b byteSize
		if err := b.Set(in); err != nil || int(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1GiB", "1.5MiB", "99999999MiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, b)
		}
	}
}
