package buffstreams_test

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// textMsg returns a message of size bytes (at least 9) that starts with
// seq in decimal and a space, and holds no newline, so that it fits every
// framing the tests use.
func textMsg(seq, size int) []byte {
	p := []byte(fmt.Sprintf("%08d ", seq))
	return append(p, strings.Repeat("x", size-len(p))...)
}

// textSeq returns the sequence number at the start of a textMsg.
func textSeq(p []byte) int {
	n, err := strconv.Atoi(string(p[:8]))
	if err != nil {
		return -1
	}
	return n
}

// orderLog records the sequence numbers a listener received, in order.
type orderLog struct {
	mu   sync.Mutex
	seqs []int
}

func (o *orderLog) callback(p []byte) error {
	o.mu.Lock()
	o.seqs = append(o.seqs, textSeq(p))
	o.mu.Unlock()
	return nil
}

func (o *orderLog) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seqs)
}

func (o *orderLog) all() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.seqs)
}

// A writerMode is a write mode a BufferedWriter is tested over.
type writerMode struct {
	name string
	cfg  bs.TCPConnConfig
	acks bool
}

// dial starts a listener with lcfg and dials it with cfg, with
// acknowledged delivery on both ends if the mode has it.
func (m writerMode) dial(t *testing.T, lcfg bs.TCPListenerConfig, cfg bs.TCPConnConfig) *bs.TCPConn {
	t.Helper()
	if m.acks {
		lcfg.Acks, cfg.Acks = &bs.AckConfig{}, &bs.AckConfig{}
	}
	return dial(t, listen(t, lcfg), cfg)
}

// writerModes are the write modes a BufferedWriter is tested over.
var writerModes = []writerMode{
	{"default", bs.TCPConnConfig{}, false},
	{"batching", bs.TCPConnConfig{WriteBufferSize: 4096}, false},
	{"acks", bs.TCPConnConfig{}, true},
	{"acks batching", bs.TCPConnConfig{WriteBufferSize: 4096}, true},
}

