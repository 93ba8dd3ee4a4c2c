package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// segsMeasured reports whether hostSegs measures anything on this system.
const segsMeasured = true

// hostSegs returns the TCP segments this host has sent so far, all sockets
// together (TcpOutSegs in /proc/net/snmp, as nstat shows it), and whether
// it could read them.
func hostSegs() (uint64, bool) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, false
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "OutSegs" && i < len(f) {
				v, err := strconv.ParseUint(f[i], 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}

// loadAvg returns the 1-minute load average, and whether it could read it.
func loadAvg() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return v, err == nil
}
