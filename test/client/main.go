// Command client sends message.Note messages with buffstreams TCPConns, for
// manual and end-to-end testing with the server in ../server.
//
// Usage:
//
//	client [-addr 127.0.0.1:5031] [-framing buffstreams] [-delim '\n'] [-max 4096]
//	       [-n 0] [-conns 1] [-size 110] [-rate 0]
//	       [-tls] [-tls-ca FILE] [-tls-server-name NAME]
//	       [-batch] [-buffer 256KiB] [-flush-interval 0] [-write-timeout 0]
//	       [-stall 0] [-retries 0] [-retry-wait 0] [-echo] [-reply-wait 5s]
//	       [-ack] [-ack-wait 10s] [-heartbeat 0]
//
// Flags:
//
//	-addr     address of the server, or several, comma separated: the
//	          client fails over to the next when a dial fails, the server
//	          goes silent or says goaway (TCPConnConfig.Addresses)
//	-framing  wire format: buffstreams, uvarint, fixed1, fixed2, fixed3,
//	          fixed4, fixed8, fixed2le, fixed4le, fixed8le, fixed4incl,
//	          lines, delim (ended by -delim) or delim:DELIM (see
//	          buffstreams.ParseFraming)
//	-delim    the delimiter of -framing delim, with Go's escapes: '\n',
//	          '\r\n', '\x00'; a quote is written '\"'. Delimited framings
//	          are for text, and the Notes sent here are binary: each starts
//	          with 0x0a, the tag of field 1, so with '\n' (or lines) every
//	          Write fails with buffstreams.ErrDelimiterInPayload and the
//	          client stops at the first. '\x00' works: these Notes never
//	          contain a zero byte (their strings are ASCII text without NUL,
//	          their tags are 0x0a, 0x10 and 0x1a, and their varints are
//	          minimal and non-zero, so every byte of one is non-zero; the
//	          tests in main_test.go check it for every size up to 4096)
//	-max      MaxMessageSize in bytes; with the buffstreams framing it must
//	          match the server's
//	-n        messages to send in all, split as evenly as possible across
//	          the connections; 0 sends until SIGINT or SIGTERM
//	-conns    connections sending in parallel, each dialed by its own
//	          goroutine
//	-size     size of each marshaled Note in bytes: the comment is padded to
//	          reach it exactly when possible, and no Note is smaller than
//	          one with only a name and a date
//	-rate     messages per second in all; 0 sends as fast as possible
//	-tls      speak TLS (1.2 or later), trusting the system's roots
//	-tls-ca   speak TLS, trusting the certificates of this PEM file instead
//	          of the system's roots (implies -tls). The name checked is
//	          -tls-server-name, or else the host of -addr (an IP address is
//	          matched against the certificate's IP SANs)
//	-batch    batching mode: TCPConnConfig.WriteBufferSize is -buffer and
//	          FlushInterval is -flush-interval; Write only copies the frame,
//	          a flusher writes many per system call, and each connection
//	          calls Flush once it has sent its share, then Close
//	-buffer   the write buffer of -batch, in bytes, or with a KiB or MiB
//	          suffix
//	-flush-interval
//	          how long the flusher of -batch may wait for more messages
//	-write-timeout
//	          TCPConnConfig.WriteTimeout; 0 means no limit (Close in batching
//	          mode still gives up after 10 s)
//	-stall    TCPConnConfig.StallTimeout, without -ack: how long what a
//	          connection wrote may stay unacknowledged by the server's TCP
//	          (on Linux; elsewhere, how long a write may make no progress)
//	          before the connection fails with buffstreams.ErrPeerSilent;
//	          0 means the library's default (30 s), a negative value turns
//	          the bound off
//	-retries  when positive, reconnect after a failure with
//	          buffstreams.RetryPolicy{MaxAttempts: retries, MaxWait:
//	          retry-wait}: a failed write dials again with back-off and
//	          writes again the frames that had not reached the kernel, so
//	          sending carries on across a server restart. The first dial
//	          retries too, so the client may start before its server. 0
//	          means no policy: one dial, and one per Write after a failure
//	-retry-wait
//	          the longest one reconnect may take, dials and back-offs
//	          together; 0 means the library's default (30 s). Once a
//	          reconnect has failed (buffstreams.ErrReconnectFailed, from
//	          Write or Flush or given to OnWriteError), the server is taken
//	          to be gone: the connection stops sending at once and closes,
//	          so the client exits 1 within -retry-wait of losing its server
//	-ack      acknowledged delivery (TCPConnConfig.Acks, with the default
//	          AckConfig); the server must run with -ack too, with the same
//	          framing, -max and TLS, or the dial fails at once with an error
//	          naming the difference and the client exits 1 without sending.
//	          Each connection keeps what the server has not acknowledged and
//	          writes it again after a reconnect (with -retries). Not with
//	          -echo: the way back carries the acknowledgements
//	-ack-wait with -ack, how long a connection waits (TCPConn.Sync) for the
//	          acknowledgement of everything it wrote once it has sent its
//	          share; what is still unacknowledged then waits in Close, for
//	          up to -write-timeout (10 s if 0), and fails after that
//	-heartbeat
//	          with -ack, how long a connection waits to hear from the server
//	          (AckConfig.HeartbeatTimeout) before it takes it for gone,
//	          closes the connection and dials again (with -retries),
//	          writing again what was not acknowledged; at least 100ms. 0
//	          means the library's default (5 s); negative turns heartbeats
//	          off, and a server gone without a word then stalls the client
//	-echo     expect the server (run with -echo) to send every message
//	          back: each connection reads the replies in a goroutine, and
//	          the final line reports their round-trip times. Each Note then
//	          carries its send time in its date field, so it is marshaled
//	          again for every message (at the same size)
//	-reply-wait
//	          with -echo, how long a connection waits for the missing
//	          replies once it has sent its share
//
// Without -echo, each connection marshals its Note once and writes the same
// bytes again and again. A failed Write is not retried by the client (the
// library dials again, with -retries as the policy says); after 10 failures
// in a row, with a growing pause between them, the connection gives up, and
// at once if the framing cannot carry the Note (ErrDelimiterInPayload),
// which no retry can change, or if a reconnect failed
// (ErrReconnectFailed). A dial that fails because the server's settings
// differ (ErrAcksOff, ErrAckMismatch, ErrTLSMismatch) stops every
// connection at once. A progress line goes to stderr every second,
// with the dial errors and the library's logs. On SIGINT or SIGTERM the
// connections stop sending, flush and close; if they have not within a
// second, they are closed under them, and a second signal kills the
// process. At the end it prints one line on stdout:
//
//	sent=N written=W failed=F unacked=U acked=A bytes=B errors=E reconnects=R elapsed=S rate=X
//
// and with -ack the same line ends with
//
//	silent=H
//
// and with -echo with
//
//	replies=K rtt_p50=D rtt_p99=D
//
// N is the number of messages given to Write. Each of them is either in W
// or in F, the messages passed to the OnWriteError hook, so W + F = N; the
// client checks it and reports a mismatch on stderr. A is
// ConnStats.MessagesAcked, summed over the connections: the messages the
// server's callback has had, which it acknowledged (0 without -ack).
// Without -ack, W is the messages whose whole frame reached the kernel
// (ConnStats.MessagesWritten), less, on Linux, those the server's TCP had
// not acknowledged when their connection failed or closed: U, which are
// in F (ConnStats.Unacknowledged). A message in W may still be lost if the
// server's process dies before reading it, since TCP does not tell. With -ack, W is
// A: a message counts as written once acknowledged, and one never
// acknowledged is in F. B is the payload bytes of W; E is
// ConnStats.WriteErrors, which equals F (it is the field the line had
// before F); R the successful reconnects; S the seconds from the
// start until every connection was done (flushed, and with -echo answered)
// and X = W/S messages per second. H is the number of connections closed
// because the server sent nothing for -heartbeat (ConnStats.SilentPeers).
// K is the number of replies received, and
// D round-trip times (a Go duration, to within 2%) at the 50th and 99th
// percentiles, from the Write of a message to the arrival of its reply.
//
// It exits 0 if all went well: some message was written (or it was
// interrupted with -n 0), no message failed (F = 0), W + F = N, every
// connection was dialed and sent its share (unless interrupted), and with
// -echo every written message was answered, unless it was interrupted,
// and, without -ack, no connection ended under the client while it was
// sending (ConnStats.Reconnects: what was written just before may be lost)
// and none was reset or refused by the server before Close (a clean close
// after the last message is fine: the server had read everything). It
// exits 1 otherwise, and 2 if the flags are wrong.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/buffstreams/buffstreams"
	"github.com/buffstreams/buffstreams/test/message"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// maxFailures is how many Writes in a row may fail before a connection gives
