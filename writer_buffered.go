package buffstreams

// DefaultBufferedWriterSize is the buffer size of a BufferedWriter made
// with a size of zero or less.
const DefaultBufferedWriterSize = 64 << 10

// A BufferedWriter frames the messages of one goroutine into a buffer of
// its own and hands them to its connection a buffer at a time, as a
// bufio.Writer does for an io.Writer. Its Write takes no lock and makes no
// atomic operation; the connection's work (its lock, the system call, the
// accounting) is paid once per buffer rather than once per message.
//
// A BufferedWriter is not safe for concurrent use: give each goroutine its
// own. The connection stays safe for concurrent use, and any number of
// BufferedWriters and direct Writes may share it. The frames of one
// BufferedWriter reach the stream in the order it wrote them, a buffer at
// a time; the frames of other writers may come between two of its
// buffers, never inside a frame.
//
// A message stays in the buffer until Flush, or a Write that finds the
// buffer full, hands the buffer to the connection; until then it is
// neither sent nor counted in the connection's stats, and nothing sends it
// if the BufferedWriter is dropped: call Flush when a burst ends. What
// becomes of each handed message is counted and reported as for Write
// (see Accounting in the package documentation).
type BufferedWriter struct {
	c     *TCPConn
	size  int
	tlen  int
	buf   []byte // the frames not yet handed over
	spans []span // where each frame of buf lies
}

// NewBufferedWriter returns a BufferedWriter for c with a buffer of size
// bytes (DefaultBufferedWriterSize if size is zero or less). A message
// whose frame does not fit in an empty buffer is not copied: Write hands
// it to the connection at once, after what is buffered, as by
// TCPConn.Write.
func (c *TCPConn) NewBufferedWriter(size int) *BufferedWriter {
	if size <= 0 {
		size = DefaultBufferedWriterSize
	}
	return &BufferedWriter{c: c, size: size, tlen: len(c.wire.framing.trailer())}
}

// Write adds data to the buffer as one message and returns len(data). A
// message the connection would refuse (see TCPConn.Write) is refused here,
// with the same error, and passed to OnWriteError. When the buffer has no
// room for the frame, Write first flushes it; if that flush fails, its
// messages are reported as Flush reports them, and Write also refuses data
// with the flush's error, so that on error Write returns 0 and data was not
// buffered.
func (w *BufferedWriter) Write(data []byte) (int, error) {
	c := w.c
	if err := c.admit(data); err != nil {
		c.failed(data, err)
		return 0, err
	}
	n := len(w.buf)
	need := maxHeaderLen + len(data) + w.tlen
	if n+need > w.size {
		if n > 0 {
			if err := w.Flush(); err != nil {
				c.failed(data, err)
				return 0, err
			}
			n = 0
		}
		if need > w.size {
			return c.Write(data)
		}
	}
	if w.buf == nil {
		w.buf = make([]byte, 0, w.size)
	}
	f := c.wire.framing
	b := w.buf[:n+maxHeaderLen]
	h := f.putHeader(b[n:], len(data))
	b = append(b[:n+h], data...)
	if w.tlen > 0 {
		b = append(b, f.trailer()...)
	}
	w.buf = b
	w.spans = append(w.spans, span{n + h, len(b)})
	return len(data), nil
}

// Flush hands every buffered message to the connection, as one WriteBatch
// of them would, and empties the buffer. It returns when the connection's
// write mode lets WriteBatch return: in the default mode and in batching
// mode once the kernel has every frame or the write has failed (the
// buffer is written as a large message is, without copying it into the
// connection's write buffer), with Acks once the messages are in the
// replay window (in batching mode) or in the kernel (in the default mode).
// Messages that fail are passed to OnWriteError and counted in
// ConnStats.WriteErrors, and Flush returns the first error met. Once the
// Retry policy has given up, Flush fails every buffered message at once
// with its error (see TCPConn.Err).
func (w *BufferedWriter) Flush() error {
	if len(w.spans) == 0 {
		return nil
	}
	c := w.c
	var err error
	if err = c.terminal(); err != nil {
		accountFrames(c, w.buf, w.spans, 0, err)
	} else {
		_, err = c.eng.writeRun(w.buf, w.spans)
	}
	w.buf, w.spans = w.buf[:0], w.spans[:0]
	return err
}

// Buffered returns how many messages are in the buffer, not yet handed to
// the connection.
func (w *BufferedWriter) Buffered() int { return len(w.spans) }

// accountFrames counts the first k frames of run, at spans, as written and
// passes the others to TCPConn.failed with err.
func accountFrames(c *TCPConn, run []byte, spans []span, k int, err error) {
	t := len(c.wire.framing.trailer())
	var nb uint64
	for _, s := range spans[:k] {
		nb += uint64(s.end - t - s.at)
	}
	if k > 0 {
		c.wrote(k, nb)
	}
	for _, s := range spans[k:] {
		c.failed(run[s.at:s.end-t], err)
	}
}
