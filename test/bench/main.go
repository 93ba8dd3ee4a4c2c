// Command bench measures buffstreams over 127.0.0.1 against a raw net.Conn
// ceiling, BuffStreams 2.0's I/O pattern and what Go developers write by
// hand, in one process and (-procs 2) with the server in a second one, and
// then its request-response latency and the memory an idle connection
// costs a server:
//
//	go run ./test/bench                     # everything, under 60 s on 2 cores
//	go run ./test/bench -d 2s -sizes 110 -conns 1,4
//	go run ./test/bench -workloads 110x1,110x1x8 -t sync,bs2.0,raw
//	go run ./test/bench -count 5 -procs 2   # more samples, both ways
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
// The default workloads are 110 B on 1, 4 and 16 connections, 1 KiB and
// 64 KiB on 1 connection, each with one writer per connection, and 110 B on
// 1 connection shared by -w (8) writers. -sizes and -conns replace them with
// every size on every number of connections, with one writer and, if -w is
// above 1, with -w writers; -workloads lists them instead, as
// SIZExCONNS[xWRITERS] ("110x1,65536x1,110x1x8"). Workloads such as 1024x16
// (1 KiB on 16 connections) and 110x1x16 (16 writers on one connection) are
// left out of the default run to keep it short; name them in -workloads.
//
// # Processes
//
// By default a cell's server and clients share this process, as the
// library's own benchmarks do. With -procs 2 every cell also runs with its
// server in a child process (this program, re-executed), driven through its
// stdin and stdout, and the clients here, talking over 127.0.0.1: the way a
// deployment runs, where the two ends do not share a Go scheduler or a
// garbage collector. The tables then have an "in-process" and a
// "cross-process" row for each workload. Either way the sender sends a
// bounded number of messages and the server counts the payloads it
// received: a cell fails unless the counts, messages and bytes, are equal.
//
// # Repetitions
//
// -count N (3) runs every cell N times, for -d (300 ms) each. The runs of one workload interleave:
// each repetition runs every transport once, starting one transport further
// along than the previous repetition (and, with -procs 2, each transport in
// one process and across two back to back), so that load from elsewhere on
// the machine falls on every column alike. The tables show the median of
// the N samples and, for N above 1, the smallest and largest beside it, as
// in "21.3 M (19.8–22.0)"; ratios divide medians. -json carries every
// sample.
//
// Transports (see transports.go) are the table's columns:
//
//	sync        this library, default mode: Write returns once the kernel has
//	            the frame; concurrent Writes on one connection share system
//	            calls (group commit)
//	batch       this library, batching mode (-batchbuf, -flush): Write copies
//	            into a write buffer, a flusher writes many frames per system
//	            call; the writer calls Flush after its last message
//	bufwriter   this library, default mode, through a BufferedWriter per
//	            connection (-batchbuf): Write frames into its own buffer
//	            without a lock, and each full buffer goes to the connection
//	            in one system call, as bufio's does; Flush at the end
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
// Opt-in transports run only when -t names them: sync+ack, batch+ack and
// bufwriter+ack, this library with acknowledged delivery, and cork
// (Linux): one Write per frame of a plain net.Conn with TCP_CORK held for the stream, the floor
// of any Write that returns once the kernel holds the frame, and so what
// sync is measured against for its own overhead.
//
// Only sync, bs2.0 and raw run on workloads with several writers per
// connection (the others are not safe to share, or not asked to be).
//
// MB/s counts payload bytes only (headers excluded), in units of 10^6 bytes.
// "ratio to raw" divides a transport's msg/s by raw's on the same workload
// (same size, so it is the ratio of bytes/s too) and in the same processes,
// "ratio to bs2.0" by the baseline's. CPU seconds per million messages is
// the user and system time (getrusage) of both ends over the timed part of
// the cell, the child's included in a cross-process cell (it reports its
// own), divided by the messages sent; it is measured on Linux only, and
// shown as "-" elsewhere. allocs/msg is the growth of
// runtime.MemStats.Mallocs over the timed part of the cell divided by the
// messages sent, again of both ends. Both include the bench's own waiting
// for delivery, which polls the server's counts every 20 µs. TCP segments
// per message is the growth of the host's TcpOutSegs counter (Linux's
// /proc/net/snmp, as nstat shows it) over the timed part of the cell,
// divided by the messages sent: data segments and acknowledgements, both
// directions, since both ends are on this host.
//
// The 1-minute load average is printed at the start and the end of a run,
// with a warning when it was above a quarter per processor at the start
// (the run's own load shows at the end): on a busy
// machine the reader is descheduled and lags, frames pile up and leave in
// large segments, and that hides costs a quiet machine pays. Figures are
// to be quoted only from runs without the warning.
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
// # Targets
//
// -targets adds a table checking the results against the project's targets
// (see report.go). They are for the library's developers: off by default.
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A transport moves messages from client connections to a server. Each one
// is a column of the table. Its two ends are made apart, so that the server
// can run in another process (-procs 2).
type transport interface {
	// Name is the transport's column label and its name for -t.
	Name() string
	// Serve starts a server on 127.0.0.1:0 for payloads of size bytes.
	Serve(size int) (server, error)
	// Dial dials conns client connections to the server at addr, for
	// payloads of size bytes.
	Dial(addr string, size, conns int) (clients, error)
}

