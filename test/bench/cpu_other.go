//go:build !linux

package main

import "time"

// cpuMeasured reports whether cpuTime measures anything on this system: the
// CPU columns show "-" where it does not.
const cpuMeasured = false

// cpuTime returns 0: CPU time is measured on Linux only.
func cpuTime() time.Duration { return 0 }
