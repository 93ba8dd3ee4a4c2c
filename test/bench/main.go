// Command bench measures buffstreams over 127.0.0.1 against a raw net.Conn
// ceiling, BuffStreams 2.0's I/O pattern and what Go developers write by
// hand, all in one process, and then its request-response latency and the
// memory an idle connection costs a server:
//
//	go run ./test/bench                     # everything, under 60 s on 2 cores
//	go run ./test/bench -d 2s -sizes 110 -conns 1,4
//	go run ./test/bench -workloads 110x1,110x1x8 -t sync,bs2.0,raw
//	go run ./test/bench -json > results.json
//	go run ./test/bench -svg perf.svg       # also draws the table (needs test/peers)
//
// # Throughput
//
// A workload is a payload size, a number of client connections and a number
// of writers per connection. Every cell of the table (one transport, one
// workload) opens a server and its client connections, runs a short
// warm-up, then lets the writers send messages of the payload size for -d
// or until -n messages have been sent, whichever comes first. The cell's
// time runs from the first send until the server has received every message
// sent, not just until the writes returned. The server and every goroutine
// of a cell are gone before the next cell starts.
//
// The default workloads are 110 B on 1 and on 4 connections, 1 KiB and
// 64 KiB on 1 connection, each with one writer per connection, and 110 B on
// 1 connection shared by -w (8) writers. -sizes and -conns replace them with
// every size on every number of connections, with one writer and, if -w is
// above 1, with -w writers; -workloads lists them instead, as
// SIZExCONNS[xWRITERS] ("110x1,65536x1,110x1x8").
//
// Transports (see transports.go) are the table's columns:
//
//	sync        this library, default mode: Write returns once the kernel has
//	            the frame; concurrent Writes on one connection share system
//	            calls (group commit)
//	batch       this library, batching mode (-batchbuf, -flush): Write copies
//	            into a write buffer, a flusher writes many frames per system
//	            call; the writer calls Flush after its last message
//	raw         the ceiling: pre-framed 4-byte headers written 256 KiB (1 MiB
//	            for 32 KiB payloads and up) at a time, parsed in place by the
//	            server; no library can do less work
//	bs2.0       the baseline: BuffStreams 2.0's I/O pattern, one Write call
//	            and two allocations per message, two reads per message
//	bufio       the hand-written loop: bufio.Writer (64 KiB) and a 4-byte
//	            big-endian header per message; bufio.Reader (64 KiB) and
//	            io.ReadFull of header and payload into a reused buffer
//	protodelim  google.golang.org/protobuf/encoding/protodelim over the same
//	            bufio sizes, with test/message Notes of the payload size
//
// Only sync, bs2.0 and raw run on workloads with several writers per
// connection (the others are not safe to share, or not asked to be).
//
// MB/s counts payload bytes only (headers excluded), in units of 10^6 bytes.
// "ratio to raw" divides a transport's msg/s by raw's on the same workload
// (same size, so it is the ratio of bytes/s too), "ratio to bs2.0" by the
// baseline's. allocs/msg is the growth of runtime.MemStats.Mallocs over the
// timed part of the cell divided by the messages sent: it is whole-process,
// client and server together.
//
// # Latency
//
// 110-byte request-response with one request outstanding (-rounds, -rtime):
// a buffstreams client (TCPConn.Write, then TCPConn.Read) against a listener
// whose ConnCallback replies with conn.Write, and a raw net.Conn ping-pong
// (4-byte header, io.ReadFull at both ends). The two alternate in blocks of
// rounds, so that load from elsewhere on the machine hits both alike.
//
// # Idle memory
//
// -idle connections (10,000) to a buffstreams listener running in a child
// process (this program, re-executed): each sends one 110-byte message, so
// that its read loop has run, then stays idle. The child's VmRSS, after a GC
// that returns freed memory to the system, is read before the connections
// and after; the difference divided by the connections is the cost of one.
// Linux only; the soft limit of open files is raised to the hard limit, and
// the section is skipped if that is not enough.
//
// Progress goes to stderr. -json prints everything as JSON instead of
// tables, -md prints the tables in Markdown. SIGINT or SIGTERM stops the
// run after the current cell and prints what was measured.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A transport moves messages from client connections to a server inside this
// process. Each one is a column of the table.
type transport interface {
	// Name is the transport's column label and its name for -t.
	Name() string
	// Open starts a server on 127.0.0.1 and dials conns client connections
	// to it, for payloads of size bytes.
	Open(size, conns int) (session, error)
}

