package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Targets the checks at the end of the report compare with.
const (
	targetBatchToRaw      = 0.6  // batch, 110 B, 1 conn: msg/s ÷ raw's
	targetBatchToBaseline = 10   // batch, 110 B, 1 conn: msg/s ÷ bs2.0's
	targetSharedToBase    = 4    // sync, 110 B, 1 conn, 8 writers: ÷ bs2.0's with 8 writers
	targetLargeToRaw      = 0.8  // 64 KiB, 1 conn: bytes/s ÷ raw's
	targetLatency         = 1.15 // p50 ÷ raw's
	targetIdleBytes       = 10 << 10
	zeroAllocs            = 0.005 // allocs/msg that print as 0.00
)

// legend says in one line what each transport's column is.
var legend = map[string]string{
	"sync":          "this library, default mode: Write returns once the kernel has the frame",
	"batch":         "this library, batching mode: Write copies into a buffer a flusher writes",
	"bufwriter":     "this library, default mode, through a BufferedWriter: a buffer per goroutine, no lock per message",
	"sync+ack":      "this library, default mode with acknowledged delivery",
	"batch+ack":     "this library, batching mode with acknowledged delivery",
	"bufwriter+ack": "this library, through a BufferedWriter, with acknowledged delivery",
	"raw":           "the ceiling: pre-framed bytes written 256 KiB at a time, parsed in place",
	"bs2.0":         "the baseline: BuffStreams 2.0's pattern, one write and two reads per message",
	"cork":          "the floor of a Write per frame: one write(2) per frame under TCP_CORK",
	"bufio":         "what one writes by hand: bufio.Writer, 4-byte header, io.ReadFull",
	"protodelim":    "protobuf's protodelim over bufio, with test/message Notes",
}

