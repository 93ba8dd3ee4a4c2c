package main

import (
	"syscall"
	"time"
)

// cpuMeasured reports whether cpuTime measures anything on this system.
const cpuMeasured = true

// cpuTime returns the user and system CPU time this process has used so
// far, all its threads together (getrusage, RUSAGE_SELF).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
