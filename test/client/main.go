// Command client sends message.Note messages with buffstreams TCPConns, for
// manual and end-to-end testing with the server in ../server.
//
// Usage:
//
//	client [-addr 127.0.0.1:5031] [-framing buffstreams] [-delim '\n'] [-max 4096]
//	       [-n 0] [-conns 1] [-size 110] [-rate 0]
//
// Flags:
//
//	-addr     address of the server
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
//	          contain a zero byte (their strings are ASCII text and their
//	          varints are minimal and non-zero)
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
//
// Each connection marshals its Note once and writes the same bytes again and
// again. A failed Write is not retried (the library dials again on the next
// one); after 10 failures in a row, with a growing pause between them, the
// connection gives up, and at once if the framing cannot carry the Note
// (ErrDelimiterInPayload), which no retry can change. A progress line goes to
// stderr every second, with the dial errors and the library's logs. At the
// end (all sent, or SIGINT or SIGTERM) it prints one line on stdout:
//
//	sent=N bytes=B errors=E elapsed=S rate=R
//
// N is the number of messages whose Write succeeded, B their payload bytes,
// E the number of Writes that failed, S the seconds spent sending and R = N/S
// messages per second. It exits 0 if it sent a message (or was interrupted
// with -n 0), and 1 if it could not send at all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
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

func main() {
	var cfg config
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:5031", "address of the server")
	flag.StringVar(&cfg.framing, "framing", "buffstreams", "wire format: buffstreams, uvarint, fixed1, fixed2, fixed3, fixed4, fixed8, fixed2le, fixed4le, fixed8le, fixed4incl, lines, delim (ended by -delim) or delim:DELIM")
	delim := flag.String("delim", `\n`, "delimiter of -framing delim, with Go escapes such as \\r\\n or \\x00 (for text payloads: marshaled Notes contain \\n, never \\x00)")
	flag.IntVar(&cfg.max, "max", buffstreams.DefaultMaxMessageSize, "MaxMessageSize in bytes")
	flag.IntVar(&cfg.n, "n", 0, "messages to send in all (0: until interrupted)")
	flag.IntVar(&cfg.conns, "conns", 1, "connections sending in parallel")
	flag.IntVar(&cfg.size, "size", 110, "marshaled size of each Note in bytes")
	flag.Float64Var(&cfg.rate, "rate", 0, "messages per second in all (0: as fast as possible)")
	flag.Parse()
	if cfg.n < 0 || cfg.conns < 1 || cfg.rate < 0 {
		fmt.Fprintln(os.Stderr, "client: -n and -rate must not be negative, and -conns must be at least 1")
		os.Exit(2)
	}
	// -framing delim takes its delimiter, escaped, from -delim.
	if strings.EqualFold(cfg.framing, "delim") {
		cfg.framing = "delim:" + *delim
	}
	framing, err := buffstreams.ParseFraming(cfg.framing, cfg.max)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(2)
	}
	if !run(cfg, framing) {
		os.Exit(1)
	}
}

// config holds the flags.
type config struct {
	addr, framing       string
	max, n, conns, size int
	rate                float64
}

// sender is the state shared by the connections' goroutines.
type sender struct {
	cfg     config
	framing buffstreams.Framing
	log     *slog.Logger
	start   time.Time
	tickets atomic.Int64 // messages claimed so far, for pacing
	conns   []atomic.Pointer[buffstreams.TCPConn]
}

// run sends the messages and prints the final line. It reports whether the
// exit status should be 0.
func run(cfg config, framing buffstreams.Framing) bool {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := &sender{
		cfg:     cfg,
		framing: framing,
		log:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
		start:   time.Now(),
		conns:   make([]atomic.Pointer[buffstreams.TCPConn], cfg.conns),
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
				fmt.Fprintf(os.Stderr, "client: connection %d: %v\n", i, err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prev uint64
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			st := s.stats()
			fmt.Fprintf(os.Stderr, "progress sent=%d rate=%d/s errors=%d\n", st.MessagesWritten, st.MessagesWritten-prev, st.WriteErrors)
			prev = st.MessagesWritten
		}
	}
	elapsed := time.Since(s.start)
	interrupted := ctx.Err() != nil

	st := s.stats()
	fmt.Printf("sent=%d bytes=%d errors=%d elapsed=%.3f rate=%.0f\n",
		st.MessagesWritten, st.BytesWritten, st.WriteErrors, elapsed.Seconds(),
		float64(st.MessagesWritten)/elapsed.Seconds())
	return st.MessagesWritten > 0 || (cfg.n == 0 && interrupted)
}

// stats adds up the counters of the connections dialed so far.
func (s *sender) stats() buffstreams.ConnStats {
	var sum buffstreams.ConnStats
	for i := range s.conns {
		if c := s.conns[i].Load(); c != nil {
			st := c.Stats()
			sum.MessagesWritten += st.MessagesWritten
			sum.BytesWritten += st.BytesWritten
			sum.WriteErrors += st.WriteErrors
		}
	}
	return sum
}

// send dials connection i and writes quota messages on it (0: until ctx is
// done).
func (s *sender) send(ctx context.Context, i, quota int) error {
	conn, err := buffstreams.DialTCPContext(ctx, &buffstreams.TCPConnConfig{
		Address:        s.cfg.addr,
		MaxMessageSize: s.cfg.max,
		Framing:        s.framing,
		Logger:         s.log,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	s.conns[i].Store(conn)

	payload, err := proto.Marshal(newNote(s.cfg.size, i))
	if err != nil {
		return err
	}
	if len(payload) > conn.MaxMessageSize() {
		return fmt.Errorf("a %d-byte Note exceeds the maximum message size of %d", len(payload), conn.MaxMessageSize())
	}

	done := ctx.Done()
	var failures int
	var lastErr error
	for sent := 0; quota == 0 || sent < quota; sent++ {
		if s.cfg.rate > 0 && !s.pace(done) {
			return nil
		}
		select {
		case <-done:
			return nil
		default:
		}
		if _, err := conn.Write(payload); err != nil {
			if errors.Is(err, buffstreams.ErrDelimiterInPayload) {
				return fmt.Errorf("framing %s cannot carry this Note (delimited framings are for text; try -delim '\\x00'): %w", s.framing, err)
			}
			failures++
			lastErr = err
			if failures == maxFailures {
				return fmt.Errorf("giving up after %d failed writes in a row: %w", failures, lastErr)
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

// sleep waits for d, or until done is closed, which it reports as false.
func sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
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

// newNote returns the Note of connection i, whose marshaled size is size
// bytes if possible and never less than that of a Note with only a name and
// a date.
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