// printReport writes the tables: one per metric, workloads down (each in
// one process and, with -procs 2, across two), transports across; then
// latency, idle memory and, with -targets, the checks against the targets.
func printReport(w io.Writer, rep report, opt options) {
	fmt.Fprintf(w, "# buffstreams bench  %s  %s %s/%s  NumCPU=%d GOMAXPROCS=%d  %v per cell (+%v warm-up), at most %s msgs per cell\n",
		rep.Date, rep.GoVersion, rep.GOOS, rep.GOARCH, rep.NumCPU, rep.MaxProcs, opt.d, opt.warm, thousands(opt.n))
	fmt.Fprintf(w, "# batch: WriteBufferSize %s (at least 16 payloads: 1 MiB at 64 KiB), FlushInterval %v\n", sizeLabel(rep.BatchBuffer), rep.BatchFlush)
	fmt.Fprintf(w, "# MB = 10^6 payload bytes (headers excluded); ratios divide msg/s by %q's (the ceiling) or %q's (the baseline) on the same workload\n", ceilingName, baselineName)
	if opt.count > 1 {
		fmt.Fprintf(w, "# %d samples per cell, transports interleaved: each figure is the median, (min–max) beside it; ratios divide medians\n", opt.count)
	}
	if len(opt.procs) > 1 {
		fmt.Fprintln(w, "# in-process: server and clients in this process; cross-process: the server in a child process, the clients here")
	}
	fmt.Fprintf(w, "# CPU: %s\n", rep.CPUScope)
	fmt.Fprintf(w, "# allocs/msg: %s\n", allocsScope)
	fmt.Fprintf(w, "# TCP segments: %s\n", rep.SegsScope)
	if rep.LoadStart > 0 || rep.LoadEnd > 0 {
		fmt.Fprintf(w, "# load average (1 min): %.2f at the start, %.2f at the end, on %d CPUs\n", rep.LoadStart, rep.LoadEnd, rep.NumCPU)
	}
	if rep.Busy {
		fmt.Fprintf(w, "# WARNING: the machine was busy (load average above %.2f per CPU). A busy machine deschedules the\n", busyLoad)
		fmt.Fprintln(w, "# reader, which lags and lets frames pile up: that hides costs a quiet machine pays. Do not quote these figures.")
	}
	fmt.Fprintln(w, "# columns:")
	for _, t := range opt.trans {
		fmt.Fprintf(w, "#   %-11s %s\n", t.Name(), legend[t.Name()])
	}

	byKey := map[string]result{}
	key := func(name string, wl workload, procs int) string { return fmt.Sprintf("%s|%v|%d", name, wl, procs) }
	for _, r := range rep.Results {
		byKey[key(r.Transport, r.workload(), r.Procs)] = r
	}
	var errs []string
	for _, r := range rep.Results {
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("%s, %s, %s: %s", r.workload(), modeLabel(r.Procs), r.Transport, r.Error))
		}
	}
	many := opt.count > 1
	metrics := []struct {
		title string
		skip  func(name string) bool
		cell  func(r result) string
	}{
		{"messages per second", nil, func(r result) string { return rateCell(r.MsgsPerSec, r.MsgsPerSecMin, r.MsgsPerSecMax, many) }},
		{"MB/s (payload)", nil, func(r result) string {
			mb := float64(r.Size) / 1e6
			return decimalCell(r.MBPerSec, r.MsgsPerSecMin*mb, r.MsgsPerSecMax*mb, 1, many)
		}},
		{"ratio to " + ceilingName + " (msg/s ÷ " + ceilingName + "'s)",
			func(name string) bool { return name == ceilingName },
			func(r result) string { return ratio(r.Ratio, 3) }},
		{"ratio to " + baselineName + " (msg/s ÷ " + baselineName + "'s)",
			func(name string) bool { return name == ceilingName || name == baselineName },
			func(r result) string { return ratio(r.BaselineRatio, 2) }},
		{"CPU seconds per million messages (user + system, both ends)", nil, func(r result) string {
			if !cpuMeasured {
				return "-"
			}
			return sigCell(r.CPUPerM, r.CPUPerMMin, r.CPUPerMMax, many)
		}},
		{"allocs/msg (both ends)", nil, func(r result) string { return fmt.Sprintf("%.2f", r.AllocsPerMsg) }},
		{"TCP segments per message (host-wide, both directions)", nil, func(r result) string {
			if !segsMeasured {
				return "-"
			}
			return decimalCell(r.SegsPerMsg, r.SegsPerMsgMin, r.SegsPerMsgMax, 3, many)
		}},
	}
	for _, m := range metrics {
		t := table{title: m.title, header: []string{"workload"}}
		if len(opt.procs) > 1 {
			t.header = append(t.header, "server")
		}
		var cols []transport
		for _, tr := range opt.trans {
			if m.skip == nil || !m.skip(tr.Name()) {
				cols = append(cols, tr)
				t.header = append(t.header, tr.Name())
			}
		}
		if len(cols) == 0 {
			continue
		}
		for _, wl := range opt.workloads {
			for _, procs := range opt.procs {
				row := []string{wl.String()}
				if len(opt.procs) > 1 {
					row = append(row, modeLabel(procs))
				}
				for _, tr := range cols {
					r, ok := byKey[key(tr.Name(), wl, procs)]
					switch {
					case !ok:
						row = append(row, "-")
					case r.Error != "":
						row = append(row, "error")
					default:
						row = append(row, m.cell(r))
					}
				}
				t.rows = append(t.rows, row)
			}
		}
		fmt.Fprintln(w)
		t.write(w, opt.md)
	}
	for _, e := range errs {
		fmt.Fprintln(w, "# error:", e)
	}

	if len(rep.Latency) > 0 {
		var raw float64
		for _, l := range rep.Latency {
			if l.Transport == ceilingName && l.Error == "" {
				raw = l.P50
			}
		}
		t := table{
			title:  fmt.Sprintf("latency: %d B request-response, one outstanding", latencySize),
			header: []string{"transport", "rounds", "p50 µs", "p99 µs", "p50 ÷ " + ceilingName + "'s"},
		}
		for _, l := range rep.Latency {
			if l.Error != "" {
				t.rows = append(t.rows, []string{l.Transport, thousands(uint64(l.Rounds)), "error", "error", "-"})
				fmt.Fprintln(w, "# error: latency", l.Transport+":", l.Error)
				continue
			}
			r := "-"
			if raw > 0 && l.Transport != ceilingName {
				r = ratio(l.P50/raw, 2)
			}
			t.rows = append(t.rows, []string{l.Transport, thousands(uint64(l.Rounds)),
				fmt.Sprintf("%.1f", l.P50), fmt.Sprintf("%.1f", l.P99), r})
		}
		fmt.Fprintln(w)
		t.write(w, opt.md)
	}

	if id := rep.Idle; id != nil {
		t := table{
			title:  "idle memory: connections to a buffstreams listener in a child process (VmRSS after GC)",
			header: []string{"conns", "RSS before", "RSS after", "bytes/conn", "KiB/conn"},
		}
		switch {
		case id.Skipped != "":
			fmt.Fprintln(w)
			fmt.Fprintln(w, "idle memory: skipped:", id.Skipped)
		case id.Error != "":
			fmt.Fprintln(w)
			fmt.Fprintln(w, "# error: idle memory:", id.Error)
		default:
			t.rows = append(t.rows, []string{thousands(uint64(id.Conns)),
				mib(id.RSSBefore), mib(id.RSSAfter),
				thousands(uint64(max(id.BytesPerConn, 0))), fmt.Sprintf("%.1f", id.BytesPerConn/1024)})
			fmt.Fprintln(w)
			t.write(w, opt.md)
		}
	}

	if checks := checkTargets(rep); opt.targets && len(checks.rows) > 0 {
		fmt.Fprintln(w)
		checks.write(w, opt.md)
	}
	fmt.Fprintf(w, "\n# total time %.1fs\n", rep.TotalSecs)
}

