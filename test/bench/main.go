// Command bench measures the throughput of buffstreams over 127.0.0.1 and
// compares it with a raw net.Conn ceiling, in one process:
//
//	go run ./test/bench                     # the default table, about 40 s on 2 cores
//	go run ./test/bench -d 1s -sizes 110 -conns 1,4
//	go run ./test/bench -json > results.json
//
// Every cell of the table (one transport, one payload size, one number of
// connections) opens a server and its client connections, runs a short
// warm-up, then lets one goroutine per connection send messages of the
// payload size for -d or until -n messages have been sent, whichever comes
// first. The cell's time runs from the first send until the server has
// received every message sent, not just until the writes returned. The server
// and every goroutine of a cell are gone before the next cell starts.
//
// MB/s counts payload bytes only (headers excluded), in units of 10^6 bytes.
//
// Transports (see transports.go) are the rows' column groups: "buffstreams"
// is this library with its default framing; "raw" is the ceiling: pre-framed
// bytes written in large chunks on a net.Conn and parsed in place by the
// server, which no library can beat; "bs2.0" (-t bs2.0 or -t bs2) is the
// baseline: BuffStreams 2.0's I/O pattern on a net.Conn, one Write call and
// two allocations per message on the client, two read calls per message on
// the server. The ratio columns a/b divide a's msg/s by b's: every transport
// is compared with the ceiling, and every one but the ceiling with the
// baseline too. To add a column group, add a transport to the transports
// slice.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// A transport moves messages from client connections to a server inside this
// process. Each one is a group of columns in the table.
type transport interface {
	// Name is the transport's column label and its name for -t.
	Name() string
	// Open starts a server on 127.0.0.1 and dials conns client connections
	// to it, for payloads of size bytes.
	Open(size, conns int) (session, error)
}

// A session is the server and clients of one cell.
type session interface {
	// Send sends messages of the session's size on connection i until stop
	// is set or limit messages have been sent, and returns how many it sent.
	// It is called concurrently for different connections, never for the
	// same one.
	Send(i int, stop *atomic.Bool, limit uint64) (uint64, error)
	// Received returns the messages and payload bytes the server has
	// received so far. It must be cheap: it is polled.
	Received() (msgs, bytes uint64)
	// Close closes the clients and the server and returns once every
	// goroutine of the session has ended.
	Close() error
}

// transports lists every transport, in column order.
var transports = []transport{
	buffstreamsTransport{},
	rawTransport{},
	bs2Transport{},
}

// ceilingName is the transport every other one is compared with in the ratio
// columns.
const ceilingName = "raw"

// baselineName is the transport every one but the ceiling is also compared
// with, in a second set of ratio columns: BuffStreams 2.0's one system call
// per message.
const baselineName = "bs2.0"

// An aliased transport also answers to other names in -t.
type aliased interface {
	Aliases() []string
}

