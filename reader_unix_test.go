//go:build unix

package buffstreams

import (
	"testing"
	"time"
)

// TestRawReaderSpinsOnlyWhenBusy checks when a reader spins before it
// parks: not before it has waited once, at once after a short wait, not
// after a long one, and again only after a run of short waits has brought
// its typical wait back down.
func TestRawReaderSpinsOnlyWhenBusy(t *testing.T) {
	var r rawReader
	if r.busy() {
		t.Fatal("a reader that never waited spins")
	}
	r.learn(2 * time.Microsecond)
	if !r.busy() {
		t.Fatalf("after a 2 µs wait: typical wait %v, not spinning", r.wait)
	}
	r.learn(time.Hour)
	if r.busy() {
		t.Fatalf("after an hour's wait: typical wait %v, still spinning", r.wait)
	}
	if r.wait > maxWaitSample {
		t.Fatalf("typical wait %v, above the cap %v", r.wait, maxWaitSample)
	}
	short := 0
	for !r.busy() {
		r.learn(2 * time.Microsecond)
		short++
		if short > 100 {
			t.Fatalf("still not spinning after %d short waits (typical %v)", short, r.wait)
		}
	}
	if short < 10 {
		t.Fatalf("spinning again after %d short waits, too soon after an idle spell", short)
	}
	for range 100 {
		r.learn(spinLimit)
	}
	if r.busy() {
		t.Fatalf("waits of %v each: typical wait %v, still spinning", spinLimit, r.wait)
	}
}