// checkTargets compares the results with the project's targets, which are
// for the library's developers (-targets); a target whose inputs were not
// measured is left out. The throughput targets are checked on the cells in
// one process, except the one for batching across two.
func checkTargets(rep report) table {
	t := table{title: "targets", header: []string{"target", "measured", ""}}
	get := func(name string, wl workload) (result, bool) {
		for _, r := range rep.Results {
			if r.Transport == name && r.workload() == wl && r.Procs == 1 && r.Error == "" {
				return r, true
			}
		}
		return result{}, false
	}
	check := func(what, measured string, ok bool) {
		verdict := "ok"
		if !ok {
			verdict = "MISSED"
		}
		t.rows = append(t.rows, []string{what, measured, verdict})
	}
	small := workload{110, 1, 1}
	if b, ok := get("batch", small); ok {
		if b.Ratio > 0 {
			check(fmt.Sprintf("batch %s: ≥ %.1f× raw", small, targetBatchToRaw), ratio(b.Ratio, 3)+"×", b.Ratio >= targetBatchToRaw)
		}
		if u, ok := get("bufio", small); ok {
			check(fmt.Sprintf("batch %s: ≥ bufio", small), ratio(b.MsgsPerSec/u.MsgsPerSec, 2)+"×", b.MsgsPerSec >= u.MsgsPerSec)
		}
		if b.BaselineRatio > 0 {
			check(fmt.Sprintf("batch %s: ≥ %d× bs2.0", small, targetBatchToBaseline), ratio(b.BaselineRatio, 1)+"×", b.BaselineRatio >= targetBatchToBaseline)
		}
	}
	if w, ok := get("bufwriter", small); ok {
		if u, ok := get("bufio", small); ok {
			check(fmt.Sprintf("bufwriter %s: ≥ bufio", small), ratio(w.MsgsPerSec/u.MsgsPerSec, 2)+"×", w.MsgsPerSec >= u.MsgsPerSec)
		}
	}
	for _, r := range rep.Results {
		if r.Transport == "batch" && r.Procs == 2 && r.workload() == small && r.Ratio > 0 {
			check(fmt.Sprintf("batch %s, cross-process: ≥ %.1f× raw", small, targetBatchToRaw), ratio(r.Ratio, 3)+"×", r.Ratio >= targetBatchToRaw)
		}
	}
	for _, r := range rep.Results {
		if r.Procs != 1 {
			continue
		}
		if r.Transport == "sync" && r.Writers > 1 && r.BaselineRatio > 0 {
			check(fmt.Sprintf("sync %s: ≥ %d× bs2.0", r.workload(), targetSharedToBase), ratio(r.BaselineRatio, 2)+"×", r.BaselineRatio >= targetSharedToBase)
		}
	}
	for _, r := range rep.Results {
		if (r.Transport == "sync" || r.Transport == "batch") && r.Procs == 1 && r.Size >= 64<<10 && r.Writers == 1 && r.Ratio > 0 {
			check(fmt.Sprintf("%s %s: ≥ %.1f× raw bytes/s", r.Transport, r.workload(), targetLargeToRaw), ratio(r.Ratio, 3)+"×", r.Ratio >= targetLargeToRaw)
		}
	}
	worst, where := -1.0, ""
	for _, r := range rep.Results {
		if (r.Transport == "sync" || r.Transport == "batch") && r.Error == "" && r.AllocsPerMsg > worst {
			worst, where = r.AllocsPerMsg, r.Transport+" "+r.workload().String()
		}
	}
	if worst >= 0 {
		check("sync and batch: 0 allocs/msg (worst cell)", fmt.Sprintf("%.3f (%s)", worst, where), worst < zeroAllocs)
	}
	var lib, raw float64
	for _, l := range rep.Latency {
		switch {
		case l.Error != "":
		case l.Transport == ceilingName:
			raw = l.P50
		case l.Transport == "sync":
			lib = l.P50
		}
	}
	if lib > 0 && raw > 0 {
		check(fmt.Sprintf("latency p50: ≤ %.2f× raw", targetLatency), ratio(lib/raw, 2)+"×", lib/raw <= targetLatency)
	}
	if id := rep.Idle; id != nil && id.Error == "" && id.Skipped == "" {
		check(fmt.Sprintf("idle: ≤ %d KiB/conn", targetIdleBytes>>10), fmt.Sprintf("%.1f KiB", id.BytesPerConn/1024), id.BytesPerConn <= targetIdleBytes)
	}
	return t
}