// up.
const maxFailures = 10

// forceClose is how long after SIGINT or SIGTERM the connections are closed
// if they have not finished by themselves.
const forceClose = time.Second

func main() {
	cfg := config{buffer: 256 << 10}
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:5031", "address of the server, or several, comma separated, to fail over across")
	flag.StringVar(&cfg.framing, "framing", "buffstreams", "wire format: buffstreams, uvarint, fixed1, fixed2, fixed3, fixed4, fixed8, fixed2le, fixed4le, fixed8le, fixed4incl, lines, delim (ended by -delim) or delim:DELIM")
	delim := flag.String("delim", `\n`, "delimiter of -framing delim, with Go escapes such as \\r\\n or \\x00 (for text payloads: marshaled Notes contain \\n, never \\x00)")
	flag.IntVar(&cfg.max, "max", buffstreams.DefaultMaxMessageSize, "MaxMessageSize in bytes")
	flag.IntVar(&cfg.n, "n", 0, "messages to send in all (0: until interrupted)")
	flag.IntVar(&cfg.conns, "conns", 1, "connections sending in parallel")
	flag.IntVar(&cfg.size, "size", 110, "marshaled size of each Note in bytes")
	flag.Float64Var(&cfg.rate, "rate", 0, "messages per second in all (0: as fast as possible)")
	flag.BoolVar(&cfg.tls, "tls", false, "speak TLS, trusting the system's roots")
	flag.StringVar(&cfg.tlsCA, "tls-ca", "", "speak TLS, trusting the certificates of this PEM file")
	flag.StringVar(&cfg.tlsName, "tls-server-name", "", "name to check the server's certificate against (default: the host of -addr)")
	flag.BoolVar(&cfg.batch, "batch", false, "batching mode: buffer writes (-buffer, -flush-interval) and Flush at the end")
	flag.Var(&cfg.buffer, "buffer", "write buffer of -batch, in bytes or with a KiB or MiB suffix")
	flag.DurationVar(&cfg.flushInterval, "flush-interval", 0, "how long the flusher of -batch may wait for more messages")
	flag.DurationVar(&cfg.writeTimeout, "write-timeout", 0, "bound on each write system call (0: no limit)")
	flag.DurationVar(&cfg.stall, "stall", 0, "how long written bytes may stay unacknowledged by the server's TCP before the connection fails with ErrPeerSilent (0: the library's 30 s; negative: no bound)")
	flag.IntVar(&cfg.retries, "retries", 0, "reconnect with a RetryPolicy of this many attempts (0: no policy)")
	flag.DurationVar(&cfg.retryWait, "retry-wait", 0, "longest time one reconnect may take with -retries (0: the library's 30 s)")
	flag.BoolVar(&cfg.echo, "echo", false, "expect a reply to every message and report round-trip times")
	flag.DurationVar(&cfg.replyWait, "reply-wait", 5*time.Second, "with -echo, how long to wait for missing replies after sending")
	flag.BoolVar(&cfg.ack, "ack", false, "acknowledged delivery: the server (run with -ack) acknowledges what its callback had")
	flag.DurationVar(&cfg.ackWait, "ack-wait", 10*time.Second, "with -ack, how long to wait for acknowledgements after sending")
	flag.DurationVar(&cfg.heartbeat, "heartbeat", 0, "with -ack, how long to wait to hear from the server before dialing again (0: the library's 5 s; negative: off)")
	flag.Parse()
	switch {
	case flag.NArg() > 0:
		usage(fmt.Errorf("unexpected arguments %q", flag.Args()))
	case cfg.n < 0 || cfg.conns < 1 || cfg.rate < 0:
		usage(errors.New("-n and -rate must not be negative, and -conns must be at least 1"))
	case cfg.buffer < 1 || cfg.flushInterval < 0 || cfg.writeTimeout < 0 || cfg.retries < 0 || cfg.retryWait < 0 || cfg.replyWait < 0 || cfg.ackWait < 0:
		usage(errors.New("-buffer must be positive, and -retries and the durations must not be negative"))
	case cfg.ack && cfg.echo:
		usage(errors.New("-ack and -echo do not go together: with acknowledged delivery the way back carries the acknowledgements"))
	case cfg.heartbeat != 0 && !cfg.ack:
		usage(errors.New("-heartbeat needs -ack: only acknowledged delivery has heartbeats"))
	}
	// -framing delim takes its delimiter, escaped, from -delim.
	if strings.EqualFold(cfg.framing, "delim") {
		cfg.framing = "delim:" + *delim
	}
	framing, err := buffstreams.ParseFraming(cfg.framing, cfg.max)
	if err != nil {
		usage(err)
	}
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		usage(err)
	}
	if !run(cfg, framing, tlsConfig) {
		os.Exit(1)
	}
}

