// Command peers measures the libraries a Go developer would pick instead of
// buffstreams, on the workloads of test/bench, in one process over 127.0.0.1:
//
//	cd test/peers && go run .                  # the default run, about 30 s on 2 cores
//	cd test/peers && go run . -d 500ms -sizes 110 -conns 1
//	cd test/peers && go run . -json > peers.json
//	cd test/peers && go run ./chart -o perf.svg ../bench.json peers.json
//
// It is a module of its own so that users of buffstreams never download
// gRPC, gnet or the plotting library.
//
// # Throughput
//
// Every cell (one transport, one payload size, one number of connections)
// starts a server on 127.0.0.1:0 and dials its client connections, runs a
// short warm-up, then lets one goroutine per connection send messages of the
// payload size for -d or until -n messages have been sent in all, whichever
// comes first. The cell's time runs from the first send until the server has
// counted every message sent. Every goroutine of a cell has ended before the
// next cell starts; one left behind fails the run. MB/s counts payload bytes
// only, in units of 10^6 bytes.
//
// The transports (grpc.go, gnet.go, raw.go):
//
//   - "grpc": google.golang.org/grpc, one bidirectional stream per
//     connection (a grpc.ClientConn each). The service is declared by hand
//     with a grpc.ServiceDesc, and the messages are raw []byte payloads
//     carried by a codec of our own (see rawCodec), so no protobuf encoding
//     is measured: only gRPC's framing, HTTP/2 and flow control. The client
//     calls SendMsg once per message; the server calls RecvMsg once per
//     message into a reused slice. Default options otherwise, insecure
//     credentials.
//   - "gnet": github.com/panjf2000/gnet/v2, an event-loop server (one loop
//     per CPU) whose OnTraffic decodes 4-byte big-endian length-prefixed
//     frames in place with Peek and Discard. gnet is a server framework with
//     no client of note, so its clients are plain net.Conns, each writing
//     pre-framed messages (header and payload built once) with one
//     bufio.Writer.Write per message through a 64 KiB bufio.Writer, flushed
//     when the sender stops.
//   - "raw": the ceiling, as in test/bench: pre-framed 4-byte headers
//     written 256 KiB at a time (1 MiB for payloads of 32 KiB and more) on a
//     plain net.Conn, parsed in place by a goroutine per connection. No
//     library can do less work; every other transport is given as a ratio
//     to it, measured in the same run.
//
// # Latency
//
// For a payload of -rtsize bytes (110), each transport also runs a
// request-response cell: one connection, one request outstanding, the server
// echoes every message back, and the client times each round trip, for
// -rounds round trips or -d, whichever comes first, after a short warm-up.
// It reports the median and the 99th percentile. "grpc" echoes on a
// bidirectional stream (SendMsg, then RecvMsg); "gnet" writes each frame
// back from OnTraffic; "raw" is net.Conn ping-pong, reading the frame in
// place and writing it back with one Write. The clients of gnet and raw are
// the same net.Conn code.
//
// # Output
//
// Progress goes to stderr, the tables to stdout. With -json, stdout holds the
// report that test/bench -json writes (same fields, with "raw" as the
// ceiling and no baseline) plus a "latency" array of {transport, size,
// rounds, p50_us, p99_us}. The program exits 1 if any cell failed or left a
// goroutine behind, and stops early, printing what it has, on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// maxMessageSize is the largest payload -sizes accepts and the largest
// length a server takes from a header.
const maxMessageSize = 1 << 20

// ceilingName is the transport every other one is divided by.
const ceilingName = "raw"

// transports lists the throughput transports, in column order.
var transports = []transport{grpcTransport{}, gnetTransport{}, rawTransport{}}

// echoers lists the latency transports, in row order.
var echoers = []echoer{grpcTransport{}, gnetTransport{}, rawTransport{}}

