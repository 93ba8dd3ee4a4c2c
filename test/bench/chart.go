package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// rootModule is the module path of the repository root.
const rootModule = "github.com/buffstreams/buffstreams"

// findPeers returns the test/peers directory of the repository, which holds
// the chart program (a module of its own). The root is the main module of
// the working directory (go env GOMOD), or else the nearest directory above
// it whose go.mod declares rootModule.
func findPeers() (string, error) {
	var roots []string
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if m := strings.TrimSpace(string(out)); m != "" && m != os.DevNull {
			roots = append(roots, filepath.Dir(m))
		}
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			roots = append(roots, d)
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, r := range roots {
		if modulePath(filepath.Join(r, "go.mod")) != rootModule {
			continue
		}
		peers := filepath.Join(r, "test", "peers")
		if _, err := os.Stat(filepath.Join(peers, "chart")); err != nil {
			return "", fmt.Errorf("the chart program is not in this tree: %s is missing (it belongs to the nested module test/peers)", filepath.Join(peers, "chart"))
		}
		return peers, nil
	}
	return "", fmt.Errorf("cannot find the repository root (a go.mod of module %s) from the working directory, so not test/peers/chart either", rootModule)
}

// modulePath returns the module path declared in the go.mod file at path,
// or "".
func modulePath(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

func absPath(p string) (string, error) {
	if p == "-" {
		return "", errors.New(`writing the chart to stdout is not supported; give a file name`)
	}
	return filepath.Abs(p)
}

// drawChart writes the throughput results to a JSON file and runs
// test/peers' chart program on it. The chart groups bars by size and
// connections only, so results with several writers per connection are
// drawn in their one-writer group under the name "TRANSPORT xW", and the
// ceiling's run with several writers is left out (the group has its own).
func drawChart(rep report, opt options) error {
	cr := rep
	cr.Results = nil
	cr.Latency = nil
	cr.Idle = nil
	for _, r := range rep.Results {
		if r.Writers > 1 {
			if r.Transport == ceilingName {
				continue
			}
			r.Transport = fmt.Sprintf("%s x%d", r.Transport, r.Writers)
		}
		cr.Results = append(cr.Results, r)
	}
	if len(cr.Results) == 0 {
		return errors.New("no throughput results to draw")
	}
	dir, err := os.MkdirTemp("", "buffstreams-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "bench.json") // the chart names its inputs after their files
	b, err := json.MarshalIndent(cr, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(in, b, 0o644); err != nil {
		return err
	}
	cmd := exec.Command("go", "run", "./chart", "-o", opt.svg, in)
	cmd.Dir = opt.peersDir
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go run ./chart in %s: %w", opt.peersDir, err)
	}
	return nil
}