// table is a titled grid of cells, written aligned or in Markdown.
type table struct {
	title  string
	header []string
	rows   [][]string
}

// write writes the table: in Markdown if md, else as text with the first
// column aligned left and the others right.
func (t table) write(w io.Writer, md bool) {
	if md {
		fmt.Fprintf(w, "**%s**\n\n", t.title)
		fmt.Fprintf(w, "| %s |\n", strings.Join(t.header, " | "))
		seps := make([]string, len(t.header))
		for i := range seps {
			seps[i] = "---:"
		}
		seps[0] = ":---"
		fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
		for _, row := range t.rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		return
	}
	width := make([]int, len(t.header))
	for _, row := range append([][]string{t.header}, t.rows...) {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	fmt.Fprintln(w, t.title)
	for _, row := range append([][]string{t.header}, t.rows...) {
		var b strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// rateCell formats a rate: with spread, as its median to three significant
// digits in units of k or M with the smallest and largest in the same unit
// ("21.3 M (19.8–22.0)"); else in full with thousands separators.
func rateCell(median, lo, hi float64, spread bool) string {
	if !spread {
		return thousands(uint64(median + 0.5))
	}
	unit, div := "", 1.0
	switch {
	case median >= 1e6:
		unit, div = " M", 1e6
	case median >= 1e3:
		unit, div = " k", 1e3
	}
	prec := sigDecimals(median / div)
	return fmt.Sprintf("%.*f%s (%.*f–%.*f)", prec, median/div, unit, prec, lo/div, prec, hi/div)
}

// decimalCell formats a figure with prec decimals, and with spread, the
// smallest and largest beside it.
func decimalCell(median, lo, hi float64, prec int, spread bool) string {
	if !spread {
		return fmt.Sprintf("%.*f", prec, median)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, median, prec, lo, prec, hi)
}

// sigCell formats a figure to three significant digits, and with spread,
// the smallest and largest with as many decimals.
func sigCell(median, lo, hi float64, spread bool) string {
	return decimalCell(median, lo, hi, sigDecimals(median), spread)
}

// sigDecimals returns the decimals that show v to three significant digits
// (at least none, at most six).
func sigDecimals(v float64) int {
	switch {
	case v >= 100:
		return 0
	case v >= 10:
		return 1
	case v >= 1 || v <= 0:
		return 2
	}
	return min(2-int(math.Floor(math.Log10(v))), 6)
}

// ratio formats a ratio with prec decimals, or "-" for none.
func ratio(v float64, prec int) string {
	if v <= 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
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
