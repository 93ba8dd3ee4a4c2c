// Command server receives framed messages with a buffstreams TCPListener and
// reports how many arrived, for manual and end-to-end testing with the
// client in ../client.
//
// Usage:
//
//	server [-addr :5031] [-framing buffstreams] [-delim '\n'] [-max 4096] [-n 0]
//	       [-decode=true] [-v] [-echo] [-tls-cert FILE -tls-key FILE]
//	       [-grace 3s] [-read-timeout 0] [-idle-timeout 0] [-write-timeout 0]
//	       [-max-conns 0] [-ack]
//
// Flags:
//
//	-addr     address to listen on; "127.0.0.1:0" picks a free port
//	-framing  wire format: buffstreams, uvarint, fixed1, fixed2, fixed3,
//	          fixed4, fixed8, fixed2le, fixed4le, fixed8le, fixed4incl,
//	          lines, delim (ended by -delim) or delim:DELIM (see
//	          buffstreams.ParseFraming)
//	-delim    the delimiter of -framing delim, with Go's escapes: '\n',
//	          '\r\n', '\x00'; a quote is written '\"'. Delimited framings
//	          are for text: a marshaled Note contains 0x0a, the tag of its
//	          field 1, so with '\n' it cannot be sent; '\x00' works, since
//	          the client's Notes never contain a zero byte
//	-max      MaxMessageSize in bytes; with the buffstreams framing it must
//	          match the client's
//	-n        exit after receiving this many messages; 0 runs until SIGINT
//	          or SIGTERM
//	-decode   unmarshal each payload into a message.Note; a failure counts
//	          as an error. -decode=false skips it, so that the server
//	          measures the transport alone: any payload is accepted, and
//	          nothing but the framing is checked
//	-v        log each decoded Note's comment to stderr (needs -decode)
//	-echo     answer each message on its connection with the same payload,
//	          byte for byte, as the client's -echo expects. With -decode the
//	          reply is still the payload as received (re-marshaling the
//	          decoded Note would give the same bytes for the client's Notes,
//	          at the cost of an allocation), and a payload that does not
//	          decode gets no reply. A client that does not read its replies
//	          stalls its connection once the socket buffers are full;
//	          -write-timeout closes it instead
//	-tls-cert, -tls-key
//	          serve TLS (1.2 or later) with this PEM certificate chain and
//	          private key, as read by tls.LoadX509KeyPair; give both or
//	          neither
//	-grace    on SIGINT or SIGTERM, how long to let connections hand over
//	          what they have sent (TCPListener.Shutdown) before closing them
//	          (Close); 0 closes at once
//	-read-timeout, -idle-timeout, -write-timeout, -max-conns
//	          the TCPListenerConfig settings of the same names; 0 means no
//	          limit
//	-ack      acknowledged delivery (TCPListenerConfig.Acks, with the
//	          default AckConfig): every connection must open with the hello
//	          of a client run with -ack, which learns what the callback has
//	          had; a client without it, or with another framing, -max or
//	          TLS, is refused at its first bytes and counted as
//	          wrong-protocol. On SIGINT, SIGTERM or -n, Shutdown acknowledges
//	          what was delivered and tells each client to go, so the server
//	          need not wait for -grace. Not with -echo: the way back carries
//	          the acknowledgements
//
// Once bound, it prints "listening on ADDR" on stdout, ADDR being the bound
// address. While running it prints a progress line on stderr at most once a
// second, when something changed, where the library's logs go too:
//
//	progress received=N rate=R/s active=A ended: eof=3 bad-input=1
//
// "ended" counts the connections that ended, by cause, as OnConnEnd
// reports them (causes with no connection are left out): eof (the client
// closed between messages), bad-input (an oversized, malformed or
// truncated frame), wrong-protocol (the client speaks TLS, HTTP or another
// framing, or acknowledged delivery at one end only), panic, refused
// (-max-conns, or a session -ack cannot take), tls (a failed handshake), timeout
// (-read-timeout or -idle-timeout), closed (by the server's shutdown) and
// other (a failed read, such as a reset).
//
// It stops after -n messages, or on SIGINT or SIGTERM. Either way it calls
// Shutdown, which stops accepting, delivers the frames each connection has
// sent, and closes the connection once its client pauses for 50 ms; a client
// that keeps sending is closed when -grace runs out, so the server exits
// within -grace of the signal (plus the time a callback in progress takes).
// A second signal during the grace period kills it at once. At exit it
// prints the listener's statistics and the count of every cause of a
// connection's end on stderr ("ended: eof=3 bad-input=1 wrong-protocol=0
// ..."), and one line on stdout:
//
//	received=N bytes=B errors=E conns=C elapsed=S rate=R
//
// N is the number of messages received, B their payload bytes, E the decode
// failures, the replies that could not be written, and the connections
// closed for bad input or a failed TLS handshake, C the connections
// accepted, S the seconds from the first message to the last and R = N/S
// messages per second. It exits 0 then, 1 if it cannot listen, and 2 if the
// flags are wrong.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/buffstreams/buffstreams"
	"github.com/buffstreams/buffstreams/test/message"
	"google.golang.org/protobuf/proto"
)

