package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the receiver process of the
// cross-process cells, as the program does.
func TestMain(m *testing.M) {
	if os.Getenv(receiverChildEnv) != "" {
		os.Exit(runReceiverChild())
	}
	os.Exit(m.Run())
}

// testOptions bounds a cell by count: n messages, with a sending time far
// above what they take.
func testOptions(n uint64) options {
	return options{d: 20 * time.Second, warm: 10 * time.Millisecond, n: n, timeout: 20 * time.Second,
		count: 1, procs: []int{1}}
}

// TestCellCounts runs small cells in one process and across two and checks
// that the server counted exactly the messages sent, which were all that
// were asked for.
func TestCellCounts(t *testing.T) {
	const n = 3000
	opt := testOptions(n)
	all := newTransports(options{batchBuf: defaultBatchBuf})
	for _, procs := range []int{1, 2} {
		for _, tr := range all {
			for _, wl := range []workload{{110, 2, 1}, {110, 1, 4}} {
				if len(transportsFor([]transport{tr}, wl)) == 0 {
					continue
				}
				t.Run(modeLabel(procs)+"/"+tr.Name()+"/"+strings.ReplaceAll(wl.String(), " ", ""), func(t *testing.T) {
					s, leaked := runCell(context.Background(), tr, wl, procs, opt)
					if s.Error != "" {
						t.Fatal(s.Error)
					}
					if leaked {
						t.Error("goroutines left behind")
					}
					if s.Messages != n || s.Delivered != n || s.Bytes != n*110 {
						t.Errorf("sent %d messages (%d bytes), delivered %d; want %d each", s.Messages, s.Bytes, s.Delivered, n)
					}
					if s.MsgsPerSec <= 0 {
						t.Errorf("msg/s %v, want above 0", s.MsgsPerSec)
					}
					// A system call per message costs CPU time that no
					// clock granularity rounds away.
					if slow := tr.Name() == "sync" || tr.Name() == baselineName; slow && cpuMeasured && s.CPUPerM <= 0 {
						t.Errorf("CPU s per million messages %v, want above 0", s.CPUPerM)
					}
				})
			}
		}
	}
}

// fakeServer counts what fakeClients send, in memory.
type fakeServer struct{ msgs, bytes atomic.Uint64 }

func (s *fakeServer) Addr() string               { return "fake" }
func (s *fakeServer) Received() (uint64, uint64) { return s.msgs.Load(), s.bytes.Load() }
func (s *fakeServer) Close() error               { return nil }

// fakeClients count every message as received at once, plus extra more
// than were sent.
type fakeClients struct {
	srv   *fakeServer
	size  int
	extra uint64
}

func (c *fakeClients) Send(_ int, stop *atomic.Bool, limit uint64) (uint64, error) {
	c.srv.bytes.Add((limit + c.extra) * uint64(c.size))
	c.srv.msgs.Add(limit + c.extra)
	return limit, nil
}
func (c *fakeClients) Close() error { return nil }

func fakeSession(size int, extra uint64) *session {
	srv := &fakeServer{}
	return &session{clients: &fakeClients{srv: srv, size: size, extra: extra}, end: localEnd{srv}}
}

// TestPhaseExactCount checks that a phase fails when the server counts a
// message more than was sent, and passes when it counts exactly those.
func TestPhaseExactCount(t *testing.T) {
	wl := workload{110, 1, 1}
	if m, err := phase(context.Background(), fakeSession(110, 0), wl, time.Second, 500, time.Second); err != nil || m.sent != 500 || m.delivered != 500 {
		t.Errorf("exact: sent %d, delivered %d, err %v", m.sent, m.delivered, err)
	}
	if _, err := phase(context.Background(), fakeSession(110, 1), wl, time.Second, 500, time.Second); err == nil {
		t.Error("one message too many: no error")
	}
}

// orderTransport records the order in which cells open.
type orderTransport struct {
	name string
	mu   *sync.Mutex
	log  *[]string
}

func (o orderTransport) Name() string { return o.name }

