package buffstreams

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection, closed at the
// end of the test.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestRecordWriterHeartbeats checks that an idle writer sends heartbeats
// carrying the last position written, one interval apart, that a record
// written by the read loop puts the next heartbeat off by an interval, and
// that nothing is armed once stop returns.
func TestRecordWriterHeartbeats(t *testing.T) {
	client, server := tcpPair(t)
	const interval = 50 * time.Millisecond
	w := newRecordWriter(server, time.Minute, interval, 7)
	defer w.stopHeartbeats()
	br := bufio.NewReader(client)
	rec := new(recordBuf)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	next := func() (byte, uint64, time.Time) {
		t.Helper()
		typ, seq, _, err := readRecord(br, rec)
		if err != nil {
			t.Fatal(err)
		}
		return typ, seq, time.Now()
	}
	start := time.Now()
	var last time.Time
	for i := range 3 {
		typ, seq, at := next()
		if typ != typeHeartbeat || seq != 7 {
			t.Fatalf("record %d: type %#x, seq %d; want a heartbeat of 7", i, typ, seq)
		}
		last = at
	}
	if d := last.Sub(start); d < 3*interval*9/10 {
		t.Fatalf("three heartbeats in %v; want one per %v", d, interval)
	}
	// Half an interval after a heartbeat, the read loop writes an ack:
	// the next heartbeat is due an interval after that, not after the last
	// heartbeat.
	time.Sleep(interval / 2)
	wrote := time.Now()
	if err := w.writeRecords(appendRecord(nil, typeAck, 9), 9); err != nil {
		t.Fatal(err)
	}
	if typ, seq, _ := next(); typ != typeAck || seq != 9 {
		t.Fatalf("type %#x, seq %d; want the ack of 9", typ, seq)
	}
	typ, seq, at := next()
	if typ != typeHeartbeat || seq != 9 {
		t.Fatalf("type %#x, seq %d; want a heartbeat of 9", typ, seq)
	}
	if d := at.Sub(wrote); d < interval*9/10 {
		t.Fatalf("a heartbeat %v after the ack; want an interval (%v) of silence first", d, interval)
	}
	w.stopHeartbeats()
	w.mu.Lock()
	armed := w.timer.Stop()
	w.mu.Unlock()
	if armed || !w.stopped.Load() {
		t.Fatal("the heartbeat timer is still armed after stop")
	}
	w.stopHeartbeats() // a second stop does nothing
}

// TestRecordWriterStopUnblocks makes a heartbeat block in its write, on a
// socket whose peer reads nothing, and checks that stop makes it give up
// at once rather than wait for the write timeout.
func TestRecordWriterStopUnblocks(t *testing.T) {
	client, server := tcpPair(t)
	client.SetReadBuffer(4096)
	server.SetWriteBuffer(4096)
	// Fill the socket until a write makes no progress.
	chunk := make([]byte, 64<<10)
	for i := 0; ; i++ {
		server.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := server.Write(chunk); errors.Is(err, os.ErrDeadlineExceeded) {
			break
		} else if err != nil || i == 10000 {
			t.Fatalf("filling the socket: %v after %d writes", err, i)
		}
	}
	w := newRecordWriter(server, time.Minute, time.Millisecond, 0)
	// The heartbeat holds mu while its write blocks.
	deadline := time.Now().Add(10 * time.Second)
	for held := 0; held < 5; {
		if w.mu.TryLock() {
			w.mu.Unlock()
			held = 0
		} else {
			held++
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat blocked in its write")
		}
		time.Sleep(2 * time.Millisecond)
	}
	start := time.Now()
	w.stopHeartbeats()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop took %v with a heartbeat blocked; want it to cut the write short", d)
	}
}
