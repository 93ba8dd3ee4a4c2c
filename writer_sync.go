package buffstreams

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// syncEngine is the default write engine: a Write returns once the kernel
// has its whole frame. Concurrent Writes share system calls (group commit).
// One goroutine at a time owns the socket for writing. A Write that finds
// nobody writing and nothing waiting writes its own frame: it takes and
// gives back ownership with one atomic operation each, and no lock. Writes that
// arrive while the socket is owned append their frames to pend and wait;
// when the owner is done it hands ownership to the first of them, which
// writes every frame gathered so far in one system call and tells each
// waiter how many of its frames went out.
//
// While Writes stream, the owner keeps the socket corked (cork.go). The
// corker's timer and Flush take ownership of the socket, as a Write does,
// before they take the cork off.
//
// Lock order: TCPConn.dmu, then TCPConn.mu, then ck.fire, then mu. The
// sender takes TCPConn's locks, to find the socket or dial, with neither
// engine lock held. None is held during a system call but the corker's.
type syncEngine struct {
	c *TCPConn
	// state is ownedBit, set while a goroutine owns the socket for
	// writing, plus writeOne for each Write in progress, owners and
	// waiters alike. Only a Write that finds it zero sets ownedBit
	// without holding mu; it is cleared without mu only by that Write,
	// when nothing else happened meanwhile (see send).
	state atomic.Uint64
	procs int // GOMAXPROCS when the connection was made

	mu      sync.Mutex
	pend    []byte    // frames of waiting Writes, in order; guarded by mu
	spans   []span    // where each frame of pend lies; guarded by mu
	waiters []*waiter // the Writes whose frames are in pend; guarded by mu
	spareB  []byte    // pend's other buffer; guarded by mu
	spareS  []span    // guarded by mu
	spareW  []*waiter // guarded by mu

	// Used by the goroutine that owns the socket.
	tx      sender
	one     []byte // the frames of a lone Write
	oneS    []span
	segs    [3][]byte
	oneSpan [1]span
	ck      corker
}

// A waiter is a Write whose frames another goroutine writes, and learns
// from it what became of them.
type waiter struct {
	state       atomic.Uint32 // waitPending, then what the owner told it
	wake        chan struct{} // receives once if the waiter parked before being told
	first, last int           // its frames are spans[first:last] of the run
	written     int           // how many of them reached the kernel whole
	err         error
}

// The states of a waiter.
const (
	waitPending uint32 = iota // nobody has told it anything yet
	waitParked                // it stopped spinning and sleeps on wake
	waitLead                  // it owns the socket now: it writes the next run
	waitDone                  // its frames were written, or failed
)

var waiterPool = sync.Pool{New: func() any { return &waiter{wake: make(chan struct{}, 1)} }}

// tell hands the waiter its outcome: waitLead or waitDone. It wakes the
// waiter only if it parked: a waiter that is still spinning sees the state
// change without a wake-up, which would cost both sides more than the
// write they waited for.
func (x *waiter) tell(s uint32) {
	if x.state.Swap(s) == waitParked {
		x.wake <- struct{}{}
	}
}

// awaitSpin is how long a waiter watches for its outcome before it parks:
// a few small writes' worth, and less than parking and being woken costs.
const awaitSpin = 20 * time.Microsecond

// await waits for the owner to tell the waiter its outcome. With spin it
// first watches for up to awaitSpin, yielding the processor, and then
// parks; without, it parks at once.
func (x *waiter) await(spin bool) uint32 {
	if spin {
		until := time.Now().Add(awaitSpin)
		for {
			if s := x.state.Load(); s != waitPending {
				return s
			}
			if !time.Now().Before(until) {
				break
			}
			runtime.Gosched()
		}
	}
	if x.state.CompareAndSwap(waitPending, waitParked) {
		<-x.wake
	}
	return x.state.Load()
}

func newSyncEngine(c *TCPConn) *syncEngine {
	e := &syncEngine{c: c, procs: runtime.GOMAXPROCS(0)}
	e.tx.c = c
	e.tx.cork = &e.ck
	e.ck.timer = time.AfterFunc(time.Hour, e.uncorkIdle)
	e.ck.timer.Stop()
	return e
}

// uncorkIdle runs on the corker's timer: once it owns the socket, it takes
// the cork off if the connection has been quiet long enough. If a Write
// owns the socket, it looks again later.
func (e *syncEngine) uncorkIdle() {
	k := &e.ck
	k.fire.Lock()
	defer k.fire.Unlock()
	if k.stopped {
		return
	}
	if !e.own() {
		k.timer.Reset(corkQuiet)
		return
	}
	k.idle()
	e.mu.Lock()
	e.handOff()
	e.mu.Unlock()
}

