package buffstreams

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// This file is the listener's side of acknowledged delivery: the hello, the
// table of sessions, and the ackReader, the part of the read loop
// (tcplistener.go) that numbers and acknowledges messages. The protocol's
// bytes are in ack.go; the listener's lock order is at the top of
// tcplistener.go.

// ackWriteTimeout bounds the write of an acknowledgement when the
// listener's WriteTimeout is zero.
const ackWriteTimeout = 10 * time.Second

// errAckReplies is returned by Write on a connection a listener serves with
// acknowledged delivery: the way back carries the acknowledgements.
var errAckReplies = errors.New("buffstreams: a connection with acknowledged delivery carries acknowledgements back, not replies")

// A session is what the listener remembers of one sender.
type session struct {
	id        SessionID
	delivered atomic.Uint64           // the last message handed to the callback
	owner     atomic.Pointer[TCPConn] // the connection reading for it, or nil

	done  chan struct{} // closed when the owner's read loop lets go; guarded by ackSessions.mu
	ended time.Time     // when the last owner let go; guarded by ackSessions.mu

	// relay holds the done channels of connections that gave up waiting
	// for the read loop still delivering; that loop's detach closes them.
	// Guarded by ackSessions.mu.
	relay []chan struct{}
}

// ackSessions is a listener's table of sessions, bounded and expiring.
type ackSessions struct {
	o       *ackOptions
	evicted atomic.Uint64

	mu        sync.Mutex
	m         map[SessionID]*session // guarded by mu
	lastSweep time.Time              // guarded by mu
}

func newAckSessions(o *ackOptions) *ackSessions {
	if o == nil {
		return nil
	}
	return &ackSessions{o: o, m: make(map[SessionID]*session)}
}

// attach makes c the owner of the session of h, creating the session if
// needed, and returns it with the last message delivered for it and the
// channel to close when c lets go. A previous owner is closed and waited
// for, up to wait, so that no message is delivered twice.
func (t *ackSessions) attach(c *TCPConn, h hello, wait time.Duration) (*session, uint64, chan struct{}, byte, error) {
	t.mu.Lock()
	s := t.m[h.id]
	if s == nil {
		d := h.first - 1
		if st := t.o.store; st != nil {
			t.mu.Unlock()
			v, ok, err := st.Load(h.id)
			if err != nil {
				return nil, 0, nil, reasonStore, fmt.Errorf("buffstreams: SessionStore.Load(%v): %w", h.id, err)
			}
			if ok {
				d = v
			}
			t.mu.Lock()
			s = t.m[h.id] // another connection of the session may have won
		}
		if s == nil {
			if !t.room() {
				t.mu.Unlock()
				return nil, 0, nil, reasonBusy, fmt.Errorf("%w: all %d sessions have a connection", ErrAckRefused, t.o.maxSessions)
			}
			s = &session{id: h.id}
			s.delivered.Store(d)
			t.m[h.id] = s
		}
	}
	prev := s.owner.Swap(c)
	prevDone := s.done
	done := make(chan struct{})
	s.done = done
	t.mu.Unlock()
	if prev != nil {
		prev.Close() // its read loop stops before the next message
	}
	// Wait for the read loop that delivered last, even with no owner: a
	// connection that gave up waiting for it left, and it may still be in
	// its callback.
	if prevDone != nil {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-prevDone:
		case <-timer.C:
			t.giveUpWaiting(s, c, done, prevDone)
			return nil, 0, nil, reasonBusy, fmt.Errorf("%w: the session's previous connection is still delivering", ErrAckRefused)
		}
	}
	d := max(s.delivered.Load(), h.first-1)
	s.delivered.Store(d)
	return s, d, done, 0, nil
}

// giveUpWaiting ends c's claim on s when the read loop before it, which closes
// prevDone, did not let go in time. c's own done channel is then closed
// only with prevDone, so that the next connection of the session waits
// for the loop that still delivers, and reads its final position.
func (t *ackSessions) giveUpWaiting(s *session, c *TCPConn, done, prevDone chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.owner.CompareAndSwap(c, nil) {
		s.ended = time.Now()
	}
	select {
	case <-prevDone:
		close(done)
	default:
		s.relay = append(s.relay, done)
	}
}

// detach ends c's ownership of s, and closes the done channels of the
// connections that gave up waiting for it.
func (t *ackSessions) detach(s *session, c *TCPConn, done chan struct{}) {
	t.mu.Lock()
	if s.owner.CompareAndSwap(c, nil) {
		s.ended = time.Now()
	}
	for _, r := range s.relay {
		close(r)
	}
	s.relay = nil
	close(done)
	t.mu.Unlock()
}

