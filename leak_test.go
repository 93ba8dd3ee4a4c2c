package buffstreams_test

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// pkgFrame marks a stack frame of the package itself. The tests' own
// functions are in package buffstreams_test, which this does not match.
const pkgFrame = "github.com/buffstreams/buffstreams."

// pkgGoroutines returns the stacks of the goroutines that have a function of
// the package in their stack (running it, or created by it), by goroutine
// header ("goroutine 42 [IO wait]:" without the state).
func pkgGoroutines() map[string]string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, pkgFrame) {
			continue
		}
		id, _, _ := strings.Cut(g, " [")
		out[id] = g
	}
	return out
}

// leakCheck makes t fail if, once the test and its other cleanups are done,
// a goroutine with a function of the package in its stack is still running
// that was not running when leakCheck was called. Call it first in a test,
// so that its cleanup runs last, after the listeners and connections are
// closed. It waits up to 10 s for goroutines to finish.
func leakCheck(t testing.TB) {
	t.Helper()
	before := pkgGoroutines()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			var leaked []string
			for id, g := range pkgGoroutines() {
				if _, ok := before[id]; !ok {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines of the package outlived the test; the first:\n%s",
					len(leaked), strings.Join(leaked[:min(len(leaked), 3)], "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