func usage(err error) {
	fmt.Fprintln(os.Stderr, "client:", err)
	os.Exit(2)
}

// config holds the flags.
type config struct {
	addr, framing       string
	max, n, conns, size int
	rate                float64
	tls                 bool
	tlsCA, tlsName      string
	batch               bool
	buffer              byteSize
	flushInterval       time.Duration
	writeTimeout        time.Duration
	stall               time.Duration
	retries             int
	retryWait           time.Duration
	echo                bool
	replyWait           time.Duration
	ack                 bool
	ackWait             time.Duration
	heartbeat           time.Duration
}

// tlsConfig returns the TLS configuration the flags ask for, or nil for
// plain TCP.
func (cfg *config) tlsConfig() (*tls.Config, error) {
	if !cfg.tls && cfg.tlsCA == "" {
		if cfg.tlsName != "" {
			return nil, errors.New("-tls-server-name needs -tls or -tls-ca")
		}
		return nil, nil
	}
	// An empty ServerName is filled in by the library from the address.
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.tlsName}
	if cfg.tlsCA != "" {
		pem, err := os.ReadFile(cfg.tlsCA)
		if err != nil {
			return nil, err
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no PEM certificate in %s", cfg.tlsCA)
		}
	}
	return c, nil
}

// byteSize is a flag holding a number of bytes, written plain or with a KiB
// or MiB suffix.
type byteSize int

