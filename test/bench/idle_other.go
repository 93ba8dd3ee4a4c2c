//go:build !linux

package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
)

// runIdle skips the section: it reads the child's memory from /proc.
func runIdle(_ context.Context, n int) idleResult {
	return idleResult{Conns: n, Skipped: "needs Linux (/proc/<pid>/status), this is " + runtime.GOOS}
}

func runIdleChild() int {
	fmt.Fprintln(os.Stderr, "bench: the idle-memory child runs on Linux only")
	return 2
}