// A sharedWriters transport can be driven by several goroutines on one
// connection: its Send may be called concurrently for the same connection.
type sharedWriters interface {
	SharedWriters() bool
}

// A server is the receiving end of a transport.
type server interface {
	// Addr is the address the server listens on.
	Addr() string
	// Received returns the messages and payload bytes the server has
	// received so far. It must be cheap: it is polled.
	Received() (msgs, bytes uint64)
	// Close closes the server and returns once every goroutine of it has
	// ended, with the first error the server met.
	Close() error
}

// clients are the sending end of a transport.
type clients interface {
	// Send sends messages of the clients' size on connection i until stop
	// is set or limit messages have been sent, and returns how many it sent.
	// It is called concurrently for different connections, and for the same
	// one only if the transport has SharedWriters.
	Send(i int, stop *atomic.Bool, limit uint64) (uint64, error)
	// Close closes every connection.
	Close() error
}

// A session is the clients and the server of one cell.
type session struct {
	clients clients
	end     end
}

// openSession starts t's server for wl, in this process if procs is 1 and
// in a child process if it is 2, and dials its clients.
func openSession(t transport, wl workload, procs int) (*session, error) {
	var (
		e   end
		err error
	)
	if procs == 1 {
		var srv server
		if srv, err = t.Serve(wl.size); err == nil {
			e = localEnd{srv}
		}
	} else {
		e, err = startChild(t.Name(), wl.size)
	}
	if err != nil {
		return nil, err
	}
	cl, err := t.Dial(e.addr(), wl.size, wl.conns)
	if err != nil {
		return nil, errors.Join(err, e.Close())
	}
	return &session{clients: cl, end: e}, nil
}

// Close closes the clients, then the server.
func (s *session) Close() error {
	return errors.Join(s.clients.Close(), s.end.Close())
}

// newTransports lists every transport, in column order.
func newTransports(opt options) []transport {
	ts := []transport{
		syncTransport{},
		batchTransport{bufSize: opt.batchBuf, flushInterval: opt.flush},
		bufWriterTransport{bufSize: opt.batchBuf},
		rawTransport{},
		bs2Transport{},
		bufioTransport{},
		protodelimTransport{},
		ackTransport{},
		ackTransport{batch: true, bufSize: opt.batchBuf},
		ackTransport{writer: true, bufSize: opt.batchBuf},
	}
	if corkSupported {
		ts = append(ts, corkTransport{})
	}
	return ts
}