// room makes room for a new session, forgetting those that expired and, if
// the table is still full, the one whose connection ended longest ago, and
// reports whether there is room. t.mu is held.
func (t *ackSessions) room() bool {
	now := time.Now()
	if len(t.m) < t.o.maxSessions && now.Sub(t.lastSweep) < t.o.ttl {
		return true
	}
	t.lastSweep = now
	var oldest *session
	for id, s := range t.m {
		if s.owner.Load() != nil || s.delivering() {
			continue
		}
		if now.Sub(s.ended) > t.o.ttl {
			delete(t.m, id)
			continue
		}
		if oldest == nil || s.ended.Before(oldest.ended) {
			oldest = s
		}
	}
	if len(t.m) < t.o.maxSessions {
		return true
	}
	if oldest == nil {
		return false
	}
	delete(t.m, oldest.id)
	t.evicted.Add(1)
	return true
}

// delivering reports whether a read loop of s may still be in its
// callback although s has no owner: a newcomer closed it and then gave up
// waiting for it. Forgetting s then would let the session resume from the
// sender's window, and deliver again what that loop delivered.
// ackSessions.mu is held.
func (s *session) delivering() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// remembered returns the number of sessions remembered.
func (t *ackSessions) remembered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// Sessions returns the number of sessions of acknowledged delivery the
// listener remembers, 0 without acknowledged delivery.
func (l *TCPListener) Sessions() int {
	if l.acks == nil {
		return 0
	}
	return l.acks.remembered()
}

// ackServedEngine is the write engine of a connection a listener serves
// with acknowledged delivery: it refuses replies, because the way back
// carries the acknowledgements.
type ackServedEngine struct{ c *TCPConn }

func (e ackServedEngine) write(msg []byte) error {
	e.c.failed(msg, errAckReplies)
	return errAckReplies
}

func (e ackServedEngine) writeBatch(msgs [][]byte) (int, error) {
	for _, m := range msgs {
		e.c.failed(m, errAckReplies)
	}
	return 0, errAckReplies
}

func (e ackServedEngine) writeRun(run []byte, spans []span) (int, error) {
	accountFrames(e.c, run, spans, 0, errAckReplies)
	return 0, errAckReplies
}

func (ackServedEngine) flush() error      { return nil }
func (ackServedEngine) closing()          {}
func (ackServedEngine) drain()            {}
func (ackServedEngine) reopening()        {}
func (ackServedEngine) reopened()         {}
func (ackServedEngine) attached(net.Conn) {}

// refuseLinger bounds how long a refusal waits for the dialer to read it.
const refuseLinger = 200 * time.Millisecond

// refuse writes a refusal on nc, within the write timeout, and ends the
// stream. Closing a socket with unread bytes resets it, which can destroy
// the refusal before the dialer reads it, so refuse reads and discards
// what arrives until the dialer closes, for up to refuseLinger.
func (l *TCPListener) refuse(nc net.Conn, reason byte, text string) {
	nc.SetWriteDeadline(time.Now().Add(orDefault(l.connOpts.writeTimeout, ackWriteTimeout)))
	if _, err := nc.Write(appendRefuse(nil, reason, text)); err != nil {
		return
	}
	discardUntilClosed(nc, refuseLinger)
}

// discardUntilClosed ends nc for writing and reads and discards what
// arrives until the peer closes, for up to d, so that closing nc does not
// reset it and destroy what was last written before the peer reads it.
func discardUntilClosed(nc net.Conn, d time.Duration) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	nc.SetReadDeadline(time.Now().Add(d))
	var b [4096]byte
	for range 4096 {
		if _, err := nc.Read(b[:]); err != nil {
			return
		}
	}
}

// helloWithoutAcks answers, on a listener without acknowledged delivery,
// a peer whose first bytes, in rd, are a hello: it refuses it, so that the
// dialer fails at once with ErrAcksOff, and returns the error to close the
// connection with. It returns nil if the bytes are not a hello.
func (l *TCPListener) helloWithoutAcks(nc net.Conn, rd *frameReader) error {
	if !isHello(rd.buf[:rd.w]) {
		return nil
	}
	l.refuse(nc, reasonAcksOff, "the listener does not have Acks on")
	return fmt.Errorf("%w: the peer asks for acknowledged delivery; set Acks on the listener%w", ErrWrongProtocol, errAcksWanted)
}

// errAcksWanted marks the error of a hello sent to a listener without
// acknowledged delivery, which has answered it already. Its text is empty.
var errAcksWanted = errors.New("")

// isHello reports whether p begins with the magic, version and type of a
// hello, of any version.
func isHello(p []byte) bool {
	return len(p) >= 10 && bytes.Equal(p[:8], ackMagic[:]) && p[9] == typeHello
}

