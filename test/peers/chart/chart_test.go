package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var fixtures = []string{"testdata/bench.json", "testdata/peers.json"}

func loadFixtures(t *testing.T) *chartData {
	t.Helper()
	ins, err := load(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	d, err := build(ins, defaultTitle)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSVG renders the fixtures and checks that the output is one well-formed
// SVG document whose text holds every legend label and the title.
func TestSVG(t *testing.T) {
	d := loadFixtures(t)
	out := filepath.Join(t.TempDir(), "chart.svg")
	if err := writeFile(out, d); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}

	dec := xml.NewDecoder(bytes.NewReader(b))
	var (
		root  string
		depth int
		texts strings.Builder
	)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if root != "" {
					t.Fatalf("a second root element <%s>", tok.Name.Local)
				}
				root = tok.Name.Local
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			texts.Write(tok)
			texts.WriteByte('\n')
		}
	}
	if root != "svg" {
		t.Fatalf("root element <%s>, want <svg>", root)
	}
	all := texts.String()
	for _, want := range []string{
		"buffstreams", "bs2.0", "grpc", "gnet", `a <b> & "c"`,
		"raw [bench] (ceiling)", "raw [peers] (ceiling)",
		"2026-11-25, 2026-11-26", "go1.26.8", "2 CPUs",
		"110 B", "64 KiB", "1 KiB", "616K", "error", "n/a",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the SVG's text lacks %q", want)
		}
	}
}

func TestBuild(t *testing.T) {
	d := loadFixtures(t)
	var groups []string
	for _, g := range d.groups {
		groups = append(groups, strings.ReplaceAll(g.label(), "\n", " "))
	}
	if got, want := strings.Join(groups, "|"), "110 B 1 conn|1 KiB 4 conns|64 KiB 1 conn"; got != want {
		t.Errorf("groups %q, want %q", got, want)
	}
	var labels []string
	for _, s := range d.series {
		labels = append(labels, s.label)
	}
	// Ceilings last; names found in both inputs carry the input's name.
	if got, want := strings.Join(labels, "|"), `buffstreams|bs2.0|grpc|gnet|a <b> & "c"|raw [bench]|raw [peers]`; got != want {
		t.Errorf("series %q, want %q", got, want)
	}
	find := func(label string) series {
		for _, s := range d.series {
			if s.label == label {
				return s
			}
		}
		t.Fatalf("no series %q", label)
		return series{}
	}
	bs := find("buffstreams")
	if bs.msgs[0] != 616100 || math.Abs(bs.ratio[0]-616100.0/29372443) > 1e-12 {
		t.Errorf("buffstreams 110 B: %v msg/s, ratio %v", bs.msgs[0], bs.ratio[0])
	}
	if ceil := find("raw [peers]"); ceil.ratio[0] != 1 || !math.IsNaN(ceil.msgs[1]) || !ceil.ceiling {
		t.Errorf("raw [peers]: %+v", ceil)
	}
	if b2 := find("bs2.0"); !b2.failed[1] || !math.IsNaN(b2.msgs[1]) || b2.failed[2] {
		t.Errorf("bs2.0: failed %v, msgs %v", b2.failed, b2.msgs)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.json")
	bad := filepath.Join(dir, "bad.json")
	for name, content := range map[string]string{empty: `{"results": []}`, bad: `{"results": [`} {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{empty, bad, filepath.Join(dir, "missing.json")} {
		if _, err := load([]string{p}); err == nil {
			t.Errorf("%s: no error", filepath.Base(p))
		}
	}
	if _, err := load([]string{filepath.Join(dir, "missing.json")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestSameNames checks that two inputs with one file name stay apart.
func TestSameNames(t *testing.T) {
	ins, err := load([]string{"testdata/peers.json", "testdata/peers.json"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := build(ins, "t")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.series[len(d.series)-1].label; got != "raw [peers#2]" {
		t.Errorf("last series %q, want raw [peers#2]", got)
	}
	if err := writeSVG(io.Discard, d); err != nil {
		t.Fatal(err)
	}
}

func TestValueLabel(t *testing.T) {
	for _, c := range []struct {
		v     float64
		ratio bool
		want  string
	}{
		{29372443, false, "29.4M"}, {616100, false, "616K"}, {31158, false, "31.2K"},
		{999, false, "999"}, {1e9, false, "1G"}, {0.0213, true, "0.0213"}, {1, true, "1"},
	} {
		if got := valueLabel(c.v, c.ratio); got != c.want {
			t.Errorf("valueLabel(%v, %v) = %q, want %q", c.v, c.ratio, got, c.want)
		}
	}
}

// TestWritersGroup checks that results with several writers per connection
// get a group of their own instead of overwriting the one-writer result of
// the same size and connections.
func TestWritersGroup(t *testing.T) {
	rep := report{Ceiling: "raw", Results: []result{
		{Transport: "sync", Size: 110, Conns: 1, MsgsPerSec: 500},
		{Transport: "raw", Size: 110, Conns: 1, MsgsPerSec: 1000},
		{Transport: "sync", Size: 110, Conns: 1, Writers: 8, MsgsPerSec: 300},
		{Transport: "raw", Size: 110, Conns: 1, Writers: 8, MsgsPerSec: 900},
	}}
	d, err := build([]input{{name: "bench", rep: rep}}, "t")
	if err != nil {
		t.Fatal(err)
	}
	var groups []string
	for _, g := range d.groups {
		groups = append(groups, strings.ReplaceAll(g.label(), "\n", " "))
	}
	if got, want := strings.Join(groups, "|"), "110 B 1 conn|110 B 1 conn, 8 writers"; got != want {
		t.Fatalf("groups %q, want %q", got, want)
	}
	s := d.series[0]
	if s.label != "sync" || s.msgs[0] != 500 || s.msgs[1] != 300 || s.ratio[1] != 300.0/900 {
		t.Errorf("sync series %+v", s)
	}
}

// TestProcsGroup checks that results whose server ran in a child process
// get a group of their own, with ratios to the ceiling of that group, and
// that the default title then says so.
func TestProcsGroup(t *testing.T) {
	rep := report{Ceiling: "raw", Results: []result{
		{Transport: "sync", Size: 110, Conns: 1, Writers: 1, Procs: 1, MsgsPerSec: 500},
		{Transport: "raw", Size: 110, Conns: 1, Writers: 1, Procs: 1, MsgsPerSec: 1000},
		{Transport: "sync", Size: 110, Conns: 1, Writers: 1, Procs: 2, MsgsPerSec: 300},
		{Transport: "raw", Size: 110, Conns: 1, Writers: 1, Procs: 2, MsgsPerSec: 600},
	}}
	d, err := build([]input{{name: "bench", rep: rep}}, defaultTitle)
	if err != nil {
		t.Fatal(err)
	}
	var groups []string
	for _, g := range d.groups {
		groups = append(groups, strings.ReplaceAll(g.label(), "\n", " "))
	}
	if got, want := strings.Join(groups, "|"), "110 B 1 conn|110 B 1 conn, 2 procs"; got != want {
		t.Fatalf("groups %q, want %q", got, want)
	}
	s := d.series[0]
	if s.label != "sync" || s.msgs[0] != 500 || s.msgs[1] != 300 || s.ratio[0] != 0.5 || s.ratio[1] != 0.5 {
		t.Errorf("sync series %+v", s)
	}
	if !strings.HasPrefix(d.title, twoProcsTitle+"\n") {
		t.Errorf("title %q, want it to start with %q", d.title, twoProcsTitle)
	}
}