// An optIn transport runs only when -t names it.
type optIn interface {
	OptIn() bool
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

// A sample is one run of a cell.
type sample struct {
	Messages   uint64  `json:"messages"`  // sent
	Delivered  uint64  `json:"delivered"` // counted by the server
	Bytes      uint64  `json:"bytes"`     // payload bytes sent
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// CPUPerM is the CPU time (user + system) of both ends per million
	// messages, in seconds; zero where CPU time is not measured.
	CPUPerM float64 `json:"cpu_sec_per_million_msgs,omitempty"`
	// AllocsPerMsg is the heap allocations of both ends during the timed
	// part of the cell, per message sent.
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	// SegsPerMsg is the TCP segments the host sent during the timed part
	// of the cell (both directions: data and acknowledgements), per
	// message sent; zero where segments are not counted.
	SegsPerMsg float64 `json:"tcp_segments_per_msg,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// result is one cell: one transport on one workload, in one process or
// across two, with the figures of its samples. The figures are medians over
// the samples (the mean of the middle two for an even count), with the
// smallest and largest sample beside some of them; they are zero when a
// sample failed.
type result struct {
	Transport string `json:"transport"`
	Size      int    `json:"size"`
	Conns     int    `json:"conns"`
	Writers   int    `json:"writers"` // goroutines sending on each connection
	// Procs is 1 when the server runs in this process, 2 when it runs in a
	// child process.
	Procs         int     `json:"procs"`
	MsgsPerSec    float64 `json:"msgs_per_sec"`
	MsgsPerSecMin float64 `json:"msgs_per_sec_min"`
	MsgsPerSecMax float64 `json:"msgs_per_sec_max"`
	MBPerSec      float64 `json:"mb_per_sec"`
	CPUPerM       float64 `json:"cpu_sec_per_million_msgs,omitempty"`
	CPUPerMMin    float64 `json:"cpu_sec_per_million_msgs_min,omitempty"`
	CPUPerMMax    float64 `json:"cpu_sec_per_million_msgs_max,omitempty"`
	// Ratio is MsgsPerSec divided by the ceiling's for the same workload
	// and Procs; zero for the ceiling itself or when it was not run.
	Ratio float64 `json:"ratio_to_ceiling,omitempty"`
	// BaselineRatio is MsgsPerSec divided by the baseline's for the same
	// workload and Procs; zero for the baseline and the ceiling or when the
	// baseline was not run.
	BaselineRatio float64  `json:"ratio_to_baseline,omitempty"`
	AllocsPerMsg  float64  `json:"allocs_per_msg"`
	SegsPerMsg    float64  `json:"tcp_segments_per_msg,omitempty"`
	SegsPerMsgMin float64  `json:"tcp_segments_per_msg_min,omitempty"`
	SegsPerMsgMax float64  `json:"tcp_segments_per_msg_max,omitempty"`
	Error         string   `json:"error,omitempty"` // the first failed sample's
	Samples       []sample `json:"samples"`
}

func (r result) workload() workload { return workload{r.Size, r.Conns, r.Writers} }

// summarize sets the result's figures from its samples.
func (r *result) summarize() {
	var msgs, cpu, allocs, segs []float64
	for i, s := range r.Samples {
		if s.Error != "" {
			if r.Error == "" {
				r.Error = s.Error
				if len(r.Samples) > 1 {
					r.Error = fmt.Sprintf("sample %d: %s", i+1, s.Error)
				}
			}
			continue
		}
		msgs = append(msgs, s.MsgsPerSec)
		cpu = append(cpu, s.CPUPerM)
		allocs = append(allocs, s.AllocsPerMsg)
		segs = append(segs, s.SegsPerMsg)
	}
	if r.Error != "" || len(msgs) == 0 {
		return
	}
	r.MsgsPerSec, r.MsgsPerSecMin, r.MsgsPerSecMax = spread(msgs)
	r.MBPerSec = r.MsgsPerSec * float64(r.Size) / 1e6
	r.CPUPerM, r.CPUPerMMin, r.CPUPerMMax = spread(cpu)
	r.AllocsPerMsg, _, _ = spread(allocs)
	r.SegsPerMsg, r.SegsPerMsgMin, r.SegsPerMsgMax = spread(segs)
}

// spread returns the median of vs (the mean of the middle two for an even
// count), the smallest and the largest. vs must not be empty.
func spread(vs []float64) (median, lo, hi float64) {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	median = s[n/2]
	if n%2 == 0 {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[n-1]
}

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
	Count       int             `json:"count"` // samples per cell
	Procs       []int           `json:"procs"` // 1: in one process, 2: the server in a child process
	Ceiling     string          `json:"ceiling"`
	Baseline    string          `json:"baseline"`
	BatchBuffer int             `json:"batch_write_buffer_size"`
	BatchFlush  string          `json:"batch_flush_interval"`
	CPUScope    string          `json:"cpu_scope"`
	SegsScope   string          `json:"tcp_segments_scope"`
	LoadStart   float64         `json:"load_average_start,omitempty"` // 1-minute load average
	LoadEnd     float64         `json:"load_average_end,omitempty"`
	Busy        bool            `json:"busy,omitempty"` // the load average says the machine was busy
	AllocsScope string          `json:"allocs_scope"`
	Results     []result        `json:"results"`
	Latency     []latencyResult `json:"latency"`
	Idle        *idleResult     `json:"idle,omitempty"`
	Interrupted bool            `json:"interrupted,omitempty"`
	TotalSecs   float64         `json:"total_seconds"`
}

// segsScope says what the segment figures are.
func segsScope() string {
	if !segsMeasured {
		return "not measured on " + runtime.GOOS
	}
	return "TCP segments sent by the whole host (TcpOutSegs, as nstat shows it: data and acknowledgements, both directions) over the timed part of the cell / messages; anything else using TCP meanwhile is counted too"
}

// busyLoad is the 1-minute load average per processor above which a run
// is reported as taken on a busy machine: the reader of a busy machine is
// descheduled and lags, which hides costs a quiet machine pays.
const busyLoad = 0.25

const allocsScope = "both ends (client and server, and the server's process in cross-process cells): runtime.MemStats.Mallocs growth over the timed part of the cell / messages"

// cpuScope says what the CPU figures are, or that there are none.
func cpuScope() string {
	if !cpuMeasured {
		return "not measured on " + runtime.GOOS
	}
	return "both ends (client and server, and the server's process in cross-process cells): getrusage RUSAGE_SELF user + system time over the timed part of the cell, in seconds per million messages"
}

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
	count     int   // samples per cell
	procs     []int // 1, or 1 and 2
	targets   bool
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
	if os.Getenv(receiverChildEnv) != "" {
		os.Exit(runReceiverChild())
	}
	var (
		d            = flag.Duration("d", 300*time.Millisecond, "sending time per cell")
		warm         = flag.Duration("warmup", 0, "warm-up time per cell (0: d/10, at most 200ms)")
		n            = flag.Uint64("n", 200_000_000, "most messages sent per cell (all writers together)")
		sizesArg     = flag.String("sizes", "110,1024,65536", "payload sizes in bytes, comma separated (with -conns, replaces the default workloads by their grid)")
		connsArg     = flag.String("conns", "1,4", "numbers of client connections, comma separated (see -sizes)")
		writers      = flag.Int("w", 8, "writers sharing one connection in the shared-writer workloads; 1 drops them")
		workloadsArg = flag.String("workloads", "", "workloads as SIZExCONNS[xWRITERS], comma separated (default 110x1,110x4,110x16,1024x1,65536x1,110x1xW)")
		transArg     = flag.String("t", "", "transports to run, comma separated (default all)")
		batchBuf     = flag.Int("batchbuf", defaultBatchBuf, "WriteBufferSize of the batch transport and buffer size of the bufwriter transports, in bytes")
		flushIvl     = flag.Duration("flush", 0, "FlushInterval of the batch transport")
		rounds       = flag.Int("rounds", 20000, "latency: most request-response rounds per transport; 0 skips the latency section")
		rtime        = flag.Duration("rtime", 3*time.Second, "latency: most time for the rounds of both transports together")
		idle         = flag.Int("idle", 10000, "idle memory: connections to open; 0 skips the section")
		count        = flag.Int("count", 3, "samples per cell; the tables show the median and, above 1, the min-max spread")
		procs        = flag.Int("procs", 1, "1: servers in this process; 2: every cell also with its server in a child process")
		targets      = flag.Bool("targets", false, "also check the results against the project's targets")
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
		rounds: *rounds, rtime: *rtime, idle: *idle, count: *count, targets: *targets,
		json: *jsonOut, md: *mdOut}
	switch {
	case opt.d <= 0 || opt.n == 0:
		fatalf("-d and -n must be positive")
	case *writers < 1 || *writers > 1024:
		fatalf("-w must be in [1, 1024]")
	case opt.batchBuf <= 0:
		fatalf("-batchbuf must be positive")
	case opt.flush < 0 || opt.rounds < 0 || opt.rtime <= 0 || opt.idle < 0:
		fatalf("-flush, -rounds and -idle must not be negative, -rtime must be positive")
	case opt.count < 1 || opt.count > 1000:
		fatalf("-count must be in [1, 1000]")
	case *procs != 1 && *procs != 2:
		fatalf("-procs must be 1 or 2")
	}
	opt.procs = []int{1}
	if *procs == 2 {
		opt.procs = append(opt.procs, 2)
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
		Count:       opt.count,
		Procs:       opt.procs,
		Ceiling:     ceilingName,
		Baseline:    baselineName,
		BatchBuffer: opt.batchBuf,
		BatchFlush:  opt.flush.String(),
		CPUScope:    cpuScope(),
		SegsScope:   segsScope(),
		AllocsScope: allocsScope,
		Results:     []result{},
		Latency:     []latencyResult{},
	}
	rep.LoadStart, _ = loadAvg()
	defer func() {
		rep.TotalSecs = time.Since(start).Seconds()
		rep.LoadEnd, _ = loadAvg()
		// The run itself loads the machine: only the load it found counts.
		rep.Busy = rep.LoadStart > busyLoad*float64(rep.NumCPU)
	}()
	if l, ok := loadAvg(); ok {
		logf("load average %.2f at the start (%d CPUs)", l, runtime.NumCPU())
	}

	rep.Results, failed = runCells(ctx, opt)

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

// runCells measures every cell opt.count times and returns the results in
// table order: by workload, then by number of processes, then by transport.
// The samples of one workload interleave: each repetition runs every
// transport once, starting one transport further along than the previous
// repetition did, and each transport in one process and then across two
// (with -procs 2) before the next transport runs. Load from elsewhere on
// the machine, or a drift over the run, then hits every column alike.
func runCells(ctx context.Context, opt options) (rs []result, failed bool) {
	index := map[string]int{}
	key := func(name string, wl workload, procs int) string {
		return fmt.Sprintf("%s|%v|%d", name, wl, procs)
	}
	total := 0
	for _, wl := range opt.workloads {
		for _, procs := range opt.procs {
			for _, t := range transportsFor(opt.trans, wl) {
				index[key(t.Name(), wl, procs)] = len(rs)
				rs = append(rs, result{Transport: t.Name(), Size: wl.size, Conns: wl.conns, Writers: wl.writers, Procs: procs, Samples: []sample{}})
				total += opt.count
			}
		}
	}
	k := 0
cells:
	for _, wl := range opt.workloads {
		ts := transportsFor(opt.trans, wl)
		for rep := range opt.count {
			for j := range ts {
				t := ts[(j+rep)%len(ts)]
				for _, procs := range opt.procs {
					if ctx.Err() != nil {
						break cells
					}
					k++
					s, leaked := runCell(ctx, t, wl, procs, opt)
					if s.Error != "" || leaked {
						failed = true
					}
					logf("[%d/%d] %-26s %-13s %-10s %s", k, total, wl, modeLabel(procs), t.Name(), summary(s))
					r := &rs[index[key(t.Name(), wl, procs)]]
					r.Samples = append(r.Samples, s)
				}
			}
		}
	}
	for i := range rs {
		rs[i].summarize()
	}
	fillRatios(rs)
	return rs, failed
}

// modeLabel names where a cell's server runs.
func modeLabel(procs int) string {
	if procs == 1 {
		return "in-process"
	}
	return "cross-process"
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

// runCell measures one transport on one workload, with its server in this
// process (procs 1) or in a child (procs 2). leaked reports goroutines left
// behind by the session.
func runCell(ctx context.Context, t transport, wl workload, procs int, opt options) (r sample, leaked bool) {
	runtime.GC() // leave the previous cell's garbage out of this one
	before := runtime.NumGoroutine()
	s, err := openSession(t, wl, procs)
	if err != nil {
		r.Error = err.Error()
		return r, checkLeaks(before, t.Name())
	}
	warmLimit := max(opt.n/20, uint64(wl.conns*wl.writers))
	if _, err := phase(ctx, s, wl, opt.warm, warmLimit, opt.timeout); err != nil {
		r.Error = "warm-up: " + err.Error()
	} else if ctx.Err() == nil {
		m, err := phase(ctx, s, wl, opt.d, opt.n, opt.timeout)
		r.Messages, r.Delivered, r.Bytes, r.Seconds = m.sent, m.delivered, m.sent*uint64(wl.size), m.elapsed.Seconds()
		if m.elapsed > 0 {
			r.MsgsPerSec = float64(m.sent) / m.elapsed.Seconds()
		}
		if m.sent > 0 {
			r.AllocsPerMsg = float64(m.use.mallocs) / float64(m.sent)
			r.SegsPerMsg = float64(m.segs) / float64(m.sent)
			if cpuMeasured {
				r.CPUPerM = m.use.cpu.Seconds() / float64(m.sent) * 1e6
			}
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
	sent      uint64
	delivered uint64        // counted by the server
	elapsed   time.Duration // from the first send to the delivery of the last message
	use       usage         // of both ends meanwhile
	segs      uint64        // TCP segments the host sent meanwhile
}

// phase sends from every writer of every connection for d or until limit
// messages in all, then waits until the server has received everything
// sent, and checks that it received exactly that.
func phase(ctx context.Context, s *session, wl workload, d time.Duration, limit uint64, timeout time.Duration) (m measured, err error) {
	base, err := s.end.stat()
	if err != nil {
		return m, err
	}
	senders := wl.conns * wl.writers
	per := max(limit/uint64(senders), 1)
	var (
		stop  atomic.Bool
		total atomic.Uint64
		wg    sync.WaitGroup
		emu   sync.Mutex
		errs  []error
	)
	self := readUsage()
	segs0, segsOK := hostSegs()
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	cancel := context.AfterFunc(ctx, func() { stop.Store(true) })
	for k := range senders {
		i := k % wl.conns
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.clients.Send(i, &stop, per)
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

	got, err := s.end.await(base.msgs+m.sent, timeout)
	m.elapsed = time.Since(start)
	m.use = readUsage().sub(self).add(got.use.sub(base.use))
	if segs1, ok := hostSegs(); ok && segsOK {
		m.segs = segs1 - segs0
	}
	if err != nil {
		return m, err
	}
	msgs, bytes := got.msgs-base.msgs, got.bytes-base.bytes
	m.delivered = msgs
	switch {
	case msgs < m.sent:
		return m, fmt.Errorf("timeout: sent %d messages, server received %d after %v", m.sent, msgs, timeout)
	case msgs != m.sent || bytes != m.sent*uint64(wl.size):
		return m, fmt.Errorf("sent %d messages of %d bytes, server received %d messages and %d bytes", m.sent, wl.size, msgs, bytes)
	}
	return m, nil
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
// results of the same workload and number of processes, from the medians.
func fillRatios(rs []result) {
	type place struct {
		wl    workload
		procs int
	}
	ceil, base := map[place]float64{}, map[place]float64{}
	for _, r := range rs {
		if r.Error != "" {
			continue
		}
		switch r.Transport {
		case ceilingName:
			ceil[place{r.workload(), r.Procs}] = r.MsgsPerSec
		case baselineName:
			base[place{r.workload(), r.Procs}] = r.MsgsPerSec
		}
	}
	for i, r := range rs {
		if r.Error != "" || r.Transport == ceilingName {
			continue
		}
		if c := ceil[place{r.workload(), r.Procs}]; c > 0 {
			rs[i].Ratio = r.MsgsPerSec / c
		}
		if b := base[place{r.workload(), r.Procs}]; b > 0 && r.Transport != baselineName {
			rs[i].BaselineRatio = r.MsgsPerSec / b
		}
	}
}

// summary is a sample's progress line.
func summary(s sample) string {
	cpu := "-"
	if cpuMeasured {
		cpu = fmt.Sprintf("%.3g", s.CPUPerM)
	}
	out := fmt.Sprintf("%11s msg/s %6s CPU s/M msgs %6.2f allocs/msg (%d msgs in %.2fs)",
		thousands(uint64(s.MsgsPerSec+0.5)), cpu, s.AllocsPerMsg, s.Messages, s.Seconds)
	if s.Error != "" {
		out += " ERROR: " + s.Error
	}
	return out
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
		out := []workload{{110, 1, 1}, {110, 4, 1}, {110, 16, 1}, {1024, 1, 1}, {65536, 1, 1}}
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
		var out []transport
		for _, t := range all {
			if o, ok := t.(optIn); !ok || !o.OptIn() {
				out = append(out, t)
			}
		}
		return out, nil
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
