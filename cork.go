package buffstreams

import (
	"crypto/tls"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Corking: how the default mode keeps a stream of small frames from
// leaving as one TCP segment each.
//
// With TCP_NODELAY (Go's default) every write that finds the send queue
// empty leaves at once as a segment of its own, and the writer's system
// call carries the whole transmit path, and on loopback the receive path
// too. When Writes follow each other closely, the corker sets TCP_CORK on
// the socket: each Write still hands its whole frame to the kernel before
// it returns, but the kernel packs the frames into full segments. The cork
// comes off, pushing what the kernel holds, when
//   - a Write starts streamGap or more after the previous one returned (the
//     stream has slowed down, or this is a lone request: it leaves at once;
//     see streamStart),
//   - the connection has been quiet for corkQuiet (checked by a timer that
//     runs only while the socket is corked),
//   - Flush, Read or Close is called, or, on a connection a listener serves,
//     its read loop has delivered everything that arrived (tcplistener.go).
//
// Every field but push and hint is used only by whichever goroutine owns
// the socket for writing (see syncEngine); the timer and Flush take that
// ownership before they touch them.

// streamStart and streamGap decide which Writes form a stream. A Write
// starts a stream, and corks the socket, if it starts less than streamStart
// after the previous write started; once the socket is corked, a Write
// carries the stream on if it starts less than streamGap after the
// previous write returned.
//
// A loop of Writes starts one every microsecond or two, a Write whose
// caller first marshals a small message every few, and group commit a run
// of several frames about as often (a new owner of the socket is woken
// between runs). A request that waits for its reply starts a round trip
// after the previous one, 7 µs or more on loopback, which is not always
// longer than streamStart. So timing alone does not decide it: a Read
// takes the cork off before it waits, and so does a listener's read loop,
// for the replies it delivered; either way the next Write starts no
// stream (corker.asked), and neither does the next after Flush.
//
// Inside a stream the pause is timed from the end of the previous write,
// because a write may take long: it sent a full segment, and on loopback
// ran the receiving side too, or it waited for room in the send buffer.
// Timed from its start, such writes took the cork off and put it back every
// 200 frames or so in BenchmarkWrite, one segment and two setsockopt calls
// each. To start a stream the pause is timed from the start of the previous
// write, because its end can be stamped late: a write that wakes its peer's
// thread may lose the processor to it as it returns, and stamp its end only
// once the reply has come, so that the next request would look like part
// of a stream and be held under the cork. The one exception is a stream
// that a pause uncorked less than corkQuiet ago: the write that followed
// the pause went out alone and took long, and the stream resumes if the
// next starts soon after it returned. Two clock readings per Write are all
// the corker costs a stream.
var (
	streamStart = 8 * time.Microsecond // variables for the tests
	streamGap   = 5 * time.Microsecond
)

// corkQuiet is how long a corked socket must see no Write before the timer
// takes the cork off. It bounds how long the last frame of a burst waits
// in the kernel, plus the timer's own lateness (up to about a millisecond
// when the process is otherwise idle).
var corkQuiet = 50 * time.Microsecond // a variable for the tests

// epoch is the origin of the corker's clock.
var epoch = time.Now()

// now returns monotonic nanoseconds since epoch.
func now() int64 { return int64(time.Since(epoch)) }

// A corker keeps the socket of a default-mode connection corked while its
// Writes stream, as described above.
type corker struct {
	nc       net.Conn        // the socket the state below is about
	rc       syscall.RawConn // nc's raw socket, nil where corking is not supported
	corked   bool            // TCP_CORK is set on rc
	began    int64           // when the last write started (see now)
	last     int64           // when the last write returned
	streamed int64           // when the last write of a stream started; never after uncork
	timer    *time.Timer     // runs the engine's uncorkIdle; made stopped with the engine

	// set is called by rc.Control to set TCP_CORK to opt, and leaves the
	// result in optErr: made once, so that corking allocates nothing.
	set    func(fd uintptr)
	opt    int
	optErr error

	hint atomic.Bool // corked, readable without owning the socket
	push atomic.Bool // Flush or Read asked the owner to take the cork off
	// asked is set by Flush, which every Read calls before it may wait
	// for the peer and a listener's read loop calls before it reads
	// again: the next Write answers the peer or is a new request, and
	// starts no stream.
	asked atomic.Bool

	// fire serialises the timer's runs with stop, so that after stop
	// returns no run is in progress and none starts.
	fire    sync.Mutex
	stopped bool // guarded by fire
}

// before is called by the owner right before it writes on nc.
func (k *corker) before(nc net.Conn) {
	if nc != k.nc {
		k.nc, k.rc, k.corked, k.began, k.streamed = nc, nil, false, never, never
		if corkSupported {
			k.rc = rawTCP(nc)
		}
		k.hint.Store(false)
	}
	if k.rc == nil {
		return
	}
	t := now()
	gap := int64(streamGap)
	asked := k.asked.Load()
	if asked {
		k.asked.Store(false)
	}
	var stream bool
	switch {
	case k.corked:
		stream = t-k.last < gap
	case asked:
		// A request whose reply came back sooner than streamStart
		// (on a fast machine a loopback round trip takes 7 µs) is
		// no stream; corking it would cost two setsockopt calls a
		// round.
	default:
		// A stream starts with Writes that start close together, or
		// resumes soon after a pause took the cork off (see streamStart).
		stream = t-k.began < int64(streamStart) || t-k.last < gap && t-k.streamed < int64(corkQuiet)
	}
	k.began = t
	if stream {
		k.streamed = t
	}
	switch {
	case stream && !k.corked:
		if k.setOpt(1) != nil {
			return
		}
		k.corked = true
		k.hint.Store(true)
		k.timer.Reset(corkQuiet)
	case !stream && k.corked:
		k.unset() // the stream paused: it may resume
	}
}

// after is called by the owner when its write returned, whether or not it
// wrote anything.
func (k *corker) after() {
	if k.rc != nil {
		k.last = now()
	}
	if k.push.Load() && k.push.Swap(false) && k.corked {
		k.uncork()
	}
}

// uncork takes the cork off, which sends what the kernel holds, and ends
// the stream: the next Write starts one only if it starts within
// streamStart of the previous one.
func (k *corker) uncork() {
	k.streamed = never
	k.unset()
}

// unset clears TCP_CORK.
func (k *corker) unset() {
	k.corked = false
	k.hint.Store(false)
	k.setOpt(0)
}

// never is a time (see now) long before any write.
const never = math.MinInt64 / 2

// setOpt sets TCP_CORK on rc to v.
func (k *corker) setOpt(v int) error {
	if k.set == nil {
		k.set = func(fd uintptr) { k.optErr = setCork(fd, k.opt) }
	}
	k.opt = v
	if err := k.rc.Control(k.set); err != nil {
		return err
	}
	return k.optErr
}

// idle is run by the timer's goroutine once it owns the socket: it takes
// the cork off if no Write came for corkQuiet, or waits the rest of that.
func (k *corker) idle() {
	if !k.corked {
		return
	}
	if k.push.Swap(false) { // a Flush came while the timer owned the socket
		k.uncork()
		return
	}
	if quiet := time.Duration(now() - k.last); quiet < corkQuiet {
		k.timer.Reset(corkQuiet - quiet)
		return
	}
	k.uncork()
}

// stop stops the timer and waits for a run in progress; reopen undoes it.
func (k *corker) stop() {
	k.fire.Lock()
	k.stopped = true
	k.timer.Stop()
	k.fire.Unlock()
}

func (k *corker) reopen() {
	k.fire.Lock()
	k.stopped = false
	k.fire.Unlock()
}

// rawTCP returns the raw socket of nc, a TCP connection possibly under
// TLS, or nil if nc is not one.
func rawTCP(nc net.Conn) syscall.RawConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
