package buffstreams

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A recordWriter writes the records of a listener on one connection of
// acknowledged delivery: the read loop's acknowledgements, rejections and
// goaway, and, when the dialer's hello asked for heartbeats, a heartbeat
// whenever nothing else was written for an interval. The read loop may sit
// in a slow callback for any time, so the heartbeats come from a timer of
// their own, re-armed lazily: when it fires, it looks at when the last
// record was written, and only writes if that is an interval ago. A busy
// connection, whose acknowledgements keep the dialer informed, thus costs
// a clock reading per write and a timer run per interval, and no bytes.
//
// writeRecords is called by the read loop alone; stopHeartbeats by the
// read loop when it ends. mu serialises the writes of both, so that records never
// interleave.
type recordWriter struct {
	nc       net.Conn
	wt       time.Duration // bounds each write
	interval time.Duration // between heartbeats; 0 for none

	stopped atomic.Bool    // set by stopHeartbeats; no heartbeat is written once it is
	wg      sync.WaitGroup // one while the timer is armed or its function runs

	mu    sync.Mutex
	acked uint64      // the last position written in an accept or an ack; guarded by mu
	last  time.Time   // when the last record was written; guarded by mu
	timer *time.Timer // runs beat; guarded by mu
}

// newRecordWriter returns the writer of the records that follow an accept
// of delivered on nc, with a heartbeat whenever nothing was written for
// interval, or none if interval is 0.
func newRecordWriter(nc net.Conn, wt, interval time.Duration, delivered uint64) *recordWriter {
	w := &recordWriter{nc: nc, wt: wt, interval: interval, acked: delivered, last: time.Now()}
	if interval > 0 {
		w.mu.Lock()
		w.wg.Add(1)
		w.timer = time.AfterFunc(interval, w.beat)
		w.mu.Unlock()
	}
	return w
}

// writeRecords writes the records b, after which the dialer knows that
// every message up to acked was delivered.
func (w *recordWriter) writeRecords(b []byte, acked uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nc.SetWriteDeadline(time.Now().Add(w.wt))
	_, err := w.nc.Write(b)
	w.last = time.Now()
	w.acked = acked
	return err
}

// beat is the timer's function: it writes a heartbeat if nothing was
// written for an interval, and arms the timer for when the next one may be
// due. A failed write ends the heartbeats; the read loop meets the failure
// at its own next write or read.
func (w *recordWriter) beat() {
	defer w.wg.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped.Load() {
		return
	}
	next := w.interval - time.Since(w.last)
	if next <= 0 {
		w.nc.SetWriteDeadline(time.Now().Add(w.wt))
		if w.stopped.Load() {
			return // stopHeartbeats may have set its deadline before ours
		}
		var rec [ackRecordLen]byte
		if _, err := w.nc.Write(appendRecord(rec[:0], typeHeartbeat, w.acked)); err != nil {
			return
		}
		w.last = time.Now()
		next = w.interval
	}
	w.wg.Add(1)
	w.timer.Reset(next)
}

// stopHeartbeats ends the heartbeats and waits for a heartbeat being written, which
// it makes give up at once: the connection is ending. After it returns, no
// heartbeat is written and the timer's function is not running. It may be
// called more than once.
func (w *recordWriter) stopHeartbeats() {
	w.stopped.Store(true)
	if w.interval == 0 {
		return
	}
	w.nc.SetWriteDeadline(time.Unix(1, 0))
	w.mu.Lock()
	if w.timer.Stop() {
		w.wg.Done() // armed, and now never runs
	}
	w.mu.Unlock()
	w.wg.Wait()
}