func (o orderTransport) Serve(int) (server, error) {
	o.mu.Lock()
	*o.log = append(*o.log, o.name)
	o.mu.Unlock()
	return &fakeServer{}, nil
}

func (o orderTransport) Dial(string, int, int) (clients, error) { return nil, errNoDial }

var errNoDial = errors.New("orderTransport does not dial")

// TestRunCellsInterleaves checks that repetitions run every transport in
// turn, each starting one further along, and that every sample is kept.
func TestRunCellsInterleaves(t *testing.T) {
	var (
		mu  sync.Mutex
		log []string
	)
	var ts []transport
	for _, n := range []string{"a", "b", "c"} {
		ts = append(ts, orderTransport{name: n, mu: &mu, log: &log})
	}
	opt := testOptions(10)
	opt.count = 3
	opt.trans = ts
	opt.workloads = []workload{{110, 1, 1}}
	rs, failed := runCells(context.Background(), opt)
	if !failed {
		t.Error("cells that cannot dial did not fail")
	}
	if got, want := strings.Join(log, ""), "abcbcacab"; got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if len(rs) != 3 {
		t.Fatalf("%d results, want 3", len(rs))
	}
	for _, r := range rs {
		if len(r.Samples) != 3 || r.Error == "" || !strings.HasPrefix(r.Error, "sample 1: ") {
			t.Errorf("%s: %d samples, error %q", r.Transport, len(r.Samples), r.Error)
		}
	}
}

func TestSpread(t *testing.T) {
	for _, c := range []struct {
		in            []float64
		med, lo, high float64
	}{
		{[]float64{5}, 5, 5, 5},
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		med, lo, hi := spread(c.in)
		if med != c.med || lo != c.lo || hi != c.high {
			t.Errorf("spread(%v) = %v, %v, %v; want %v, %v, %v", c.in, med, lo, hi, c.med, c.lo, c.high)
		}
	}
	r := result{Size: 110, Samples: []sample{{MsgsPerSec: 30, CPUPerM: 3}, {MsgsPerSec: 10, CPUPerM: 1}, {MsgsPerSec: 20, CPUPerM: 2}}}
	r.summarize()
	if r.MsgsPerSec != 20 || r.MsgsPerSecMin != 10 || r.MsgsPerSecMax != 30 || r.CPUPerM != 2 || r.MBPerSec != 20*110/1e6 {
		t.Errorf("summarize: %+v", r)
	}
}

func TestCellFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{rateCell(21.3e6, 19.8e6, 22.0e6, true), "21.3 M (19.8–22.0)"},
		{rateCell(1.854e6, 1.8e6, 1.9e6, true), "1.85 M (1.80–1.90)"},
		{rateCell(184_400, 180_000, 205_000, true), "184 k (180–205)"},
		{rateCell(950, 900, 999, true), "950 (900–999)"},
		{rateCell(1_234_567, 1, 2, false), "1,234,567"},
		{decimalCell(20.25, 19, 21.5, 1, true), "20.2 (19.0–21.5)"},
		{decimalCell(20.25, 19, 21.5, 1, false), "20.2"},
		{sigCell(0.0664, 0.0663, 0.0911, true), "0.0664 (0.0663–0.0911)"},
		{sigCell(6.1, 5.88, 7.38, true), "6.10 (5.88–7.38)"},
		{sigCell(10.9, 7.2, 11.8, true), "10.9 (7.2–11.8)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestParseWorkload(t *testing.T) {
	for in, want := range map[string]workload{
		"110x16": {110, 16, 1}, "1024x16": {1024, 16, 1}, "110x1x16": {110, 1, 16},
	} {
		if got, err := parseWorkload(in); err != nil || got != want {
			t.Errorf("parseWorkload(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	wls, err := selectWorkloads("", "", "", 8, map[string]bool{})
	if err != nil || !containsWorkload(wls, workload{110, 16, 1}) {
		t.Errorf("default workloads %v (%v) lack 110 B on 16 connections", wls, err)
	}
}

func containsWorkload(wls []workload, w workload) bool {
	for _, x := range wls {
		if x == w {
			return true
		}
	}
	return false
}