// flush sends what the kernel holds under the cork: at once if no Write
// owns the socket, else when that Write returns. The next Write starts no
// stream (corker.asked).
func (e *syncEngine) flush() error {
	k := &e.ck
	if !k.asked.Load() {
		k.asked.Store(true)
	}
	if !k.hint.Load() {
		return nil
	}
	if !e.own() {
		k.push.Store(true)
		if !e.own() {
			return nil // the owner takes the cork off when its write returns
		}
		k.push.Store(false) // the owner left before it could see push
	}
	if k.corked {
		k.uncork()
	}
	e.mu.Lock()
	e.handOff()
	e.mu.Unlock()
	return nil
}

func (e *syncEngine) write(msg []byte) error {
	_, err := e.send(msg, nil, nil)
	return err
}

func (e *syncEngine) writeBatch(msgs [][]byte) (int, error) { return e.send(nil, msgs, nil) }

func (e *syncEngine) writeRun(run []byte, spans []span) (int, error) {
	return e.send(nil, nil, &framed{run, spans})
}

// framed is a run of frames already made, and where each lies in it.
type framed struct {
	run   []byte
	spans []span
}

func (e *syncEngine) closing()          {}
func (e *syncEngine) drain()            { e.flush(); e.ck.stop() } // send what the cork holds before Close waits for it
func (e *syncEngine) reopening()        { e.ck.reopen() }
func (e *syncEngine) reopened()         {}
func (e *syncEngine) attached(net.Conn) {}

// The bits of syncEngine.state.
const (
	ownedBit = 1 // a goroutine owns the socket for writing
	writeOne = 2 // one Write in progress

	doneOne = ^uint64(writeOne - 1) // added to state, takes writeOne away
)

// own makes the caller the owner of the socket, if nobody owns it, and
// reports whether it did.
func (e *syncEngine) own() bool {
	for {
		s := e.state.Load()
		if s&ownedBit != 0 {
			return false
		}
		if e.state.CompareAndSwap(s, s|ownedBit) {
			return true
		}
	}
}

// send writes msg, the messages of batch, or the frames of fr, and returns
// how many messages were written. Each message not written is passed to
// TCPConn.failed.
func (e *syncEngine) send(msg []byte, batch [][]byte, fr *framed) (int, error) {
	c := e.c
	if e.state.CompareAndSwap(0, ownedBit|writeOne) {
		// Nobody writes or waits: write alone, and if nobody came
		// meanwhile, give the socket back as it was taken.
		written, err := 0, errClosed
		if !c.closed.Load() {
			written, err = e.writeAlone(msg, batch, fr)
		}
		if !e.state.CompareAndSwap(ownedBit|writeOne, 0) {
			e.mu.Lock()
			e.handOff()
			e.mu.Unlock()
			e.state.Add(doneOne)
		}
		return e.account(msg, batch, fr, written, err), err
	}
	others := e.state.Add(writeOne)/writeOne > 1
	defer e.state.Add(doneOne)
	e.mu.Lock()
	if c.closed.Load() {
		e.mu.Unlock()
		return e.account(msg, batch, fr, 0, errClosed), errClosed
	}
	if len(e.pend) == 0 && !others && e.own() {
		e.mu.Unlock()
		written, err := e.writeAlone(msg, batch, fr)
		e.mu.Lock()
		e.handOff()
		e.mu.Unlock()
		return e.account(msg, batch, fr, written, err), err
	}
	// Someone is writing: add the frames to the next run and wait.
	x := waiterPool.Get().(*waiter)
	x.state.Store(waitPending)
	x.first = len(e.spans)
	f := c.wire.framing
	switch {
	case fr != nil:
		base := len(e.pend)
		e.pend = append(e.pend, fr.run...)
		for _, s := range fr.spans {
			e.spans = append(e.spans, span{base + s.at, base + s.end})
		}
	case batch == nil:
		e.pend, e.spans = appendFrame(f, e.pend, e.spans, msg)
	}
	for _, m := range batch {
		e.pend, e.spans = appendFrame(f, e.pend, e.spans, m)
	}
	x.last = len(e.spans)
	e.waiters = append(e.waiters, x)
	lead := e.own()
	e.mu.Unlock()
	if lead {
		// Other Writes are under way but not running (there may be
		// fewer processors than writers): let them add their frames
		// before writing, or each system call carries one frame.
		runtime.Gosched()
	}
	if lead || x.await(e.spinning()) == waitLead {
		e.lead(x)
	}
	written, err := x.written, x.err
	x.err = nil
	waiterPool.Put(x)
	return e.account(msg, batch, fr, written, err), err
}