// result is one cell.
type result struct {
	Transport  string  `json:"transport"`
	Size       int     `json:"size"`
	Conns      int     `json:"conns"`
	Messages   uint64  `json:"messages"`
	Bytes      uint64  `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// Ratio is MsgsPerSec divided by the ceiling's for the same workload;
	// zero for the ceiling itself or when it was not run.
	Ratio float64 `json:"ratio_to_ceiling,omitempty"`
	// BaselineRatio is MsgsPerSec divided by the baseline's for the same
	// workload; zero for the baseline and the ceiling or when the baseline
	// was not run.
	BaselineRatio float64 `json:"ratio_to_baseline,omitempty"`
	Error         string  `json:"error,omitempty"`
}

type report struct {
	Date      string   `json:"date"`
	GoVersion string   `json:"go_version"`
	GOOS      string   `json:"goos"`
	GOARCH    string   `json:"goarch"`
	NumCPU    int      `json:"num_cpu"`
	MaxProcs  int      `json:"gomaxprocs"`
	Duration  string   `json:"duration_per_cell"`
	MaxMsgs   uint64   `json:"max_messages_per_cell"`
	Ceiling   string   `json:"ceiling"`
	Baseline  string   `json:"baseline"`
	Results   []result `json:"results"`
	TotalSecs float64  `json:"total_seconds"`
}

type options struct {
	d       time.Duration
	warm    time.Duration
	n       uint64
	sizes   []int
	conns   []int
	trans   []transport
	json    bool
	timeout time.Duration // extra time allowed for delivery after the senders stop
}

func main() {
	var (
		d        = flag.Duration("d", 2*time.Second, "sending time per cell")
		warm     = flag.Duration("warmup", 0, "warm-up time per cell (0: d/10, at most 200ms)")
		n        = flag.Uint64("n", 200_000_000, "most messages sent per cell (all connections together)")
		sizesArg = flag.String("sizes", "110,1024,65536", "payload sizes in bytes, comma separated")
		connsArg = flag.String("conns", "1,4", "numbers of client connections, comma separated")
		transArg = flag.String("t", "", "transports to run, comma separated (default all: "+transportNames(transports)+")")
		jsonOut  = flag.Bool("json", false, "print the results as JSON instead of a table")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %q", flag.Args())
	}
	opt := options{d: *d, warm: *warm, n: *n, json: *jsonOut}
	if opt.d <= 0 || opt.n == 0 {
		fatalf("-d and -n must be positive")
	}
	if opt.warm <= 0 {
		opt.warm = min(opt.d/10, 200*time.Millisecond)
	}
	opt.timeout = 10*time.Second + opt.d
	var err error
	if opt.sizes, err = parseInts(*sizesArg, 0, maxMessageSize); err != nil {
		fatalf("-sizes: %v", err)
	}
	if opt.conns, err = parseInts(*connsArg, 1, 1024); err != nil {
		fatalf("-conns: %v", err)
	}
	if opt.trans, err = selectTransports(*transArg); err != nil {
		fatalf("-t: %v", err)
	}

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
		Baseline:  baselineName,
	}
	failed := false
	total := len(opt.sizes) * len(opt.conns) * len(opt.trans)
	k := 0
	for _, size := range opt.sizes {
		for _, conns := range opt.conns {
			for _, t := range opt.trans {
				k++
				r, leaked := runCell(t, size, conns, opt)
				if r.Error != "" || leaked {
					failed = true
				}
				logf("[%d/%d] %-12s %8s conns=%d: %s", k, total, t.Name(), sizeLabel(size), conns, summary(r))
				rep.Results = append(rep.Results, r)
			}
		}
	}
	fillRatios(rep.Results)
	rep.TotalSecs = time.Since(start).Seconds()
	logf("total time %.1fs", rep.TotalSecs)

	if opt.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fatalf("%v", err)
		}
	} else {
		printTable(os.Stdout, rep, opt)
	}
	if failed {
		os.Exit(1)
	}
}

// runCell measures one transport on one workload. leaked reports goroutines
// left behind by the session.
func runCell(t transport, size, conns int, opt options) (r result, leaked bool) {
	r = result{Transport: t.Name(), Size: size, Conns: conns}
	runtime.GC() // leave the previous cell's garbage out of this one
	before := runtime.NumGoroutine()
	s, err := t.Open(size, conns)
	if err != nil {
		r.Error = err.Error()
		return r, false
	}
	warmLimit := max(opt.n/20, uint64(conns))
	if _, _, err := phase(s, size, conns, opt.warm, warmLimit, opt.timeout); err != nil {
		r.Error = "warm-up: " + err.Error()
	} else {
		sent, elapsed, err := phase(s, size, conns, opt.d, opt.n, opt.timeout)
		r.Messages, r.Bytes, r.Seconds = sent, sent*uint64(size), elapsed.Seconds()
		if elapsed > 0 {
			r.MsgsPerSec = float64(sent) / elapsed.Seconds()
			r.MBPerSec = float64(r.Bytes) / 1e6 / elapsed.Seconds()
		}
		if err != nil {
			r.Error = err.Error()
		}
	}
	if err := s.Close(); err != nil && r.Error == "" {
		r.Error = "close: " + err.Error()
	}
	return r, checkLeaks(before, t.Name())
}

// phase sends from every connection for d or until limit messages in all,
// then waits until the server has received everything sent. elapsed runs from
// the first send to the delivery of the last message.
func phase(s session, size, conns int, d time.Duration, limit uint64, timeout time.Duration) (sent uint64, elapsed time.Duration, err error) {
	baseMsgs, baseBytes := s.Received()
	per := max(limit/uint64(conns), 1)
	var (
		stop  atomic.Bool
		total atomic.Uint64
		wg    sync.WaitGroup
		emu   sync.Mutex
		errs  []error
	)
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.Send(i, &stop, per)
			total.Add(n)
			if err != nil {
				stop.Store(true)
				emu.Lock()
				errs = append(errs, fmt.Errorf("conn %d: %w", i, err))
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	timer.Stop()
	sent = total.Load()
	if err := errors.Join(errs...); err != nil {
		return sent, time.Since(start), err
	}

	// Wait for delivery. Polling costs one Received call per interval; the
	// interval is far below the precision that matters for cells of seconds.
	deadline := time.Now().Add(timeout)
	for {
		msgs, bytes := s.Received()
		msgs, bytes = msgs-baseMsgs, bytes-baseBytes
		if msgs >= sent {
			elapsed = time.Since(start)
			if msgs != sent || bytes != sent*uint64(size) {
				return sent, elapsed, fmt.Errorf("sent %d messages of %d bytes, server received %d messages and %d bytes", sent, size, msgs, bytes)
			}
			return sent, elapsed, nil
		}
		if time.Now().After(deadline) {
			return sent, time.Since(start), fmt.Errorf("timeout: sent %d messages, server received %d after %v", sent, msgs, timeout)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// checkLeaks waits briefly for the goroutine count to fall back to before
// and reports whether it did not, printing the goroutines.
func checkLeaks(before int, name string) bool {
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			logf("LEAK: %s left %d goroutines behind:\n%s", name, runtime.NumGoroutine()-before, buf)
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// fillRatios sets each result's ratios to the ceiling's and the baseline's
// results of the same workload.
func fillRatios(rs []result) {
	type key struct{ size, conns int }
	ceil, base := map[key]float64{}, map[key]float64{}
	for _, r := range rs {
		if r.Error != "" {
			continue
		}
		switch r.Transport {
		case ceilingName:
			ceil[key{r.Size, r.Conns}] = r.MsgsPerSec
		case baselineName:
			base[key{r.Size, r.Conns}] = r.MsgsPerSec
		}
	}
	for i, r := range rs {
		if r.Error != "" || r.Transport == ceilingName {
			continue
		}
		k := key{r.Size, r.Conns}
		if c := ceil[k]; c > 0 {
			rs[i].Ratio = r.MsgsPerSec / c
		}
		if b := base[k]; b > 0 && r.Transport != baselineName {
			rs[i].BaselineRatio = r.MsgsPerSec / b
		}
	}
}

// hasBaselineRatio reports whether the table has a column comparing t with
// the baseline.
func hasBaselineRatio(t transport) bool {
	return t.Name() != ceilingName && t.Name() != baselineName
}

func printTable(w io.Writer, rep report, opt options) {
	fmt.Fprintf(w, "# buffstreams bench  %s  %s %s/%s  NumCPU=%d GOMAXPROCS=%d  %v per cell (+%v warm-up), at most %d msgs per cell\n",
		rep.Date, rep.GoVersion, rep.GOOS, rep.GOARCH, rep.NumCPU, rep.MaxProcs, opt.d, opt.warm, opt.n)
	fmt.Fprintf(w, "# MB = 10^6 payload bytes (headers excluded); a/b = msg/s of a / msg/s of b, for %q (the ceiling) and %q (the baseline)\n", ceilingName, baselineName)

	haveCeiling, haveBaseline := false, false
	for _, t := range opt.trans {
		haveCeiling = haveCeiling || t.Name() == ceilingName
		haveBaseline = haveBaseline || t.Name() == baselineName
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := []string{"workload", "conns"}
	for _, t := range opt.trans {
		hdr = append(hdr, t.Name()+" msg/s", "MB/s")
	}
	if haveCeiling {
		for _, t := range opt.trans {
			if t.Name() != ceilingName {
				hdr = append(hdr, t.Name()+"/"+ceilingName)
			}
		}
	}
	if haveBaseline {
		for _, t := range opt.trans {
			if hasBaselineRatio(t) {
				hdr = append(hdr, t.Name()+"/"+baselineName)
			}
		}
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")

	type key struct {
		name        string
		size, conns int
	}
	byKey := map[key]result{}
	for _, r := range rep.Results {
		byKey[key{r.Transport, r.Size, r.Conns}] = r
	}
	var errs []string
	for _, size := range opt.sizes {
		for _, conns := range opt.conns {
			row := []string{sizeLabel(size), strconv.Itoa(conns)}
			var ratios, baseRatios []string
			for _, t := range opt.trans {
				r := byKey[key{t.Name(), size, conns}]
				if r.Error != "" {
					row = append(row, "error", "error")
					errs = append(errs, fmt.Sprintf("%s %s conns=%d: %s", t.Name(), sizeLabel(size), conns, r.Error))
				} else {
					row = append(row, thousands(uint64(r.MsgsPerSec+0.5)), fmt.Sprintf("%.1f", r.MBPerSec))
				}
				if haveCeiling && t.Name() != ceilingName {
					if r.Ratio > 0 {
						ratios = append(ratios, fmt.Sprintf("%.3f", r.Ratio))
					} else {
						ratios = append(ratios, "-")
					}
				}
				if haveBaseline && hasBaselineRatio(t) {
					if r.BaselineRatio > 0 {
						baseRatios = append(baseRatios, fmt.Sprintf("%.2f", r.BaselineRatio))
					} else {
						baseRatios = append(baseRatios, "-")
					}
				}
			}
			row = append(append(row, ratios...), baseRatios...)
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
	}
	tw.Flush()
	for _, e := range errs {
		fmt.Fprintln(w, "# error:", e)
	}
	fmt.Fprintf(w, "# total time %.1fs\n", rep.TotalSecs)
}

func summary(r result) string {
	s := fmt.Sprintf("%s msg/s %8.1f MB/s (%d msgs in %.2fs)",
		thousands(uint64(r.MsgsPerSec+0.5)), r.MBPerSec, r.Messages, r.Seconds)
	if r.Error != "" {
		s += " ERROR: " + r.Error
	}
	return s
}

func sizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func parseInts(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
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

func transportNames(ts []transport) string {
	var names []string
	for _, t := range ts {
		names = append(names, t.Name())
	}
	return strings.Join(names, ",")
}

func selectTransports(arg string) ([]transport, error) {
	if strings.TrimSpace(arg) == "" {
		return transports, nil
	}
	var out []transport
	for _, name := range strings.Split(arg, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, t := range transports {
			if t.Name() == name || hasAlias(t, name) {
				out, found = append(out, t), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown transport %q (have %s)", name, transportNames(transports))
		}
	}
	return out, nil
}

func hasAlias(t transport, name string) bool {
	a, ok := t.(aliased)
	if !ok {
		return false
	}
	for _, n := range a.Aliases() {
		if n == name {
			return true
		}
	}
	return false
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf("bench: "+format, args...)
	os.Exit(2)
}