// options holds the flags.
type options struct {
	addr, framing   string
	max             int
	n               int
	decode, verbose bool
	echo            bool
	tlsCert, tlsKey string
	grace           time.Duration
	readTimeout     time.Duration
	idleTimeout     time.Duration
	writeTimeout    time.Duration
	maxConns        int
	ack             bool
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", ":5031", "address to listen on")
	flag.StringVar(&o.framing, "framing", "buffstreams", "wire format: buffstreams, uvarint, fixed1, fixed2, fixed3, fixed4, fixed8, fixed2le, fixed4le, fixed8le, fixed4incl, lines, delim (ended by -delim) or delim:DELIM")
	delim := flag.String("delim", `\n`, "delimiter of -framing delim, with Go escapes such as \\r\\n or \\x00 (for text payloads: marshaled Notes contain \\n)")
	flag.IntVar(&o.max, "max", buffstreams.DefaultMaxMessageSize, "MaxMessageSize in bytes")
	flag.IntVar(&o.n, "n", 0, "exit after receiving this many messages (0: run until interrupted)")
	flag.BoolVar(&o.decode, "decode", true, "unmarshal each payload into a message.Note (false: measure the transport alone)")
	flag.BoolVar(&o.verbose, "v", false, "log each decoded Note's comment to stderr")
	flag.BoolVar(&o.echo, "echo", false, "answer each message on its connection with the same payload")
	flag.StringVar(&o.tlsCert, "tls-cert", "", "serve TLS with this PEM certificate (chain) file; needs -tls-key")
	flag.StringVar(&o.tlsKey, "tls-key", "", "PEM private key file of -tls-cert")
	flag.DurationVar(&o.grace, "grace", 3*time.Second, "on SIGINT or SIGTERM, how long connections may drain before they are closed (0: close at once)")
	flag.DurationVar(&o.readTimeout, "read-timeout", 0, "longest time a frame may take to arrive once begun (0: no limit)")
	flag.DurationVar(&o.idleTimeout, "idle-timeout", 0, "close connections idle this long between frames (0: never)")
	flag.DurationVar(&o.writeTimeout, "write-timeout", 0, "bound on each reply write with -echo (0: no limit)")
	flag.IntVar(&o.maxConns, "max-conns", 0, "most connections served at once (0: no limit)")
	flag.BoolVar(&o.ack, "ack", false, "acknowledged delivery: acknowledge what the callback had to clients run with -ack")
	flag.Parse()
	o.framing = framingName(o.framing, *delim)
	framing, err := o.check()
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(2)
	}
	if err := run(o, framing); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

// check rejects flag values and combinations that cannot work, and returns
// the framing -framing names.
func (o *options) check() (buffstreams.Framing, error) {
	switch {
	case flag.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return nil, errors.New("-tls-cert and -tls-key go together")
	case o.grace < 0, o.readTimeout < 0, o.idleTimeout < 0, o.writeTimeout < 0, o.maxConns < 0, o.n < 0:
		return nil, errors.New("durations, -n and -max-conns must not be negative")
	case o.ack && o.echo:
		return nil, errors.New("-ack and -echo do not go together: with acknowledged delivery the way back carries the acknowledgements")
	}
	return buffstreams.ParseFraming(o.framing, o.max)
}

// framingName returns the ParseFraming name that the -framing and -delim
// flags select: "delim" takes its delimiter, escaped, from -delim.
func framingName(framing, delim string) string {
	if strings.EqualFold(framing, "delim") {
		return "delim:" + delim
	}
	return framing
}

// counters are updated by the listener's callbacks, which run concurrently.
type counters struct {
	received, bytes           atomic.Uint64
	decodeErrors, replyErrors atomic.Uint64
	first, last               atomic.Int64 // nanoseconds since start; first is 0 until set
}

// causes names the causes of a connection's end that the server counts.
var causes = [...]string{"eof", "bad-input", "wrong-protocol", "panic", "refused", "tls", "timeout", "closed", "other"}

// causeOf returns the index in causes of the cause err names, as
// OnConnEnd reports it.
func causeOf(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, buffstreams.ErrWrongProtocol), errors.Is(err, buffstreams.ErrAcksOff),
		errors.Is(err, buffstreams.ErrAckMismatch), errors.Is(err, buffstreams.ErrTLSMismatch),
		errors.Is(err, buffstreams.ErrAckProtocol):
		return 2
	case errors.Is(err, buffstreams.ErrMessageTooLarge), errors.Is(err, buffstreams.ErrMalformedHeader), errors.Is(err, io.ErrUnexpectedEOF):
		return 1
	case errors.Is(err, buffstreams.ErrCallbackPanic):
		return 3
	case errors.Is(err, buffstreams.ErrTooManyConnections), errors.Is(err, buffstreams.ErrAckRefused):
		return 4
	case errors.Is(err, buffstreams.ErrTLSHandshake):
		return 5
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 6
	case errors.Is(err, net.ErrClosed):
		return 7
	}
	return 8
}

