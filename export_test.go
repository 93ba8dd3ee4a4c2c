package buffstreams

// Access for the external tests (bench_test.go) to the framings' unexported
// codec, which the read and write paths call once per frame.

// MaxHeaderLen is the room a header needs at the start of PutHeader's dst.
const MaxHeaderLen = maxHeaderLen

// PutHeader writes f's header for a payload of n bytes at the start of dst.
func PutHeader(f Framing, dst []byte, n int) int { return f.putHeader(dst, n) }

// Split finds the frame of f at the start of p.
func Split(f Framing, p []byte, limit int) (start, n, size int, err error) {
	return f.split(p, limit)
}

// SetShutHook makes f run just before the connection closes a socket, and
// returns a function that removes it.
func SetShutHook(f func()) (restore func()) {
	shutHook.Store(&f)
	return func() { shutHook.Store(nil) }
}

// WatchDone returns a channel closed once the goroutine that watches c's
// socket for its peer's end has returned; nil if none watches it.
func WatchDone(c *TCPConn) <-chan struct{} {
	if w := c.watch.Load(); w != nil {
		return w.done
	}
	return nil
}