// refuseTLSHello answers, on a TLS listener, a peer whose TLS handshake
// failed because it sent a hello in plain text, so that the dialer fails
// with ErrTLSMismatch rather than at its first write.
func (l *TCPListener) refuseTLSHello(err error) {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && rh.Conn != nil && bytes.Equal(rh.RecordHeader[:], ackMagic[:5]) {
		l.refuse(rh.Conn, reasonTLS, "the listener serves TLS; set TLSConfig on the dialer")
	}
}

// ackHello reads a connection's hello and answers it. It returns the
// session, the last message delivered for it, the channel to close when the
// read loop lets it go and the dialer's heartbeat timeout (0 for none), or
// why the connection is to be closed.
func (l *TCPListener) ackHello(c *TCPConn, nc net.Conn) (*session, uint64, chan struct{}, time.Duration, error) {
	var buf [helloFixed + maxFramingName]byte
	nc.SetReadDeadline(time.Now().Add(l.opts.handshakeTimeout))
	got := 0
	var h hello
	for {
		n, rerr := nc.Read(buf[got:])
		got += n
		var size int
		var reason byte
		var err error
		h, size, reason, err = parseHello(buf[:got])
		if err != nil {
			text := err.Error()
			if reason == reasonNoHello {
				// Another protocol, or most likely a dialer with Acks off:
				// a guess at another framing would mislead.
				what := recogniseProtocol(buf[:got])
				if what == "" {
					what = "the peer does not use acknowledged delivery (Acks is off on the dialer)"
				}
				err = fmt.Errorf("%w: %s: %w", ErrWrongProtocol, what, err)
				if got >= 3 && buf[0] == 0x16 && buf[1] == 0x03 {
					reason, text = reasonNoTLS, "the listener does not serve TLS"
				} else {
					text = "the listener has Acks on; set Acks on the dialer"
				}
			}
			l.refuse(nc, reason, text)
			return nil, 0, nil, 0, err
		}
		if size != 0 && got >= size {
			break
		}
		if rerr != nil {
			return nil, 0, nil, 0, fmt.Errorf("buffstreams: reading the hello: %w", rerr)
		}
	}
	nc.SetReadDeadline(time.Time{})
	if f := l.wire.framing.String(); h.framing != f {
		l.refuse(nc, reasonFraming, fmt.Sprintf("the dialer uses the %s framing, the listener %s", h.framing, f))
		return nil, 0, nil, 0, fmt.Errorf("%w: the dialer uses the %s framing, the listener %s", ErrAckMismatch, h.framing, f)
	}
	if int(h.max) != l.wire.max {
		l.refuse(nc, reasonMax, fmt.Sprintf("the dialer's MaxMessageSize is %d, the listener's %d", h.max, l.wire.max))
		return nil, 0, nil, 0, fmt.Errorf("%w: the dialer's MaxMessageSize is %d, the listener's %d", ErrAckMismatch, h.max, l.wire.max)
	}
	if l.draining.Load() || l.closing.Load() {
		l.refuse(nc, reasonShutdown, "the listener is shutting down")
		return nil, 0, nil, 0, fmt.Errorf("%w: the listener is shutting down", ErrAckRefused)
	}
	s, d, done, reason, err := l.acks.attach(c, h, l.opts.handshakeTimeout)
	if err != nil {
		l.refuse(nc, reason, err.Error())
		return nil, 0, nil, 0, err
	}
	nc.SetWriteDeadline(time.Now().Add(orDefault(l.connOpts.writeTimeout, ackWriteTimeout)))
	if _, err := nc.Write(appendAccept(nil, d)); err != nil {
		l.acks.detach(s, c, done)
		return nil, 0, nil, 0, err
	}
	return s, d, done, time.Duration(h.heartbeat) * time.Millisecond, nil
}

// goawayLinger bounds how long Shutdown waits for a sender to leave after
// its goaway.
const goawayLinger = 500 * time.Millisecond

// An ackReader is the acknowledging part of a connection's read loop
// (readLoop, in tcplistener.go), which calls it at four points: startAcks
// before the first frame, afterMessage after each callback, caughtUp when
// everything that arrived is delivered, and letGo when the loop ends; and
// goaway during Shutdown.
//
// It numbers the messages from the one after the last the session
// delivered, and acknowledges them cumulatively after their callbacks
// returned: every AckEvery messages or AckBytes bytes, and whenever the
// loop has delivered everything that has arrived, before it waits for
// more. A callback's error is sent back, with the message's number, before
// the acknowledgement that covers it. Each position is saved in the
// SessionStore before an acknowledgement of it is written. When the dialer
// asked for heartbeats, the recordWriter sends one whenever nothing was
// written for a third of its timeout. It is used by the read loop alone.
type ackReader struct {
	l    *TCPListener
	o    *ackOptions
	c    *TCPConn
	s    *session
	done chan struct{} // closed by detach, when the loop lets s go
	w    *recordWriter

	// The session's position is published in s.delivered when the loop
	// ends, before detach lets a newer connection of the session read it,
	// and with each acknowledgement; not per message, as an atomic store
	// costs as much as the rest of a message's work.
	seq       uint64 // the last message delivered
	acked     uint64 // the last message acknowledged
	saved     uint64 // the position the store has
	out       []byte // records not yet written
	pend      int    // messages delivered and not yet acknowledged
	pendBytes int    // their bytes
}

