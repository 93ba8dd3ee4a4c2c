package interop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buffstreams/buffstreams"
)

// cutAt is where the Python peer cuts the first connection of a session:
// not a multiple of its acknowledgement interval, so that the notes
// delivered since the last acknowledgement must not be delivered again.
const cutAt = 5050

// ackPeer returns the command line of python/ack_peer.py, which implements
// acknowledged delivery from docs/wire.md's description and needs only
// Python 3.
func ackPeer(t *testing.T, ctx context.Context, mode string, extra ...string) *exec.Cmd {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		unavailable(t, "no python3 in PATH")
	}
	script, err := filepath.Abs(filepath.Join("python", "ack_peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{script, mode, "--count", strconv.Itoa(count), "--cut-at", strconv.Itoa(cutAt)}, extra...)
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// TestPythonAckSender runs the Python sender against a TCPListener with
// acknowledged delivery: it resets its first connection mid-stream and
// resumes, and the listener's callback must see every note exactly once.
func TestPythonAckSender(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := newReceiver(count)
	l, err := buffstreams.ListenTCP(buffstreams.TCPListenerConfig{
		Address:        "127.0.0.1:0",
		Framing:        buffstreams.Uvarint,
		MaxMessageSize: maxMessageSize,
		Callback:       r.callback,
		Acks:           &buffstreams.AckConfig{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	cmd := ackPeer(t, ctx, "sender", "--port", strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	l.Close()
	n, err := r.result()
	switch {
	case runErr != nil:
		t.Fatalf("python sender: %v\nstderr: %s\nthe listener had %d notes (error: %v)", runErr, stderr.Bytes(), n, err)
	case err != nil:
		t.Fatal(err)
	case n != count:
		t.Fatalf("%d notes delivered, want %d", n, count)
	}
	if got, want := lastLine(stdout.Bytes()), fmt.Sprintf("acked %d", count); got != want {
		t.Fatalf("the sender's last line is %q, want %q", got, want)
	}
	if st := l.Stats(); st.Accepted != 2 {
		t.Fatalf("%d connections, want 2 (one cut)", st.Accepted)
	}
}

// TestPythonAckListener runs a TCPConn with acknowledged delivery against
// the Python listener, which resets the first connection after delivering
// notes it has not acknowledged: the TCPConn must resume after them, and
// have every note acknowledged.
func TestPythonAckListener(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	port, fail, finish := startServer(t, ackPeer(t, ctx, "listener"), cancel, "python listener")
	var failed atomic.Int64
	c, err := buffstreams.DialTCP(&buffstreams.TCPConnConfig{
		Address:        net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Framing:        buffstreams.Uvarint,
		MaxMessageSize: maxMessageSize,
		Retry:          &buffstreams.RetryPolicy{InitialBackoff: time.Millisecond, MaxWait: 10 * time.Second},
		Acks:           &buffstreams.AckConfig{},
		OnWriteError:   func([]byte, error) { failed.Add(1) },
	})
	if err != nil {
		fail("dial: %v", err)
	}
	if err := writeNotes(c, count); err != nil {
		c.Close()
		fail("%v", err)
	}
	if err := c.Sync(ctx); err != nil {
		c.Close()
		fail("Sync: %v", err)
	}
	st := c.Stats()
	c.Close()
	if st.MessagesAcked != count || failed.Load() != 0 || st.Reconnects != 1 {
		fail("acked %d, failed %d, reconnects %d; want %d, 0, 1", st.MessagesAcked, failed.Load(), st.Reconnects, count)
	}
	last, err := finish()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("received %d", count); last != want {
		t.Fatalf("the listener's last line is %q, want %q", last, want)
	}
}