// result is one throughput cell, as in test/bench's JSON.
type result struct {
	Transport  string  `json:"transport"`
	Size       int     `json:"size"`
	Conns      int     `json:"conns"`
	Messages   uint64  `json:"messages"`
	Bytes      uint64  `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// Ratio is MsgsPerSec over the ceiling's for the same workload; absent
	// for the ceiling itself and when the ceiling was not run or failed.
	Ratio float64 `json:"ratio_to_ceiling,omitempty"`
	// BaselineRatio is always absent here: this program has no baseline.
	// It is kept so that the schema is test/bench's.
	BaselineRatio float64 `json:"ratio_to_baseline,omitempty"`
	Error         string  `json:"error,omitempty"`
}

// latency is one request-response cell.
type latency struct {
	Transport string  `json:"transport"`
	Size      int     `json:"size"`
	Rounds    int     `json:"rounds"`
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	Error     string  `json:"error,omitempty"`
}

type report struct {
	Date      string    `json:"date"`
	GoVersion string    `json:"go_version"`
	GOOS      string    `json:"goos"`
	GOARCH    string    `json:"goarch"`
	NumCPU    int       `json:"num_cpu"`
	MaxProcs  int       `json:"gomaxprocs"`
	Duration  string    `json:"duration_per_cell"`
	MaxMsgs   uint64    `json:"max_messages_per_cell"`
	Ceiling   string    `json:"ceiling"`
	Baseline  string    `json:"baseline,omitempty"`
	Results   []result  `json:"results"`
	Latency   []latency `json:"latency"`
	TotalSecs float64   `json:"total_seconds"`
}

func main() {
	var (
		d        = flag.Duration("d", 2*time.Second, "sending time per cell, and the longest a latency cell runs")
		warm     = flag.Duration("warmup", 0, "warm-up time per cell (0: d/10, at most 200ms)")
		n        = flag.Uint64("n", 200_000_000, "most messages sent per throughput cell (all connections together)")
		sizesArg = flag.String("sizes", "110,65536", "payload sizes in bytes, comma separated")
		connsArg = flag.String("conns", "1,4", "numbers of client connections, comma separated")
		transArg = flag.String("t", "", "transports to run, comma separated (default all: "+strings.Join(transportNames(), ",")+")")
		rounds   = flag.Int("rounds", 20_000, "most round trips per latency cell (0: no latency cells)")
		rtSize   = flag.Int("rtsize", 110, "payload size of the latency cells in bytes")
		jsonOut  = flag.Bool("json", false, "print the report as JSON instead of tables")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %q", flag.Args())
	}
	opt := options{d: *d, warm: *warm, n: *n}
	if opt.d <= 0 || opt.n == 0 || *rounds < 0 {
		fatalf("-d and -n must be positive, -rounds not negative")
	}
	if *rtSize < 0 || *rtSize > maxMessageSize {
		fatalf("-rtsize must be in [0, %d]", maxMessageSize)
	}
	if opt.warm <= 0 {
		opt.warm = min(opt.d/10, 200*time.Millisecond)
	}
	opt.timeout = 10*time.Second + opt.d
	sizes, err := parseInts(*sizesArg, 0, maxMessageSize)
	if err != nil {
		fatalf("-sizes: %v", err)
	}
	conns, err := parseInts(*connsArg, 1, 256)
	if err != nil {
		fatalf("-conns: %v", err)
	}
	names, err := selectNames(*transArg)
	if err != nil {
		fatalf("-t: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt.ctx = ctx

	start := time.Now()
	rep := report{
		Date:      start.Format(time.RFC3339),
		GoVersion: runtime.Version(),
		GOOS:      runtime.GOOS,
		GOARCH:    runtime.GOARCH,
		NumCPU:    runtime.NumCPU(),
		MaxProcs:  runtime.GOMAXPROCS(0),
		Duration:  opt.d.String(),
		MaxMsgs:   opt.n,
		Ceiling:   ceilingName,
		Results:   []result{},
		Latency:   []latency{},
	}
	failed := false
	var ts []transport
	for _, t := range transports {
		if names[t.Name()] {
			ts = append(ts, t)
		}
	}
	total, k := len(sizes)*len(conns)*len(ts), 0
cells:
	for _, size := range sizes {
		for _, c := range conns {
			for _, t := range ts {
				if ctx.Err() != nil {
					break cells
				}
				k++
				r, leaked := runCell(t, size, c, opt)
				failed = failed || r.Error != "" || leaked
				logf("[%d/%d] %-5s %7s conns=%d: %s", k, total, t.Name(), sizeLabel(size), c, summary(r))
				rep.Results = append(rep.Results, r)
			}
		}
	}
	fillRatios(rep.Results)
	if *rounds > 0 {
		for _, e := range echoers {
			if !names[e.Name()] || ctx.Err() != nil {
				continue
			}
			l, leaked := runLatency(e, *rtSize, *rounds, opt)
			failed = failed || l.Error != "" || leaked
			logf("[rtt] %-5s %7s: %d round trips, p50 %.1f µs, p99 %.1f µs%s", l.Transport, sizeLabel(l.Size), l.Rounds, l.P50, l.P99, errSuffix(l.Error))
			rep.Latency = append(rep.Latency, l)
		}
	}
	rep.TotalSecs = time.Since(start).Seconds()
	logf("total time %.1fs", rep.TotalSecs)
	if ctx.Err() != nil {
		logf("interrupted: the report is partial")
		failed = true
	}

	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fatalf("%v", err)
		}
	} else {
		printTables(os.Stdout, rep, sizes, conns, ts)
	}
	if failed {
		os.Exit(1)
	}
}

// fillRatios sets every result's ratio to the ceiling's result for the same
// workload.
func fillRatios(rs []result) {
	type key struct{ size, conns int }
	ceil := map[key]float64{}
	for _, r := range rs {
		if r.Transport == ceilingName && r.Error == "" {
			ceil[key{r.Size, r.Conns}] = r.MsgsPerSec
		}
	}
	for i, r := range rs {
		if c := ceil[key{r.Size, r.Conns}]; c > 0 && r.Error == "" && r.Transport != ceilingName {
			rs[i].Ratio = r.MsgsPerSec / c
		}
	}
}

// printTables writes the throughput table, one row per workload, and the
// latency table.
func printTables(w io.Writer, rep report, sizes, conns []int, ts []transport) {
	fmt.Fprintf(w, "# buffstreams peers  %s  %s %s/%s  NumCPU=%d GOMAXPROCS=%d  %s per cell, at most %d msgs per cell\n",
		rep.Date, rep.GoVersion, rep.GOOS, rep.GOARCH, rep.NumCPU, rep.MaxProcs, rep.Duration, rep.MaxMsgs)
	fmt.Fprintf(w, "# MB = 10^6 payload bytes; x/%s = msg/s of x over msg/s of %q in the same run\n", ceilingName, ceilingName)
	type key struct {
		name        string
		size, conns int
	}
	byKey := map[key]result{}
	for _, r := range rep.Results {
		byKey[key{r.Transport, r.Size, r.Conns}] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := []string{"payload", "conns"}
	for _, t := range ts {
		hdr = append(hdr, t.Name()+" msg/s", "MB/s")
	}
	for _, t := range ts {
		if t.Name() != ceilingName {
			hdr = append(hdr, t.Name()+"/"+ceilingName)
		}
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")
	var errs []string
	for _, size := range sizes {
		for _, c := range conns {
			row := []string{sizeLabel(size), strconv.Itoa(c)}
			var ratios []string
			for _, t := range ts {
				r, ok := byKey[key{t.Name(), size, c}]
				switch {
				case !ok:
					row = append(row, "-", "-")
				case r.Error != "":
					row = append(row, "error", "error")
					errs = append(errs, fmt.Sprintf("%s %s conns=%d: %s", t.Name(), sizeLabel(size), c, r.Error))
				default:
					row = append(row, thousands(r.MsgsPerSec), fmt.Sprintf("%.1f", r.MBPerSec))
				}
				if t.Name() != ceilingName {
					if r.Ratio > 0 {
						ratios = append(ratios, fmt.Sprintf("%.3f", r.Ratio))
					} else {
						ratios = append(ratios, "-")
					}
				}
			}
			fmt.Fprintln(tw, strings.Join(append(row, ratios...), "\t")+"\t")
		}
	}
	tw.Flush()

	if len(rep.Latency) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "# round trips: one request outstanding, the server echoes it")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "transport\tpayload\tround trips\tp50 µs\tp99 µs\t")
		for _, l := range rep.Latency {
			if l.Error != "" {
				errs = append(errs, fmt.Sprintf("%s round trips of %s: %s", l.Transport, sizeLabel(l.Size), l.Error))
				fmt.Fprintf(tw, "%s\t%s\t%d\terror\terror\t\n", l.Transport, sizeLabel(l.Size), l.Rounds)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t\n", l.Transport, sizeLabel(l.Size), l.Rounds, l.P50, l.P99)
		}
		tw.Flush()
	}
	for _, e := range errs {
		fmt.Fprintln(w, "# error:", e)
	}
	fmt.Fprintf(w, "# total time %.1fs\n", rep.TotalSecs)
}

func summary(r result) string {
	return fmt.Sprintf("%12s msg/s %8.1f MB/s (%d msgs in %.2fs)%s",
		thousands(r.MsgsPerSec), r.MBPerSec, r.Messages, r.Seconds, errSuffix(r.Error))
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " ERROR: " + e
}

func sizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// thousands formats v rounded to an integer, with commas between groups of
// three digits.
func thousands(v float64) string {
	s := strconv.FormatUint(uint64(v+0.5), 10)
	var b strings.Builder
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func parseInts(s string, lo, hi int) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		if v < lo || v > hi {
			return nil, fmt.Errorf("%d is outside [%d, %d]", v, lo, hi)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// transportNames returns the names -t accepts, in column order.
func transportNames() []string {
	var names []string
	for _, t := range transports {
		names = append(names, t.Name())
	}
	return names
}

// selectNames parses -t into a set of transport names; an empty argument
// selects every one.
func selectNames(arg string) (map[string]bool, error) {
	all := transportNames()
	set := map[string]bool{}
	if strings.TrimSpace(arg) == "" {
		for _, n := range all {
			set[n] = true
		}
		return set, nil
	}
	for name := range strings.SplitSeq(arg, ",") {
		name = strings.TrimSpace(name)
		known := false
		for _, n := range all {
			known = known || n == name
		}
		if !known {
			return nil, fmt.Errorf("unknown transport %q (have %s)", name, strings.Join(all, ","))
		}
		set[name] = true
	}
	return set, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf("peers: "+format, args...)
	os.Exit(2)
}