// startAcks reads and answers the hello of a connection, and returns its
// ackReader, or why the connection is to be closed.
func (l *TCPListener) startAcks(c *TCPConn, nc net.Conn) (*ackReader, error) {
	s, seq, done, hb, err := l.ackHello(c, nc)
	if err != nil {
		return nil, err
	}
	// A sender that vanished never acknowledges the heartbeats: TCP then
	// gives up on the socket after the sender's own timeout, and the
	// session is free for its next connection. Outside Linux that happens
	// only when TCP gives up retransmitting them, after minutes: keep-alive
	// does not probe while they are in flight.
	if rc := rawTCP(nc); rc != nil && hb > 0 {
		setUserTimeout(rc, hb)
	}
	return &ackReader{
		l: l, o: l.acks.o, c: c, s: s, done: done,
		w:   newRecordWriter(nc, orDefault(l.connOpts.writeTimeout, ackWriteTimeout), hb/3, seq),
		seq: seq, acked: seq, saved: seq,
	}, nil
}

// superseded reports whether a newer connection of the session has taken
// it over: the read loop then stops before the next message.
func (a *ackReader) superseded() bool { return a.s.owner.Load() != a.c }

// afterMessage counts a message whose callback returned err, and
// acknowledges when AckEvery messages or AckBytes bytes are pending.
func (a *ackReader) afterMessage(size int, err error) error {
	a.seq++ // after the callback: one that panics is not delivered
	if err != nil {
		a.l.stats.callbackErrors.Add(1)
		a.c.log.Error("buffstreams: callback returned an error", "err", err, "seq", a.seq)
		a.out = appendRejected(a.out, a.seq, err.Error())
	}
	a.pend++
	a.pendBytes += size
	if a.pend >= a.o.every || a.pendBytes >= a.o.bytes {
		return a.acknowledge(typeAck)
	}
	return nil
}

// caughtUp acknowledges what was delivered and not yet acknowledged, and
// writes the rejections not yet written: the loop is about to wait for
// more.
func (a *ackReader) caughtUp() error { return a.acknowledge(typeAck) }

// goaway tells the sender that the listener is stopping, with the last
// message delivered, and waits for it to close, up to goawayLinger,
// discarding what it sent meanwhile: it writes that again elsewhere. The
// goaway is the last record: no heartbeat follows it. It returns the
// cause of the connection's end.
func (a *ackReader) goaway() error {
	if err := a.acknowledge(typeGoaway); err != nil {
		return err
	}
	a.w.stopHeartbeats()
	discardUntilClosed(a.w.nc, goawayLinger)
	return errListenerClosed
}

// acknowledge writes a record of type typ (an ack or a goaway) with the
// last message delivered, after the records pending, once the position is
// saved. An ack that would repeat the last one is not written.
func (a *ackReader) acknowledge(typ byte) error {
	if a.seq != a.acked || typ == typeGoaway {
		a.s.delivered.Store(a.seq)
		if err := a.savePosition(); err != nil {
			return err
		}
		a.out = appendRecord(a.out, typ, a.seq)
	}
	if len(a.out) == 0 {
		return nil
	}
	if err := a.w.writeRecords(a.out, a.seq); err != nil {
		return fmt.Errorf("buffstreams: writing acknowledgements: %w", err)
	}
	a.out, a.acked, a.pend, a.pendBytes = a.out[:0], a.seq, 0, 0
	return nil
}

// savePosition gives the SessionStore, if there is one, the last message
// delivered, unless it has it already.
func (a *ackReader) savePosition() error {
	if st := a.o.store; st != nil && a.seq != a.saved {
		if err := st.Save(a.s.id, a.seq); err != nil {
			return fmt.Errorf("buffstreams: SessionStore.Save(%v, %d): %w", a.s.id, a.seq, err)
		}
		a.saved = a.seq
	}
	return nil
}

// letGo ends the loop's hold on its session, also after a callback's
// panic: it saves the position, stops the heartbeats, publishes the
// position and detaches, each even if the one before panics.
func (a *ackReader) letGo() {
	defer a.l.acks.detach(a.s, a.c, a.done)
	defer a.s.delivered.Store(a.seq)
	defer a.w.stopHeartbeats()
	if err := a.savePosition(); err != nil {
		a.c.log.Error("buffstreams: saving the session's position", "err", err)
	}
}
