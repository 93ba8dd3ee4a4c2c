//go:build !linux

package main

// segsMeasured reports whether hostSegs measures anything on this system:
// the segments column shows "-" where it does not.
const segsMeasured = false

// hostSegs returns false: segments are counted on Linux only.
func hostSegs() (uint64, bool) { return 0, false }

// loadAvg returns false: the load average is read on Linux only.
func loadAvg() (float64, bool) { return 0, false }