// spinning reports whether a waiting Write should watch for its outcome
// before it parks: only while there are fewer Writes under way than
// processors. When every processor has a Write to run, a waiter that
// yields in a loop takes turns with the owner, which then writes later,
// and reads the clock for nothing: with 8 writers on 2 processors, parking
// at once carried about 15% more messages.
func (e *syncEngine) spinning() bool {
	return int(e.state.Load()/writeOne) < e.procs
}

// writeAlone writes the frames of msg, batch or fr as the owner, with
// nothing else pending, and returns how many reached the kernel whole. A
// large message, or fr, goes out from the caller's slice, a large message
// with its header in one vectored write.
func (e *syncEngine) writeAlone(msg []byte, batch [][]byte, fr *framed) (int, error) {
	if fr != nil {
		e.segs[0] = fr.run
		sent, err := e.tx.transmit(e.segs[:1], fr.spans)
		e.segs[0] = nil
		return whole(fr.spans, sent), err
	}
	f := e.c.wire.framing
	if batch == nil && len(msg) >= largeWrite {
		h := f.putHeader(e.tx.hdr[:], len(msg))
		e.segs = [3][]byte{e.tx.hdr[:h], msg, f.trailer()}
		e.oneSpan[0] = span{h, h + len(msg) + len(f.trailer())}
		sent, err := e.tx.transmit(e.segs[:], e.oneSpan[:])
		e.segs = [3][]byte{}
		return whole(e.oneSpan[:], sent), err
	}
	b, s := e.one[:0], e.oneS[:0]
	if batch == nil {
		b, s = appendFrame(f, b, s, msg)
	}
	for _, m := range batch {
		b, s = appendFrame(f, b, s, m)
	}
	e.segs[0] = b
	sent, err := e.tx.transmit(e.segs[:1], s)
	e.segs[0] = nil
	written := whole(s, sent)
	if cap(b) <= keepBuffer {
		e.one, e.oneS = b[:0], s[:0]
	}
	return written, err
}

// lead writes every frame gathered in pend, as the owner, and tells each
// waiter (self included, without a message) what became of its frames.
func (e *syncEngine) lead(self *waiter) {
	e.mu.Lock()
	out, spans, ws := e.pend, e.spans, e.waiters
	e.pend, e.spans, e.waiters = e.spareB[:0], e.spareS[:0], e.spareW[:0]
	e.mu.Unlock()
	e.segs[0] = out
	sent, err := e.tx.transmit(e.segs[:1], spans)
	e.segs[0] = nil
	done := whole(spans, sent)
	for _, x := range ws {
		x.written = min(max(done-x.first, 0), x.last-x.first)
		x.err = nil
		if x.written < x.last-x.first {
			x.err = err
		}
		if x != self {
			x.tell(waitDone)
		}
	}
	clear(ws)
	e.mu.Lock()
	if cap(out) <= keepBuffer {
		e.spareB, e.spareS = out[:0], spans[:0]
	} else {
		e.spareB, e.spareS = nil, nil
	}
	e.spareW = ws[:0]
	e.handOff()
	e.mu.Unlock()
}

// handOff ends the caller's ownership of the socket, handing it to the
// first waiting Write, if any. e.mu is held.
func (e *syncEngine) handOff() {
	if len(e.waiters) > 0 {
		e.waiters[0].tell(waitLead)
		return
	}
	e.state.And(^uint64(ownedBit))
}

// account records what became of the messages of one Write, WriteBatch
// or writeRun, of which the first written reached the kernel whole, and
// returns written.
func (e *syncEngine) account(msg []byte, batch [][]byte, fr *framed, written int, err error) int {
	c := e.c
	if fr != nil {
		accountFrames(c, fr.run, fr.spans, written, err)
		return written
	}
	if batch == nil {
		if written == 0 {
			c.failed(msg, err)
			return 0
		}
		c.wrote(1, uint64(len(msg)))
		return 1
	}
	var nb uint64
	for _, m := range batch[:written] {
		nb += uint64(len(m))
	}
	c.wrote(written, nb)
	for _, m := range batch[written:] {
		c.failed(m, err)
	}
	return written
}
