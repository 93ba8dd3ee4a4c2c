// Command check runs the project's checks the way CI does, and says as it
// goes what passed, what failed and what was skipped, and why:
//
//	go run ./test/check                 # go vet ./..., then go test -race ./...
//	go run ./test/check -short          # leaves out the slowest tests
//	go run ./test/check -run TestCork   # passes -run to go test
//
// It prints a line for each package as its tests finish, the output of
// every failed test, then every skipped test with the reason it gave (the
// interoperability tests skip without python3-protobuf, the network
// namespace tests without root and iproute2), and ends with the totals, as
// "N passed, N failed, N skipped". It exits with go vet's or go test's
// status.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// event is one line of go test -json (see go doc test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// result is what is known of one test.
type result struct {
	action string
	output []string
}

func main() {
	short := flag.Bool("short", false, "pass -short to go test")
	run := flag.String("run", "", "pass -run to go test")
	race := flag.Bool("race", true, "pass -race to go test")
	flag.Parse()

	fmt.Println("--- go vet ./...")
	vet := exec.Command("go", "vet", "./...")
	vet.Stdout, vet.Stderr = os.Stdout, os.Stderr
	if err := vet.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "go vet failed:", err)
		os.Exit(1)
	}

	args := []string{"test", "-json"}
	if *race {
		args = append(args, "-race")
	}
	if *short {
		args = append(args, "-short")
	}
	if *run != "" {
		args = append(args, "-run", *run)
	}
	args = append(args, "./...")
	fmt.Println("--- go", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tests := map[string]*result{} // by package and test name
	counts := map[string]map[string]int{}
	var order []string
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Println(sc.Text()) // a build error, say
			continue
		}
		if e.Test == "" {
			switch e.Action {
			case "pass", "fail", "skip":
				c := counts[e.Package]
				verdict := e.Action
				switch {
				case verdict == "pass":
					verdict = "ok"
				case verdict == "skip" && len(c) == 0:
					verdict = "none" // a package without tests
				}
				fmt.Printf("%-4s %s (%.1fs; %d passed, %d failed, %d skipped)\n",
					verdict, e.Package, e.Elapsed, c["pass"], c["fail"], c["skip"])
			case "output":
				if strings.HasPrefix(e.Output, "FAIL") || strings.Contains(e.Output, "panic:") || strings.Contains(e.Output, "[build failed]") {
					fmt.Print(e.Output)
				}
			}
			continue
		}
		key := e.Package + " " + e.Test
		r := tests[key]
		if r == nil {
			r = &result{}
			tests[key] = r
			order = append(order, key)
		}
		switch e.Action {
		case "output":
			r.output = append(r.output, e.Output)
		case "pass", "fail", "skip":
			r.action = e.Action
			if counts[e.Package] == nil {
				counts[e.Package] = map[string]int{}
			}
			if !strings.Contains(e.Test, "/") { // count top-level tests only
				counts[e.Package][e.Action]++
			}
		}
	}
	err = cmd.Wait()

	var passed, failed, skipped int
	var skips []string
	for _, key := range order {
		r := tests[key]
		top := !strings.Contains(key[strings.Index(key, " ")+1:], "/")
		switch r.action {
		case "pass":
			if top {
				passed++
			}
		case "fail":
			if top {
				failed++
			}
			fmt.Printf("\nFAIL %s\n%s", key, strings.Join(r.output, ""))
		case "skip":
			if top {
				skipped++
			}
			skips = append(skips, fmt.Sprintf("%s: %s", key, reason(r.output)))
		}
	}
	if len(skips) > 0 {
		sort.Strings(skips)
		fmt.Printf("\nskipped (%d):\n", len(skips))
		for _, s := range skips {
			fmt.Println("  " + s)
		}
	}
	fmt.Printf("\nin %v:\n%d passed, %d failed, %d skipped\n", time.Since(start).Round(time.Second), passed, failed, skipped)
	if err != nil {
		os.Exit(1)
	}
}

// reason returns the message a skipped test gave, from its output.
func reason(output []string) string {
	var lines []string
	for _, l := range output {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		if i := strings.Index(l, ": "); i > 0 && strings.Contains(l[:i], ".go:") {
			l = l[i+2:]
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return "(no reason given)"
	}
	return strings.Join(lines, " ")
}