// TestBufferedWriterDelivers writes messages of many sizes through a small
// BufferedWriter, some too large for its buffer, while another goroutine
// writes on the same connection directly, in every write mode and over a
// framing with a header and one with a trailer. Every message must arrive once, whole,
// each writer's in its own order, and be counted as written.
func TestBufferedWriterDelivers(t *testing.T) {
	delimited, err := bs.Delimited([]byte("\n"))
	if err != nil {
		t.Fatal(err)
	}
	framings := []struct {
		name string
		f    bs.Framing
	}{{"default", nil}, {"delimited", delimited}}
	for _, mode := range writerModes {
		for _, fr := range framings {
			t.Run(mode.name+"/"+fr.name, func(t *testing.T) {
				leakCheck(t)
				var got orderLog
				cfg := mode.cfg
				cfg.Framing = fr.f
				c := mode.dial(t, bs.TCPListenerConfig{Framing: fr.f, Callback: got.callback}, cfg)

				// The BufferedWriter sends 0 to n-1; the direct writer n to 2n-1.
				const n = 3000
				w := c.NewBufferedWriter(1024)
				direct := make(chan error, 1)
				go func() {
					for i := range n / 10 {
						if _, err := c.Write(textMsg(n+i, 50)); err != nil {
							direct <- err
							return
						}
					}
					direct <- nil
				}()
				for i := range n {
					size := 9 + i%300
					if i%97 == 0 {
						size = 2000 // more than the BufferedWriter's buffer
					}
					if _, err := w.Write(textMsg(i, size)); err != nil {
						t.Fatalf("Write %d: %v", i, err)
					}
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				if w.Buffered() != 0 {
					t.Fatalf("Buffered = %d after Flush", w.Buffered())
				}
				// Without a write buffer, Flush returns once the kernel has
				// every frame, and the frames are counted by then.
				if got := c.Stats().MessagesWritten; mode.cfg.WriteBufferSize == 0 && got < n {
					t.Fatalf("%d messages written when Flush returned, want at least %d", got, n)
				}
				if err := <-direct; err != nil {
					t.Fatal(err)
				}
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
				total := n + n/10
				eventually(t, "every message", func() bool { return got.len() >= total })
				var mine, theirs []int
				for _, s := range got.all() {
					if s < n {
						mine = append(mine, s)
					} else {
						theirs = append(theirs, s)
					}
				}
				if len(mine) != n || len(theirs) != n/10 {
					t.Fatalf("received %d and %d messages, want %d and %d", len(mine), len(theirs), n, n/10)
				}
				for i, s := range mine {
					if s != i {
						t.Fatalf("the BufferedWriter's message %d arrived as %d", i, s)
					}
				}
				for i, s := range theirs {
					if s != n+i {
						t.Fatalf("the direct writer's message %d arrived as %d", n+i, s)
					}
				}
				if st := c.Stats(); st.MessagesWritten != uint64(total) || st.WriteErrors != 0 {
					t.Fatalf("stats %+v, want %d messages written and no errors", st, total)
				}
			})
		}
	}
}

// TestBufferedWriterFlushWaits checks that Flush, in the modes without a write
// buffer, returns only once the kernel has every frame: the messages are
// counted as written when it returns, before anything else runs.
func TestBufferedWriterFlushWaits(t *testing.T) {
	for _, mode := range []writerMode{writerModes[0], writerModes[2]} {
		t.Run(mode.name, func(t *testing.T) {
			received := newSeqLog()
			c := mode.dial(t, bs.TCPListenerConfig{Callback: received.callback}, mode.cfg)
			w := c.NewBufferedWriter(4096)
			for round := range 20 {
				n := 1 + round*7
				before := c.Stats().MessagesWritten
				for i := range n {
					if _, err := w.Write(seqMsg(uint32(i), 50)); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				if got := c.Stats().MessagesWritten - before; got != uint64(n) {
					t.Fatalf("round %d: %d of %d messages written when Flush returned", round, got, n)
				}
			}
		})
	}
}

// TestBufferedWriterRefuses checks that Write refuses what the connection
// would, with its error, passes the message to OnWriteError, and leaves the
// buffer as it was.
func TestBufferedWriterRefuses(t *testing.T) {
	hooked := newSeqLog()
	received := newSeqLog()
	l := listen(t, bs.TCPListenerConfig{MaxMessageSize: 100, Callback: received.callback})
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: 100, OnWriteError: hooked.hook})
	w := c.NewBufferedWriter(0)
	if _, err := w.Write(seqMsg(0, 100)); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write(seqMsg(1, 101)); n != 0 || !errors.Is(err, bs.ErrMessageTooLarge) {
		t.Fatalf("Write of 101 bytes = %d, %v; want 0 and ErrMessageTooLarge", n, err)
	}
	if w.Buffered() != 1 {
		t.Fatalf("Buffered = %d, want 1", w.Buffered())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first message", func() bool { return received.n.Load() == 1 })
	c.Close()
	checkAccounting(t, c, 2, hooked, received)
	if failed, _ := hooked.snapshot(); failed[1] != 1 {
		t.Fatalf("OnWriteError got %v, want message 1", failed)
	}
}

// TestBufferedWriterAfterClose checks what a BufferedWriter does with what
// it holds once its connection is closed, in every write mode: Flush fails every
// buffered message with an error matching net.ErrClosed, and a Write that
// must flush first fails with it too, its own message included; each
// message is passed to OnWriteError once.
func TestBufferedWriterAfterClose(t *testing.T) {
	for _, mode := range writerModes {
		t.Run(mode.name, func(t *testing.T) {
			leakCheck(t)
			hooked, received := newSeqLog(), newSeqLog()
			cfg := mode.cfg
			cfg.OnWriteError = hooked.hook
			c := mode.dial(t, bs.TCPListenerConfig{Callback: received.callback}, cfg)
			w := c.NewBufferedWriter(512)
			for i := range 3 {
				if _, err := w.Write(seqMsg(uint32(i), 100)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Flush after Close: %v, want net.ErrClosed", err)
			}
			given := 3
			var err error
			for err == nil && given < 10 {
				_, err = w.Write(seqMsg(uint32(given), 100))
				given++
			}
			if !errors.Is(err, net.ErrClosed) || w.Buffered() != 0 {
				t.Fatalf("after %d Writes: %v with %d buffered; want net.ErrClosed and none", given, err, w.Buffered())
			}
			checkAccounting(t, c, given, hooked, received)
			if hooked.n.Load() != int64(given) {
				t.Fatalf("%d of %d messages passed to OnWriteError", hooked.n.Load(), given)
			}
		})
	}
}

// TestBufferedWriterTimeout writes through a BufferedWriter, and directly
// now and then, to a peer that never reads: the Write or Flush that cannot complete fails
// with ErrWriteTimeout after WriteTimeout, and every message ends written or
// failed once, whatever part of a buffer the kernel took. In batching mode
// the direct Writes wait in the connection's buffer (FlushInterval is
// long), so the BufferedWriter's buffer goes out behind them.
func TestBufferedWriterTimeout(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	for _, mode := range writerModes[:2] {
		t.Run(mode.name, func(t *testing.T) {
			leakCheck(t)
			peer := newStallPeer(t)
			hooked := newSeqLog()
			cfg := mode.cfg
			cfg.MaxMessageSize, cfg.WriteTimeout, cfg.OnWriteError = 1<<20, writeTimeout, hooked.hook
			if cfg.WriteBufferSize > 0 {
				cfg.FlushInterval = time.Hour
			}
			c := dialAddr(t, peer.addr(), cfg)
			w := c.NewBufferedWriter(64 << 10)
			var err error
			given := 0
			for given < 100000 && err == nil {
				if given%50 == 0 {
					_, err = c.Write(seqMsg(uint32(given), 100))
				} else {
					_, err = w.Write(seqMsg(uint32(given), 1000))
				}
				given++
			}
			if err == nil {
				err = w.Flush()
			}
			if !errors.Is(err, bs.ErrWriteTimeout) {
				t.Fatalf("after %d messages of 1000 bytes: %v; want ErrWriteTimeout", given, err)
			}
			c.Close()
			checkAccounting(t, c, given, hooked, newSeqLog())
		})
	}
}

// TestBufferedWriterAllocs checks that writing through a BufferedWriter
// allocates nothing, flushes included, once its buffer exists.
func TestBufferedWriterAllocs(t *testing.T) {
	for _, mode := range writerModes[:2] {
		t.Run(mode.name, func(t *testing.T) {
			l := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }})
			c := dial(t, l, mode.cfg)
			w := c.NewBufferedWriter(4096)
			msg := make([]byte, 110)
			for range 100 { // the buffer, and the engine's
				if _, err := w.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			var failed error
			a := testing.AllocsPerRun(2000, func() {
				if _, err := w.Write(msg); err != nil && failed == nil {
					failed = err
				}
			})
			if failed != nil {
				t.Fatal(failed)
			}
			if a != 0 {
				t.Errorf("%.2f allocations per Write, want 0", a)
			}
		})
	}
}
