// Command server receives framed messages with a buffstreams TCPListener and
// reports how many arrived, for manual and end-to-end testing with the
// client in ../client.
//
// Usage:
//
//	server [-addr :5031] [-framing buffstreams] [-delim '\n'] [-max 4096] [-n 0]
//	       [-decode=true] [-v]
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
//	          as an error
//	-v        log each decoded Note's comment to stderr (needs -decode)
//
// Once bound, it prints "listening on ADDR" on stdout, ADDR being the bound
// address. While running it prints a progress line on stderr every second,
// where the library's logs go too. On exit (after -n messages, or on SIGINT
// or SIGTERM, which close the listener cleanly) it prints one line on stdout:
//
//	received=N bytes=B errors=E conns=C elapsed=S rate=R
//
// N is the number of messages received, B their payload bytes, E the decode
// failures plus the connections closed for bad input, C the connections
// accepted, S the seconds from the first message to the last and R = N/S
// messages per second. It exits 0 then, and 1 if it cannot listen.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
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

func main() {
	addr := flag.String("addr", ":5031", "address to listen on")
	framing := flag.String("framing", "buffstreams", "wire format: buffstreams, uvarint, fixed1, fixed2, fixed3, fixed4, fixed8, fixed2le, fixed4le, fixed8le, fixed4incl, lines, delim (ended by -delim) or delim:DELIM")
	delim := flag.String("delim", `\n`, "delimiter of -framing delim, with Go escapes such as \\r\\n or \\x00 (for text payloads: marshaled Notes contain \\n)")
	maxSize := flag.Int("max", buffstreams.DefaultMaxMessageSize, "MaxMessageSize in bytes")
	n := flag.Uint64("n", 0, "exit after receiving this many messages (0: run until interrupted)")
	decode := flag.Bool("decode", true, "unmarshal each payload into a message.Note")
	verbose := flag.Bool("v", false, "log each decoded Note's comment to stderr")
	flag.Parse()
	if err := run(*addr, framingName(*framing, *delim), *maxSize, *n, *decode, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
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
	received, bytes, decodeErrors atomic.Uint64
	first, last                   atomic.Int64 // nanoseconds since start; first is 0 until set
}

func run(addr, framingName string, maxSize int, n uint64, decode, verbose bool) error {
	framing, err := buffstreams.ParseFraming(framingName, maxSize)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	start := time.Now()
	var c counters
	reached := make(chan struct{})
	callback := func(p []byte) error {
		now := int64(time.Since(start)) + 1 // never 0
		c.first.CompareAndSwap(0, now)
		c.last.Store(now)
		c.bytes.Add(uint64(len(p)))
		if c.received.Add(1) == n {
			close(reached)
		}
		if !decode {
			return nil
		}
		var note message.Note
		if err := proto.Unmarshal(p, &note); err != nil {
			c.decodeErrors.Add(1)
			return fmt.Errorf("decoding a Note: %w", err)
		}
		if verbose {
			log.Info("note", "name", note.GetName(), "comment", note.GetComment())
		}
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := buffstreams.ListenTCPContext(ctx, buffstreams.TCPListenerConfig{
		Address:        addr,
		MaxMessageSize: maxSize,
		Framing:        framing,
		Callback:       callback,
		EnableLogging:  true,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	if err := ln.StartListeningAsync(); err != nil {
		ln.Close()
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prev uint64
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-reached:
			break wait
		case <-tick.C:
			got := c.received.Load()
			fmt.Fprintf(os.Stderr, "progress received=%d rate=%d/s active=%d\n", got, got-prev, ln.Stats().Active)
			prev = got
		}
	}
	ln.Close() // no callback runs after it returns

	st := ln.Stats()
	got := c.received.Load()
	elapsed := time.Duration(c.last.Load() - c.first.Load())
	var rate float64
	if elapsed > 0 {
		rate = float64(got) / elapsed.Seconds()
	}
	fmt.Printf("received=%d bytes=%d errors=%d conns=%d elapsed=%.3f rate=%.0f\n",
		got, c.bytes.Load(), c.decodeErrors.Load()+st.BadInput, st.Accepted, elapsed.Seconds(), rate)
	return nil
}
