// Command chart draws the JSON reports of test/bench and test/peers as a
// grouped bar chart in SVG:
//
//	cd test/peers && go run ./chart -o FILE.svg in1.json [in2.json ...]
//
// for example, from the repository root:
//
//	go run ./test/bench -json > bench.json
//	(cd test/peers && go run . -json > ../../peers.json)
//	(cd test/peers && go run ./chart -o ../../perf.svg ../../bench.json ../../peers.json)
//
// Flags:
//
//	-o FILE    the SVG file to write (required; "-" writes to stdout)
//	-title T   the chart's first title line (default "Messages over
//	           127.0.0.1, one process", or "..., in one process and across
//	           two" when some results had their server in a child process)
//
// Every input is a report as test/bench -json writes it: date, go_version,
// goos, goarch, num_cpu, ceiling (the name of its ceiling transport), and
// results, each with transport, size, conns, writers and procs (both
// optional, 1 when absent), msgs_per_sec (test/bench's median when it took
// several samples) and error. Other fields, such as test/bench's samples
// and test/peers' latency array, are ignored.
//
// The chart has one group of bars per workload (payload size × client
// connections, with the writers per connection and the processes when
// above 1, in order of size, then connections, writers and processes) and
// one bar per transport, in two panels: messages per second on a log
// scale, each bar labelled with its value, and below it each bar divided by
// the ceiling measured in the same report for the same workload (and
// processes), also on a log scale, which is the comparison that survives a
// change of machine or of load. A
// legend on the right names the transports; the title gives the dates, Go
// versions, platforms and CPU counts of the inputs.
//
// Transport names are free strings. A name that occurs in more than one input
// (such as "raw", the ceiling of both programs) gets the input's file name
// without its extension in brackets, so that every bar is one measurement:
// "raw [bench]", "raw [peers]". Ceilings are drawn in grey, after the other
// transports. A workload that a transport lacks, or where it failed, is
// marked "n/a" or "error" instead of a bar.
//
// chart exits 1 if an input cannot be read or holds no results, and 2 on a
// wrong command line.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	out := flag.String("o", "", `the SVG file to write ("-": stdout)`)
	title := flag.String("title", defaultTitle, "the chart's first title line")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: chart -o FILE.svg [-title T] report.json [report.json ...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ins, err := load(flag.Args())
	if err != nil {
		fatalf("%v", err)
	}
	d, err := build(ins, *title)
	if err != nil {
		fatalf("%v", err)
	}
	if *out == "-" {
		if err := writeSVG(os.Stdout, d); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if err := writeFile(*out, d); err != nil {
		fatalf("%v", err)
	}
}

func writeFile(name string, d *chartData) (err error) {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return writeSVG(f, d)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "chart: "+format+"\n", args...)
	os.Exit(1)
}

// writeSVG renders d and writes it to w as SVG.
func writeSVG(w io.Writer, d *chartData) error {
	c := newSVGCanvas(d)
	render(c, d)
	_, err := c.WriteTo(w)
	return err
}
