package interop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
// Then it stays idle for a second with a heartbeat timeout of 300 ms, and
// must get the listener's heartbeats, at most one per 100 ms.
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
	cmd := ackPeer(t, ctx, "sender", "--port", strconv.Itoa(l.Addr().(*net.TCPAddr).Port), "--heartbeat", "300", "--idle", "1")
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
	var beats int
	if _, err := fmt.Sscanf(strings.TrimSpace(stdout.String()), "heartbeats %d", &beats); err != nil || beats == 0 {
		t.Fatalf("the sender printed %q; want heartbeats N, N > 0, first", stdout.Bytes())
	}
	if st := l.Stats(); st.Accepted != 2 {
		t.Fatalf("%d connections, want 2 (one cut)", st.Accepted)
	}
}

// TestPythonAckListener runs a TCPConn with acknowledged delivery against
// the Python listener, which resets the first connection after delivering
// notes it has not acknowledged: the TCPConn must resume after them, and
// have every note acknowledged. Then the TCPConn stays idle for more than
// three times its heartbeat timeout, and the Python listener's heartbeats
// must keep it from taking the listener for gone.
func TestPythonAckListener(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	port, fail, finish := startServer(t, ackPeer(t, ctx, "listener"), cancel, "python listener")
	const heartbeat = 300 * time.Millisecond
	var failed atomic.Int64
	c, err := buffstreams.DialTCP(&buffstreams.TCPConnConfig{
		Address:        net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Framing:        buffstreams.Uvarint,
		MaxMessageSize: maxMessageSize,
		Retry:          &buffstreams.RetryPolicy{InitialBackoff: time.Millisecond, MaxWait: 10 * time.Second},
		Acks:           &buffstreams.AckConfig{HeartbeatTimeout: heartbeat},
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
	// Idle: only the listener's heartbeats show that it is there. The
	// pause is the window observed, not a wait for something to happen.
	time.Sleep(4 * heartbeat)
	st := c.Stats()
	c.Close()
	if st.MessagesAcked != count || failed.Load() != 0 || st.Reconnects != 1 || st.SilentPeers != 0 {
		fail("acked %d, failed %d, reconnects %d, silent peers %d; want %d, 0, 1, 0", st.MessagesAcked, failed.Load(), st.Reconnects, st.SilentPeers, count)
	}
	last, err := finish()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("received %d", count); last != want {
		t.Fatalf("the listener's last line is %q, want %q", last, want)
	}
}
