package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const defaultTitle = "Messages over 127.0.0.1, one process"

// twoProcsTitle replaces defaultTitle when some results had their server in
// a child process.
const twoProcsTitle = "Messages over 127.0.0.1, in one process and across two"

// report holds the fields chart reads from a JSON report of test/bench or
// test/peers.
type report struct {
	Date      string   `json:"date"`
	GoVersion string   `json:"go_version"`
	GOOS      string   `json:"goos"`
	GOARCH    string   `json:"goarch"`
	NumCPU    int      `json:"num_cpu"`
	Ceiling   string   `json:"ceiling"`
	Results   []result `json:"results"`
}

type result struct {
	Transport  string  `json:"transport"`
	Size       int     `json:"size"`
	Conns      int     `json:"conns"`
	Writers    int     `json:"writers"` // goroutines writing on each connection; 0 means 1
	Procs      int     `json:"procs"`   // 2: the server ran in a child process; 0 means 1
	MsgsPerSec float64 `json:"msgs_per_sec"`
	Error      string  `json:"error"`
}

// input is one report and the name it is known by in labels.
type input struct {
	name string // file name without directory and extension
	rep  report
}

// load reads every file as a report. Two inputs of the same name (from
// different folders) are told apart by a number after the second one's.
func load(paths []string) ([]input, error) {
	var ins []input
	used := map[string]int{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if len(r.Results) == 0 {
			return nil, fmt.Errorf("%s: no results", p)
		}
		base := filepath.Base(p)
		name := strings.TrimSuffix(base, filepath.Ext(base))
		if used[name]++; used[name] > 1 {
			name += "#" + strconv.Itoa(used[name])
		}
		ins = append(ins, input{name: name, rep: r})
	}
	return ins, nil
}

// workload is a group of bars.
type workload struct{ size, conns, writers, procs int }

// workloadOf returns the group of a result.
func workloadOf(r result) workload {
	return workload{r.Size, r.Conns, max(r.Writers, 1), max(r.Procs, 1)}
}

func (w workload) label() string {
	c := "conns"
	if w.conns == 1 {
		c = "conn"
	}
	l := fmt.Sprintf("%s\n%d %s", sizeLabel(w.size), w.conns, c)
	if w.writers > 1 {
		l += fmt.Sprintf(", %d writers", w.writers)
	}
	if w.procs > 1 {
		l += fmt.Sprintf(", %d procs", w.procs)
	}
	return l
}

// series is one transport of one input: a bar in every group.
type series struct {
	label   string
	ceiling bool
	// msgs and ratio are indexed by group; NaN where there is no value.
	msgs, ratio []float64
	// failed marks the groups where the result carried an error.
	failed []bool
}

// chartData is everything render draws.
type chartData struct {
	title  string // two lines: the caption and the inputs' settings
	groups []workload
	series []series
}

// build turns reports into groups and series. A transport name found in
// more than one input is labelled with the input's name too, and ratios are
// taken against the ceiling of the same input and workload.
func build(ins []input, title string) (*chartData, error) {
	inputsOf := map[string]map[string]bool{} // transport -> input names
	groupSet := map[workload]bool{}
	for _, in := range ins {
		for _, r := range in.rep.Results {
			if r.Transport == "" {
				return nil, fmt.Errorf("%s: a result without a transport name", in.name)
			}
			if inputsOf[r.Transport] == nil {
				inputsOf[r.Transport] = map[string]bool{}
			}
			inputsOf[r.Transport][in.name] = true
			groupSet[workloadOf(r)] = true
		}
	}
	for w := range groupSet {
		if w.procs > 1 && title == defaultTitle {
			title = twoProcsTitle
		}
	}
	d := &chartData{title: title + "\n" + settings(ins)}
	for w := range groupSet {
		d.groups = append(d.groups, w)
	}
	slices.SortFunc(d.groups, func(a, b workload) int {
		if a.size != b.size {
			return a.size - b.size
		}
		if a.conns != b.conns {
			return a.conns - b.conns
		}
		if a.writers != b.writers {
			return a.writers - b.writers
		}
		return a.procs - b.procs
	})
	index := map[workload]int{}
	for i, w := range d.groups {
		index[w] = i
	}

	var plain, ceilings []series
	seen := map[string]int{} // label -> position in plain or ceilings
	for _, in := range ins {
		ceil := map[workload]float64{}
		for _, r := range in.rep.Results {
			if r.Transport == in.rep.Ceiling && r.Error == "" && r.MsgsPerSec > 0 {
				ceil[workloadOf(r)] = r.MsgsPerSec
			}
		}
		for _, r := range in.rep.Results {
			label := r.Transport
			if len(inputsOf[r.Transport]) > 1 {
				label += " [" + in.name + "]"
			}
			isCeil := r.Transport == in.rep.Ceiling
			list := &plain
			if isCeil {
				list = &ceilings
			}
			k, ok := seen[label]
			if !ok {
				k = len(*list)
				seen[label] = k
				*list = append(*list, newSeries(label, isCeil, len(d.groups)))
			}
			s := &(*list)[k]
			g := index[workloadOf(r)]
			if r.Error != "" || r.MsgsPerSec <= 0 || math.IsNaN(r.MsgsPerSec) || math.IsInf(r.MsgsPerSec, 0) {
				s.failed[g] = r.Error != ""
				continue
			}
			s.msgs[g] = r.MsgsPerSec
			if c := ceil[workloadOf(r)]; c > 0 {
				s.ratio[g] = r.MsgsPerSec / c
			}
		}
	}
	d.series = append(plain, ceilings...)
	if len(d.series) == 0 {
		return nil, errors.New("no results")
	}
	return d, nil
}

func newSeries(label string, ceiling bool, groups int) series {
	s := series{label: label, ceiling: ceiling, msgs: make([]float64, groups), ratio: make([]float64, groups), failed: make([]bool, groups)}
	for i := range groups {
		s.msgs[i], s.ratio[i] = math.NaN(), math.NaN()
	}
	return s
}

// settings describes where the inputs were measured: each distinct date, Go
// version, platform and CPU count once, in input order.
func settings(ins []input) string {
	var dates, gos, plats, cpus []string
	add := func(list *[]string, v string) {
		if v != "" && !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	for _, in := range ins {
		date := in.rep.Date
		if len(date) >= 10 {
			date = date[:10]
		}
		add(&dates, date)
		add(&gos, in.rep.GoVersion)
		if in.rep.GOOS != "" {
			add(&plats, in.rep.GOOS+"/"+in.rep.GOARCH)
		}
		if in.rep.NumCPU > 0 {
			add(&cpus, strconv.Itoa(in.rep.NumCPU))
		}
	}
	var parts []string
	for _, l := range [][]string{dates, gos, plats} {
		if len(l) > 0 {
			parts = append(parts, strings.Join(l, ", "))
		}
	}
	if len(cpus) > 0 {
		n := strings.Join(cpus, ", ")
		if n == "1" {
			parts = append(parts, "1 CPU")
		} else {
			parts = append(parts, n+" CPUs")
		}
	}
	var names []string
	for _, in := range ins {
		names = append(names, in.name)
	}
	parts = append(parts, "from "+strings.Join(names, ", "))
	return strings.Join(parts, " · ")
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