func (b *byteSize) String() string { return strconv.Itoa(int(*b)) }

func (b *byteSize) Set(s string) error {
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}} {
		if t, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = t, u.mult
			break
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > (1<<31-1)/mult {
		return fmt.Errorf("%q is not a size such as 262144 or 256KiB", s)
	}
	*b = byteSize(v * mult)
	return nil
}

// sender is the state shared by the connections' goroutines.
type sender struct {
	cfg     config
	framing buffstreams.Framing
	tls     *tls.Config
	retry   *buffstreams.RetryPolicy
	log     *slog.Logger
	start   time.Time
	tickets atomic.Int64 // messages claimed so far, for pacing
	conns   []atomic.Pointer[buffstreams.TCPConn]
	sizes   []atomic.Int64     // the payload size of each connection's Notes
	abort   context.CancelFunc // stops every connection, after a mismatch

	connErrors atomic.Uint64 // connections that ended with an error

	attempted  atomic.Uint64 // messages given to Write
	failed     atomic.Uint64 // messages passed to OnWriteError
	replies    atomic.Uint64 // replies received, with -echo
	badReplies atomic.Uint64 // of those, replies that are not a Note with a date
	rtt        histogram
}

// run sends the messages and prints the final line. It reports whether the
// exit status should be 0.
func run(cfg config, framing buffstreams.Framing, tlsConfig *tls.Config) bool {
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// ctx ends on a signal, or when a dial finds that the server's settings
	// differ, which no other connection can change.
	ctx, abort := context.WithCancel(sigCtx)
	defer abort()
	s := &sender{
		cfg:     cfg,
		framing: framing,
		tls:     tlsConfig,
		log:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
		start:   time.Now(),
		conns:   make([]atomic.Pointer[buffstreams.TCPConn], cfg.conns),
		sizes:   make([]atomic.Int64, cfg.conns),
		abort:   abort,
	}
	if cfg.retries > 0 {
		s.retry = &buffstreams.RetryPolicy{MaxAttempts: cfg.retries, MaxWait: cfg.retryWait}
	}
	var wg sync.WaitGroup
	for i := range cfg.conns {
		quota := 0 // unlimited
		if cfg.n > 0 {
			quota = cfg.n / cfg.conns
			if i < cfg.n%cfg.conns {
				quota++
			}
			if quota == 0 {
				continue
			}
		}
		wg.Go(func() {
			if err := s.send(ctx, i, quota); err != nil {
				s.connErrors.Add(1)
				fmt.Fprintf(os.Stderr, "client: connection %d: %v\n", i, err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var force <-chan time.Time
	interrupted := sigCtx.Done()
	var prev uint64
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-interrupted:
			// The connections stop at their next message. Close them
			// under any that is stuck reconnecting or waiting for
			// replies, if they take too long; a second signal kills.
			stop()
			interrupted = nil
			force = time.After(forceClose)
		case <-force:
			for i := range s.conns {
				if c := s.conns[i].Load(); c != nil {
					c.Close()
				}
			}
		case <-tick.C:
			st := s.stats()
			// MessagesWritten goes down when a connection fails with
			// messages its server's TCP never acknowledged.
			fmt.Fprintf(os.Stderr, "progress sent=%d written=%d rate=%d/s failed=%d acked=%d reconnects=%d",
				s.attempted.Load(), st.MessagesWritten, max(int64(st.MessagesWritten)-int64(prev), 0), s.failed.Load(), st.MessagesAcked, st.Reconnects)
			if cfg.ack {
				fmt.Fprintf(os.Stderr, " silent=%d", st.SilentPeers)
			}
			if cfg.echo {
				fmt.Fprintf(os.Stderr, " replies=%d", s.replies.Load())
			}
			fmt.Fprintln(os.Stderr)
			prev = st.MessagesWritten
		}
	}
	elapsed := time.Since(s.start)
	wasInterrupted := sigCtx.Err() != nil

	// Every connection is closed: the counters are final.
	st := s.stats()
	sent, failed := s.attempted.Load(), s.failed.Load()
	line := fmt.Sprintf("sent=%d written=%d failed=%d unacked=%d acked=%d bytes=%d errors=%d reconnects=%d elapsed=%.3f rate=%.0f",
		sent, st.MessagesWritten, failed, st.Unacknowledged, st.MessagesAcked, st.BytesWritten, st.WriteErrors, st.Reconnects,
		elapsed.Seconds(), float64(st.MessagesWritten)/elapsed.Seconds())
	ok := st.MessagesWritten > 0 || (cfg.n == 0 && wasInterrupted)
	if n := s.connErrors.Load(); n > 0 {
		ok = false
	} else if cfg.n > 0 && sent < uint64(cfg.n) && !wasInterrupted {
		fmt.Fprintf(os.Stderr, "client: %d of %d messages were not sent\n", uint64(cfg.n)-sent, cfg.n)
		ok = false
	}
	if cfg.ack {
		line += fmt.Sprintf(" silent=%d", st.SilentPeers)
	}
	if cfg.echo {
		replies := s.replies.Load()
		line += fmt.Sprintf(" replies=%d rtt_p50=%v rtt_p99=%v", replies, s.rtt.quantile(0.50), s.rtt.quantile(0.99))
		if bad := s.badReplies.Load(); bad > 0 {
			fmt.Fprintf(os.Stderr, "client: %s not the Notes sent\n", plural(bad, "reply was", "replies were"))
			ok = false
		}
		if replies < st.MessagesWritten && !wasInterrupted {
			fmt.Fprintf(os.Stderr, "client: %s got no reply\n", plural(st.MessagesWritten-replies, "written message", "written messages"))
			ok = false
		}
	}
	fmt.Println(line)
	if st.MessagesWritten+failed != sent {
		fmt.Fprintf(os.Stderr, "client: accounting mismatch: written %d + failed %d != sent %d\n", st.MessagesWritten, failed, sent)
		ok = false
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "client: %s could not be written\n", plural(failed, "message", "messages"))
		ok = false
	}
	if n := st.Reconnects; n > 0 && !cfg.ack {
		// A connection ended under the client and it dialed again: the
		// server closed it, or a write failed. Without acknowledgements
		// nobody knows what the server had read.
		fmt.Fprintf(os.Stderr, "client: the connection to the server ended %s while this client was sending; what was written just before may be lost (run both ends with -ack to know)\n", plural(n, "time", "times"))
		ok = false
	}
	return ok
}

// stats adds up the counters of the connections dialed so far. With -ack,
// MessagesWritten and BytesWritten count the acknowledged messages: every
// connection sends Notes of one size, so their bytes follow from their
// number.
func (s *sender) stats() buffstreams.ConnStats {
	var sum buffstreams.ConnStats
	for i := range s.conns {
		if c := s.conns[i].Load(); c != nil {
			st := c.Stats()
			if s.cfg.ack {
				st.MessagesWritten = st.MessagesAcked
				st.BytesWritten = st.MessagesAcked * uint64(s.sizes[i].Load())
			}
			sum.MessagesWritten += st.MessagesWritten
			sum.BytesWritten += st.BytesWritten
			sum.WriteErrors += st.WriteErrors
			sum.MessagesAcked += st.MessagesAcked
			sum.Reconnects += st.Reconnects
			sum.PeerCloses += st.PeerCloses
			sum.SilentPeers += st.SilentPeers
			sum.Unacknowledged += st.Unacknowledged
		}
	}
	return sum
}

// serverGone reports whether err, from Write, Flush or OnWriteError, says
// that the connection will not reach its server again: a reconnect failed
// within the Retry policy's limits, or found settings that differ.
func serverGone(err error) bool {
	return errors.Is(err, buffstreams.ErrReconnectFailed) || mismatch(err)
}

// mismatch reports whether err says that the server's settings differ from
// the client's, which no retry can change.
func mismatch(err error) bool {
	return errors.Is(err, buffstreams.ErrAcksOff) || errors.Is(err, buffstreams.ErrAckMismatch) || errors.Is(err, buffstreams.ErrTLSMismatch)
}

// send dials connection i and writes quota messages on it (0: until ctx is
// done), then flushes, waits for the replies with -echo or the
// acknowledgements with -ack, and closes it. If the server is gone for good
// it stops sending at once and closes.
func (s *sender) send(ctx context.Context, i, quota int) error {
	// gone holds the first error that says the server is gone for good,
	// from OnWriteError (which runs on the library's goroutines) or from
	// Write and Flush.
	var gone atomic.Pointer[error]
	giveUp := func(err error) {
		if serverGone(err) {
			gone.CompareAndSwap(nil, &err)
		}
	}
	cc := &buffstreams.TCPConnConfig{
		Addresses:      strings.Split(s.cfg.addr, ","),
		MaxMessageSize: s.cfg.max,
		Framing:        s.framing,
		Logger:         s.log,
		TLSConfig:      s.tls,
		Retry:          s.retry,
		WriteTimeout:   s.cfg.writeTimeout,
		StallTimeout:   s.cfg.stall,
		OnWriteError: func(_ []byte, err error) {
			s.failed.Add(1)
			giveUp(err)
		},
	}
	if s.cfg.batch {
		cc.WriteBufferSize = int(s.cfg.buffer)
		cc.FlushInterval = s.cfg.flushInterval
	}
	if s.cfg.ack {
		cc.Acks = &buffstreams.AckConfig{HeartbeatTimeout: s.cfg.heartbeat}
	}
	conn, err := buffstreams.DialTCPContext(ctx, cc)
	if err != nil {
		if mismatch(err) {
			s.abort()
		}
		return err
	}
	s.conns[i].Store(conn)
	var r *replyReader
	if s.cfg.echo {
		r = newReplyReader(s, conn)
		go r.run()
	}
	err = s.stream(ctx, conn, i, quota, giveUp, func() bool { return gone.Load() != nil })
	// Once the server is gone, Flush and Sync could only start another
	// round of dials: Close fails what is left at once.
	if gone.Load() == nil {
		// A failure of Flush or Sync needs no report beyond the reason to
		// stop: every message it concerns went to OnWriteError.
		giveUp(conn.Flush())
		if s.cfg.ack && gone.Load() == nil {
			sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ackWait)
			giveUp(conn.Sync(sctx))
			cancel()
		}
	}
	if r != nil {
		r.await(ctx)
	}
	cerr := conn.Close() // reports a server that closed the connection unseen
	if r != nil {
		r.close()
	}
	if p := gone.Load(); p != nil && err == nil {
		err = fmt.Errorf("the server is gone: %w", *p)
	}
	switch {
	case cerr == nil || err != nil:
	case errors.Is(cerr, buffstreams.ErrPeerClosed) && !errors.Is(cerr, syscall.ECONNRESET) && !errors.Is(cerr, buffstreams.ErrWrongProtocol) && !errors.Is(cerr, buffstreams.ErrAcksOff):
		// A clean close after the last message: the server had read
		// everything, or its close would have been a reset.
		fmt.Fprintf(os.Stderr, "client: connection %d: the server closed it after the last message\n", i)
	default:
		err = fmt.Errorf("closing: %w", cerr)
	}
	return err
}

// stream writes quota messages on conn (0: until ctx is done). It stops
// early once gone reports that the server is gone for good, and passes
// Write's errors to giveUp, which decides that.
func (s *sender) stream(ctx context.Context, conn *buffstreams.TCPConn, i, quota int, giveUp func(error), gone func() bool) error {
	note := newNote(s.cfg.size, i)
	payload, err := proto.Marshal(note)
	if err != nil {
		return err
	}
	s.sizes[i].Store(int64(len(payload)))
	if len(payload) > conn.MaxMessageSize() {
		return fmt.Errorf("a %d-byte Note exceeds the maximum message size of %d", len(payload), conn.MaxMessageSize())
	}
	done := ctx.Done()
	var failures int
	for sent := 0; quota == 0 || sent < quota; sent++ {
		if s.cfg.rate > 0 && !s.pace(done) {
			return nil
		}
		select {
		case <-done:
			return nil
		default:
		}
		if gone() {
			return nil
		}
		if s.cfg.echo {
			note.Date = time.Now().UnixNano()
			if payload, err = (proto.MarshalOptions{}).MarshalAppend(payload[:0], note); err != nil {
				return err
			}
		}
		s.attempted.Add(1)
		if _, err := conn.Write(payload); err != nil {
			giveUp(err)
			if gone() {
				return nil
			}
			if errors.Is(err, buffstreams.ErrDelimiterInPayload) {
				return fmt.Errorf("framing %s cannot carry this Note (delimited framings are for text; try -delim '\\x00'): %w", s.framing, err)
			}
			failures++
			if failures == maxFailures {
				return fmt.Errorf("giving up after %s in a row: %w", plural(failures, "failed write", "failed writes"), err)
			}
			if !sleep(done, time.Duration(1<<failures)*time.Millisecond) {
				return nil
			}
			continue
		}
		failures = 0
	}
	return nil
}

// pace claims the next message of the overall rate and waits until it is
// due, so that no more than rate*elapsed messages go out. It reports false
// if done was closed meanwhile.
func (s *sender) pace(done <-chan struct{}) bool {
	k := s.tickets.Add(1) - 1
	due := s.start.Add(time.Duration(float64(k) / s.cfg.rate * float64(time.Second)))
	return sleep(done, time.Until(due))
}

// A replyReader reads the replies of one connection with -echo, in its own
// goroutine, which the connection's sender starts and stops.
type replyReader struct {
	s      *sender
	conn   *buffstreams.TCPConn
	got    atomic.Uint64 // replies read
	kick   chan struct{} // capacity 1: a reply arrived
	stop   chan struct{} // closed by close
	exited chan struct{} // closed when run returns
}

func newReplyReader(s *sender, conn *buffstreams.TCPConn) *replyReader {
	return &replyReader{s: s, conn: conn, kick: make(chan struct{}, 1), stop: make(chan struct{}), exited: make(chan struct{})}
}

// run reads replies until stop is closed. A reply is the Note sent, whose
// date is its send time.
func (r *replyReader) run() {
	defer close(r.exited)
	var note message.Note
	for {
		for msg, err := range r.conn.Messages() {
			if err != nil {
				break
			}
			now := time.Now().UnixNano()
			if proto.Unmarshal(msg, &note) != nil || note.Date == 0 {
				r.s.badReplies.Add(1)
			} else {
				r.s.rtt.record(time.Duration(now - note.Date))
			}
			r.s.replies.Add(1)
			r.got.Add(1)
			select {
			case r.kick <- struct{}{}:
			default:
			}
		}
		// Closed, or failed: then the next Messages dials again (the
		// writes do too). Pause so as not to spin while the server is
		// down.
		if !sleep(r.stop, 20*time.Millisecond) {
			return
		}
	}
}

// await waits until every message written on the connection has been
// answered, for at most -reply-wait, or until ctx is done.
func (r *replyReader) await(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	t := time.NewTimer(r.s.cfg.replyWait)
	defer t.Stop()
	for r.got.Load() < r.conn.Stats().MessagesWritten {
		select {
		case <-r.kick:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// close stops the reader and waits for it. The connection must be closed
// first, to end a read in progress.
func (r *replyReader) close() {
	close(r.stop)
	<-r.exited
}

// sleep waits for d, or until done is closed, which it reports as false.
func sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// histogram counts durations in buckets 1/64 of a power of two wide, so a
// quantile is known to within 1/64 of its value. It is safe for concurrent
// use.
type histogram struct {
	counts [64 * 60]atomic.Uint64
}

// bucket returns the bucket of a duration of v nanoseconds: v itself below
// 128, else 64*e + (v >> e), where e makes v >> e fall in [64, 128).
func bucket(v uint64) int {
	if v < 128 {
		return int(v)
	}
	e := bits.Len64(v) - 7
	return 64*e + int(v>>e)
}

// bucketMid returns the middle of bucket b, in nanoseconds.
func bucketMid(b int) uint64 {
	if b < 128 {
		return uint64(b)
	}
	e := b/64 - 1
	m := uint64(b - 64*e)
	return m<<e + (1<<e)/2
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucket(uint64(max(d, 0)))].Add(1)
}

// quantile returns the duration below which a fraction q of the recorded
// ones fall, or 0 if none was recorded.
func (h *histogram) quantile(q float64) time.Duration {
	var total uint64
	for i := range h.counts {
		total += h.counts[i].Load()
	}
	if total == 0 {
		return 0
	}
	rank := max(uint64(q*float64(total)+0.5), 1)
	var seen uint64
	for i := range h.counts {
		if seen += h.counts[i].Load(); seen >= rank {
			return time.Duration(bucketMid(i)).Round(time.Microsecond)
		}
	}
	return 0
}

// newNote returns the Note of connection i, whose marshaled size is size
// bytes if possible and never less than that of a Note with only a name and
// a date. The date is now, in nanoseconds since 1970: its varint takes 9
// bytes from 1972 to 2262, so a Note keeps its size when it is stamped again.
func newNote(size, i int) *message.Note {
	n := &message.Note{Name: fmt.Sprintf("client-%d", i), Date: time.Now().UnixNano()}
	// The comment takes a tag byte, its length as a varint, then the text.
	if rest := size - proto.Size(n); rest >= 2 {
		l := rest - 2
		for l > 0 && 1+protowire.SizeVarint(uint64(l))+l > rest {
			l--
		}
		comment := fmt.Sprintf("note from connection %d ", i)
		if l < len(comment) {
			comment = comment[:l]
		}
		n.Comment = comment + strings.Repeat("x", l-len(comment))
	}
	// A byte or two may be missing where the comment's length varint grows
	// by a byte: the name makes them up.
	for proto.Size(n) < size {
		n.Name += "."
	}
	return n
}

// plural returns n followed by one if n is 1, or by many otherwise: "1
// message", "2 messages".
func plural[N ~int | ~int64 | ~uint64](n N, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