// A sharedWriters transport can be driven by several goroutines on one
// connection: its Send may be called concurrently for the same connection.
type sharedWriters interface {
	SharedWriters() bool
}

// A session is the server and clients of one cell.
type session interface {
	// Send sends messages of the session's size on connection i until stop
	// is set or limit messages have been sent, and returns how many it sent.
	// It is called concurrently for different connections, and for the same
	// one only if the transport has SharedWriters.
	Send(i int, stop *atomic.Bool, limit uint64) (uint64, error)
	// Received returns the messages and payload bytes the server has
	// received so far. It must be cheap: it is polled.
	Received() (msgs, bytes uint64)
	// Close closes the clients and the server and returns once every
	// goroutine of the session has ended.
	Close() error
}

// newTransports lists every transport, in column order.
func newTransports(opt options) []transport {
	return []transport{
		syncTransport{},
		batchTransport{bufSize: opt.batchBuf, flushInterval: opt.flush},
		rawTransport{},
		bs2Transport{},
		bufioTransport{},
		protodelimTransport{},
	}
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

// defaultBatchBuf is the batch transport's WriteBufferSize unless -batchbuf
// says otherwise. Of 32 KiB, 64 KiB, 128 KiB, 256 KiB and 1 MiB (with
// FlushInterval 0, on 2 cores, 2026-11-25), 64 KiB did best: about 21 M
// msg/s at 110 B against 18 M for 256 KiB, and 4.5-5 M against 3 M at 1 KiB;
// at 64 KiB per message the size makes no difference (such messages bypass
// the buffer).
const defaultBatchBuf = 64 << 10

// A workload is one row of the table.
type workload struct {
	size, conns, writers int
}

func (w workload) String() string {
	s := fmt.Sprintf("%s, %d %s", sizeLabel(w.size), w.conns, plural(w.conns, "conn"))
	if w.writers > 1 {
		s += fmt.Sprintf(", %d writers", w.writers)
	}
	return s
}

// result is one cell.
type result struct {
	Transport  string  `json:"transport"`
	Size       int     `json:"size"`
	Conns      int     `json:"conns"`
	Writers    int     `json:"writers"` // goroutines sending on each connection
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
	// AllocsPerMsg is the whole process's heap allocations (client and
	// server) during the timed part of the cell, per message sent.
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	Error        string  `json:"error,omitempty"`
}

func (r result) workload() workload { return workload{r.Size, r.Conns, r.Writers} }

type report struct {
	Date        string          `json:"date"`
	GoVersion   string          `json:"go_version"`
	GOOS        string          `json:"goos"`
	GOARCH      string          `json:"goarch"`
	NumCPU      int             `json:"num_cpu"`
	MaxProcs    int             `json:"gomaxprocs"`
	Duration    string          `json:"duration_per_cell"`
	Warmup      string          `json:"warmup_per_cell"`
	MaxMsgs     uint64          `json:"max_messages_per_cell"`
	Ceiling     string          `json:"ceiling"`
	Baseline    string          `json:"baseline"`
	BatchBuffer int             `json:"batch_write_buffer_size"`
	BatchFlush  string          `json:"batch_flush_interval"`
	AllocsScope string          `json:"allocs_scope"`
	Results     []result        `json:"results"`
	Latency     []latencyResult `json:"latency"`
	Idle        *idleResult     `json:"idle,omitempty"`
	Interrupted bool            `json:"interrupted,omitempty"`
	TotalSecs   float64         `json:"total_seconds"`
}

const allocsScope = "whole process (client and server): runtime.MemStats.Mallocs growth over the timed part of the cell / messages"

type options struct {
	d         time.Duration
	warm      time.Duration
	n         uint64
	workloads []workload
	trans     []transport
	batchBuf  int
	flush     time.Duration
	rounds    int
	rtime     time.Duration
	idle      int
	json      bool
	md        bool
	svg       string // absolute path, or empty
	peersDir  string // test/peers, when svg is set
	timeout   time.Duration
}

func main() {
	if os.Getenv(idleChildEnv) != "" {
		os.Exit(runIdleChild())
	}
	var (
		d            = flag.Duration("d", time.Second, "sending time per cell")
		warm         = flag.Duration("warmup", 0, "warm-up time per cell (0: d/10, at most 200ms)")
		n            = flag.Uint64("n", 200_000_000, "most messages sent per cell (all writers together)")
		sizesArg     = flag.String("sizes", "110,1024,65536", "payload sizes in bytes, comma separated (with -conns, replaces the default workloads by their grid)")
		connsArg     = flag.String("conns", "1,4", "numbers of client connections, comma separated (see -sizes)")
		writers      = flag.Int("w", 8, "writers sharing one connection in the shared-writer workloads; 1 drops them")
		workloadsArg = flag.String("workloads", "", "workloads as SIZExCONNS[xWRITERS], comma separated (default 110x1,110x4,1024x1,65536x1,110x1xW)")
		transArg     = flag.String("t", "", "transports to run, comma separated (default all)")
		batchBuf     = flag.Int("batchbuf", defaultBatchBuf, "WriteBufferSize of the batch transport, in bytes")
		flushIvl     = flag.Duration("flush", 0, "FlushInterval of the batch transport")
		rounds       = flag.Int("rounds", 20000, "latency: most request-response rounds per transport; 0 skips the latency section")
		rtime        = flag.Duration("rtime", 3*time.Second, "latency: most time for the rounds of both transports together")
		idle         = flag.Int("idle", 10000, "idle memory: connections to open; 0 skips the section")
		jsonOut      = flag.Bool("json", false, "print the results as JSON instead of tables")
		mdOut        = flag.Bool("md", false, "print the tables in Markdown")
		svgOut       = flag.String("svg", "", "also write a bar chart of the results to this SVG file, with test/peers' chart program")
	)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: bench [flags]\n\ntransports: %s\n\n", transportNames(newTransports(options{})))
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %q", flag.Args())
	}
	opt := options{d: *d, warm: *warm, n: *n, batchBuf: *batchBuf, flush: *flushIvl,
		rounds: *rounds, rtime: *rtime, idle: *idle, json: *jsonOut, md: *mdOut}
	switch {
	case opt.d <= 0 || opt.n == 0:
		fatalf("-d and -n must be positive")
	case *writers < 1 || *writers > 1024:
		fatalf("-w must be in [1, 1024]")
	case opt.batchBuf <= 0:
		fatalf("-batchbuf must be positive")
	case opt.flush < 0 || opt.rounds < 0 || opt.rtime <= 0 || opt.idle < 0:
		fatalf("-flush, -rounds and -idle must not be negative, -rtime must be positive")
	}
	if opt.warm <= 0 {
		opt.warm = min(opt.d/10, 200*time.Millisecond)
	}
	opt.timeout = 10*time.Second + opt.d
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	if opt.workloads, err = selectWorkloads(*workloadsArg, *sizesArg, *connsArg, *writers, set); err != nil {
		fatalf("%v", err)
	}
	if opt.trans, err = selectTransports(newTransports(opt), *transArg); err != nil {
		fatalf("-t: %v", err)
	}
	if *svgOut != "" {
		// Find the chart program before measuring anything.
		if opt.peersDir, err = findPeers(); err != nil {
			fatalf("-svg: %v", err)
		}
		if opt.svg, err = absPath(*svgOut); err != nil {
			fatalf("-svg: %v", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, failed := run(ctx, opt)
	if rep.Interrupted {
		logf("interrupted: reporting what was measured")
		failed = true
	}

	if opt.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fatalf("%v", err)
		}
	} else {
		printReport(os.Stdout, rep, opt)
	}
	if opt.svg != "" {
		if err := drawChart(rep, opt); err != nil {
			logf("bench: -svg: %v", err)
			failed = true
		} else {
			logf("wrote %s", opt.svg)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// run measures every section and reports whether anything failed.
func run(ctx context.Context, opt options) (rep report, failed bool) {
	start := time.Now()
	rep = report{
		Date:        start.Format(time.RFC3339),
		GoVersion:   runtime.Version(),
		GOOS:        runtime.GOOS,
		GOARCH:      runtime.GOARCH,
		NumCPU:      runtime.NumCPU(),
		MaxProcs:    runtime.GOMAXPROCS(0),
		Duration:    opt.d.String(),
		Warmup:      opt.warm.String(),
		MaxMsgs:     opt.n,
		Ceiling:     ceilingName,
		Baseline:    baselineName,
		BatchBuffer: opt.batchBuf,
		BatchFlush:  opt.flush.String(),
		AllocsScope: allocsScope,
		Results:     []result{},
		Latency:     []latencyResult{},
	}
	defer func() { rep.TotalSecs = time.Since(start).Seconds() }()

	total := 0
	for _, wl := range opt.workloads {
		total += len(transportsFor(opt.trans, wl))
	}
	k := 0
cells:
	for _, wl := range opt.workloads {
		for _, t := range transportsFor(opt.trans, wl) {
			if ctx.Err() != nil {
				break cells
			}
			k++
			r, leaked := runCell(ctx, t, wl, opt)
			if r.Error != "" || leaked {
				failed = true
			}
			logf("[%d/%d] %-26s %-10s %s", k, total, wl, t.Name(), summary(r))
			rep.Results = append(rep.Results, r)
		}
	}
	fillRatios(rep.Results)

	if opt.rounds > 0 && ctx.Err() == nil {
		logf("latency: %d-byte request-response, up to %d rounds per transport within %v", latencySize, opt.rounds, opt.rtime)
		rep.Latency = runLatency(ctx, opt)
		for _, l := range rep.Latency {
			if l.Error != "" {
				failed = true
			}
			logf("latency %-6s %s", l.Transport, l.summary())
		}
	}
	if opt.idle > 0 && ctx.Err() == nil {
		logf("idle memory: %d connections to a listener in a child process", opt.idle)
		idle := runIdle(ctx, opt.idle)
		if idle.Error != "" {
			failed = true
		}
		logf("idle: %s", idle.summary())
		rep.Idle = &idle
	}
	rep.Interrupted = ctx.Err() != nil
	logf("total time %.1fs", time.Since(start).Seconds())
	return rep, failed
}

// transportsFor returns the transports that run on wl.
func transportsFor(ts []transport, wl workload) []transport {
	if wl.writers == 1 {
		return ts
	}
	var out []transport
	for _, t := range ts {
		if s, ok := t.(sharedWriters); ok && s.SharedWriters() {
			out = append(out, t)
		}
	}
	return out
}

// runCell measures one transport on one workload. leaked reports goroutines
// left behind by the session.
func runCell(ctx context.Context, t transport, wl workload, opt options) (r result, leaked bool) {
	r = result{Transport: t.Name(), Size: wl.size, Conns: wl.conns, Writers: wl.writers}
	runtime.GC() // leave the previous cell's garbage out of this one
	before := runtime.NumGoroutine()
	s, err := t.Open(wl.size, wl.conns)
	if err != nil {
		r.Error = err.Error()
		return r, false
	}
	warmLimit := max(opt.n/20, uint64(wl.conns*wl.writers))
	if m, err := phase(ctx, s, wl, opt.warm, warmLimit, opt.timeout); err != nil {
		r.Error = "warm-up: " + err.Error()
	} else if ctx.Err() == nil {
		m, err = phase(ctx, s, wl, opt.d, opt.n, opt.timeout)
		r.Messages, r.Bytes, r.Seconds = m.sent, m.sent*uint64(wl.size), m.elapsed.Seconds()
		if m.elapsed > 0 {
			r.MsgsPerSec = float64(m.sent) / m.elapsed.Seconds()
			r.MBPerSec = float64(r.Bytes) / 1e6 / m.elapsed.Seconds()
		}
		if m.sent > 0 {
			r.AllocsPerMsg = float64(m.mallocs) / float64(m.sent)
		}
		if err != nil {
			r.Error = err.Error()
		} else if ctx.Err() != nil {
			r.Error = "interrupted"
		}
	} else {
		r.Error = "interrupted"
	}
	if err := s.Close(); err != nil && r.Error == "" {
		r.Error = "close: " + err.Error()
	}
	return r, checkLeaks(before, t.Name())
}

// measured is the outcome of one phase.
type measured struct {
	sent    uint64
	elapsed time.Duration // from the first send to the delivery of the last message
	mallocs uint64        // heap allocations of the process meanwhile
}

// phase sends from every writer of every connection for d or until limit
// messages in all, then waits until the server has received everything
// sent.
func phase(ctx context.Context, s session, wl workload, d time.Duration, limit uint64, timeout time.Duration) (m measured, err error) {
	baseMsgs, baseBytes := s.Received()
	senders := wl.conns * wl.writers
	per := max(limit/uint64(senders), 1)
	var (
		stop  atomic.Bool
		total atomic.Uint64
		wg    sync.WaitGroup
		emu   sync.Mutex
		errs  []error
		ms    runtime.MemStats
	)
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	cancel := context.AfterFunc(ctx, func() { stop.Store(true) })
	for k := range senders {
		i := k % wl.conns
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
	cancel()
	m.sent = total.Load()
	if err := errors.Join(errs...); err != nil {
		m.elapsed = time.Since(start)
		return m, err
	}

	// Wait for delivery. Polling costs one Received call per interval; the
	// interval is far below the precision that matters for cells of seconds.
	deadline := time.Now().Add(timeout)
	for {
		msgs, bytes := s.Received()
		msgs, bytes = msgs-baseMsgs, bytes-baseBytes
		if msgs >= m.sent {
			m.elapsed = time.Since(start)
			runtime.ReadMemStats(&ms)
			m.mallocs = ms.Mallocs - mallocs
			if msgs != m.sent || bytes != m.sent*uint64(wl.size) {
				return m, fmt.Errorf("sent %d messages of %d bytes, server received %d messages and %d bytes", m.sent, wl.size, msgs, bytes)
			}
			return m, nil
		}
		if time.Now().After(deadline) {
			m.elapsed = time.Since(start)
			return m, fmt.Errorf("timeout: sent %d messages, server received %d after %v", m.sent, msgs, timeout)
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
	ceil, base := map[workload]float64{}, map[workload]float64{}
	for _, r := range rs {
		if r.Error != "" {
			continue
		}
		switch r.Transport {
		case ceilingName:
			ceil[r.workload()] = r.MsgsPerSec
		case baselineName:
			base[r.workload()] = r.MsgsPerSec
		}
	}
	for i, r := range rs {
		if r.Error != "" || r.Transport == ceilingName {
			continue
		}
		if c := ceil[r.workload()]; c > 0 {
			rs[i].Ratio = r.MsgsPerSec / c
		}
		if b := base[r.workload()]; b > 0 && r.Transport != baselineName {
			rs[i].BaselineRatio = r.MsgsPerSec / b
		}
	}
}

func summary(r result) string {
	s := fmt.Sprintf("%11s msg/s %8.1f MB/s %6.2f allocs/msg (%d msgs in %.2fs)",
		thousands(uint64(r.MsgsPerSec+0.5)), r.MBPerSec, r.AllocsPerMsg, r.Messages, r.Seconds)
	if r.Error != "" {
		s += " ERROR: " + r.Error
	}
	return s
}

// selectWorkloads returns the workloads of -workloads, else the grid of
// -sizes and -conns if either is set, else the default ones.
func selectWorkloads(list, sizes, conns string, writers int, set map[string]bool) ([]workload, error) {
	if list != "" {
		if set["sizes"] || set["conns"] {
			return nil, errors.New("-workloads cannot be combined with -sizes or -conns")
		}
		var out []workload
		for _, f := range strings.Split(list, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			wl, err := parseWorkload(f)
			if err != nil {
				return nil, fmt.Errorf("-workloads: %q: %v", f, err)
			}
			out = append(out, wl)
		}
		if len(out) == 0 {
			return nil, errors.New("-workloads: empty list")
		}
		return out, nil
	}
	if !set["sizes"] && !set["conns"] {
		out := []workload{{110, 1, 1}, {110, 4, 1}, {1024, 1, 1}, {65536, 1, 1}}
		if writers > 1 {
			out = append(out, workload{110, 1, writers})
		}
		return out, nil
	}
	ss, err := parseInts(sizes, 0, maxMessageSize)
	if err != nil {
		return nil, fmt.Errorf("-sizes: %v", err)
	}
	cs, err := parseInts(conns, 1, 1024)
	if err != nil {
		return nil, fmt.Errorf("-conns: %v", err)
	}
	var out []workload
	for _, s := range ss {
		for _, c := range cs {
			out = append(out, workload{s, c, 1})
		}
	}
	if writers > 1 {
		for _, s := range ss {
			for _, c := range cs {
				out = append(out, workload{s, c, writers})
			}
		}
	}
	return out, nil
}

// parseWorkload parses SIZExCONNS[xWRITERS].
func parseWorkload(s string) (workload, error) {
	parts := strings.Split(s, "x")
	if len(parts) < 2 || len(parts) > 3 {
		return workload{}, errors.New("want SIZExCONNS or SIZExCONNSxWRITERS")
	}
	lims := [][2]int{{0, maxMessageSize}, {1, 1024}, {1, 1024}}
	v := []int{0, 0, 1}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return workload{}, err
		}
		if n < lims[i][0] || n > lims[i][1] {
			return workload{}, fmt.Errorf("%d is outside [%d, %d]", n, lims[i][0], lims[i][1])
		}
		v[i] = n
	}
	return workload{v[0], v[1], v[2]}, nil
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

func selectTransports(all []transport, arg string) ([]transport, error) {
	if strings.TrimSpace(arg) == "" {
		return all, nil
	}
	var out []transport
	for _, name := range strings.Split(arg, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, t := range all {
			if t.Name() == name || hasAlias(t, name) {
				out, found = append(out, t), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown transport %q (have %s)", name, transportNames(all))
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
