package buffstreams_test

import (
	"bytes"
	"testing"

	bs "github.com/buffstreams/buffstreams"
)

// TestBatchWritesWithoutFlush checks that batching mode writes what it
// buffers by itself, without Flush or Close: a lone message, and the tail
// of a burst that stops part-way into a buffer, under every SlowConsumer
// policy (the flusher leaves a full buffer to busy writers only under
// SlowConsumerBlock). The connection stays open until every message has
// arrived, so nothing but the flusher can have written them.
func TestBatchWritesWithoutFlush(t *testing.T) {
	for _, policy := range []bs.SlowConsumerPolicy{bs.SlowConsumerBlock, bs.SlowConsumerError, bs.SlowConsumerClose} {
		t.Run(policy.String(), func(t *testing.T) {
			s := newSink()
			l := listen(t, bs.TCPListenerConfig{Framing: bs.Fixed4, Callback: s.callback})
			c := dial(t, l, bs.TCPConnConfig{Framing: bs.Fixed4, WriteBufferSize: 4096, SlowConsumer: policy})

			if _, err := c.Write([]byte("alone")); err != nil {
				t.Fatal(err)
			}
			if got := s.wait(t, 1); !bytes.Equal(got[0], []byte("alone")) {
				t.Fatalf("got %q", got[0])
			}

			// 1,000 messages of 100 bytes: 25 buffers and a part of one.
			// Under SlowConsumerError some are refused, and under
			// SlowConsumerClose some buffered ones are dropped with the
			// connection (the next Write dials again): every message
			// must still end written or failed, and every written one
			// arrive.
			const burst = 1000
			for i := range burst {
				if _, err := c.Write(payload(i, 100)); err != nil && policy == bs.SlowConsumerBlock {
					t.Fatal(err)
				}
			}
			eventually(t, "every message written or failed, and every written one received", func() bool {
				st := c.Stats()
				return st.MessagesWritten+st.WriteErrors == 1+burst && uint64(s.len()) == st.MessagesWritten
			})
			if policy == bs.SlowConsumerBlock {
				got := s.all()
				if st := c.Stats(); st.WriteErrors != 0 || !bytes.Equal(got[burst], payload(burst-1, 100)) {
					t.Fatalf("stats %+v; the last message arrived as %.20q", st, got[burst])
				}
			}
		})
	}
}