// endCounts counts connection ends by cause; OnConnEnd calls add
// concurrently.
type endCounts [len(causes)]atomic.Uint64

func (e *endCounts) add(err error) { e[causeOf(err)].Add(1) }

// snapshot returns the counts.
func (e *endCounts) snapshot() (s [len(causes)]uint64) {
	for i := range e {
		s[i] = e[i].Load()
	}
	return s
}

// format writes counts as "eof=3 bad-input=1", leaving out the zero ones
// unless all is set.
func format(counts [len(causes)]uint64, all bool) string {
	var b strings.Builder
	for i, n := range counts {
		if n == 0 && !all {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", causes[i], n)
	}
	return b.String()
}

func run(o options, framing buffstreams.Framing) error {
	var tlsConfig *tls.Config
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return err
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	start := time.Now()
	var c counters
	reached := make(chan struct{})
	// handle decodes and answers one message, as the flags say.
	handle := func(conn *buffstreams.TCPConn, p []byte) error {
		if o.decode {
			var note message.Note
			if err := proto.Unmarshal(p, &note); err != nil {
				c.decodeErrors.Add(1)
				return fmt.Errorf("decoding a Note: %w", err)
			}
			if o.verbose {
				log.Info("note", "name", note.GetName(), "comment", note.GetComment())
			}
		}
		if o.echo {
			if _, err := conn.Write(p); err != nil {
				c.replyErrors.Add(1)
				return fmt.Errorf("replying: %w", err)
			}
		}
		return nil
	}
	callback := func(conn *buffstreams.TCPConn, p []byte) error {
		now := int64(time.Since(start)) + 1 // never 0
		c.first.CompareAndSwap(0, now)
		c.last.Store(now)
		err := handle(conn, p)
		// Counted after the reply, so that when -n is reached the last
		// reply has been written.
		c.bytes.Add(uint64(len(p)))
		if c.received.Add(1) == uint64(o.n) {
			close(reached)
		}
		return err
	}

	var ends endCounts
	var acks *buffstreams.AckConfig
	if o.ack {
		acks = &buffstreams.AckConfig{}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := buffstreams.ListenTCPContext(ctx, buffstreams.TCPListenerConfig{
		Address:        o.addr,
		MaxMessageSize: o.max,
		Framing:        framing,
		ConnCallback:   callback,
		EnableLogging:  true,
		Logger:         log,
		TLSConfig:      tlsConfig,
		ReadTimeout:    o.readTimeout,
		IdleTimeout:    o.idleTimeout,
		WriteTimeout:   o.writeTimeout,
		MaxConns:       o.maxConns,
		OnConnEnd:      func(_ *buffstreams.TCPConn, err error) { ends.add(err) },
		Acks:           acks,
	})
	if err != nil {
		return err
	}
	if err := ln.StartListeningAsync(); err != nil {
		ln.Close()
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	if tlsConfig != nil {
		fmt.Fprintf(os.Stderr, "serving TLS with %s\n", o.tlsCert)
	}

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// progress is what a progress line shows; a line is printed only when
	// it changed, so an idle server is quiet.
	type progress struct {
		received uint64
		active   int64
		ended    [len(causes)]uint64
	}
	var prev progress
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-reached:
			break wait
		case <-tick.C:
			now := progress{c.received.Load(), ln.Stats().Active, ends.snapshot()}
			if now == prev {
				continue
			}
			line := fmt.Sprintf("progress received=%d rate=%d/s active=%d", now.received, now.received-prev.received, now.active)
			if e := format(now.ended, false); e != "" {
				line += " ended: " + e
			}
			fmt.Fprintln(os.Stderr, line)
			prev = now
		}
	}
	stop() // from now on a second SIGINT or SIGTERM kills the process
	shutdown(ln, o.grace)

	st := ln.Stats()
	fmt.Fprintf(os.Stderr, "stats %+v\n", st)
	fmt.Fprintf(os.Stderr, "ended: %s\n", format(ends.snapshot(), true))
	got := c.received.Load()
	elapsed := time.Duration(c.last.Load() - c.first.Load())
	var rate float64
	if elapsed > 0 {
		rate = float64(got) / elapsed.Seconds()
	}
	errs := c.decodeErrors.Load() + c.replyErrors.Load() + st.BadInput + st.TLSErrors
	fmt.Printf("received=%d bytes=%d errors=%d conns=%d elapsed=%.3f rate=%.0f\n",
		got, c.bytes.Load(), errs, st.Accepted, elapsed.Seconds(), rate)
	return nil
}

// shutdown stops the listener: it lets the connections deliver what they
// have sent for up to grace, then closes them. When it returns no callback
// is running or will run.
func shutdown(ln *buffstreams.TCPListener, grace time.Duration) {
	if grace > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		err := ln.Shutdown(ctx)
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "server: connections still sending after %v: closed them\n", grace)
		}
	}
	ln.Close() // after Shutdown, a no-op: it has closed what was left
}
