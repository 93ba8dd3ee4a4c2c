#!/usr/bin/env python3
"""Python peer of acknowledged delivery (test/interop/ack_test.go).

It speaks the protocol as docs/wire.md draws it, under "The
acknowledgement protocol", in the uvarint framing with MaxMessageSize
65536, and sends or expects the notes of peer.py, encoded by hand in
protobuf's wire format so that it needs nothing but Python.

    ack_peer.py sender --port N --count 10000 --cut-at 5000 [--heartbeat 5000 --idle 0]
    ack_peer.py listener --count 10000 --cut-at 5000

The sender opens a session with a buffstreams TCPListener, writes notes
0..cut-at-1, waits for some acknowledgements, then resets the connection;
it dials again, says hello with the same session, resumes after the last
note the listener delivered, and waits until every note is acknowledged.
Its hello asks for heartbeats after --heartbeat milliseconds of silence;
it takes them as the "nothing new" they are. With --idle, it then stays
connected for that many seconds, sending nothing, and checks that only
heartbeats arrive, each repeating the last position acknowledged, at most
one per interval (a third of --heartbeat); it prints "heartbeats N". It
prints "acked N" last.

The listener prints "port N", serves one session: it acknowledges every 100
notes, resets the first connection once cut-at notes are delivered (with
the last ones unacknowledged), answers the second hello with its position,
and checks that it received every note exactly once, in order. Whenever it
has sent nothing for a third of the heartbeat timeout the hello asked for,
a thread of its own sends a heartbeat. It prints "received N" when the
sender has closed.
"""

import argparse
import os
import socket
import struct
import sys
import threading
import time

from peer import MAX_MESSAGE_SIZE, _VarintBytes, note_comment, note_date, read_frame

MAGIC = b"\xff\xff\xff\xffBSAK"
VERSION = 2
HELLO, ACCEPT, REFUSE = 0x01, 0x02, 0x03
ACK, REJECTED, GOAWAY, HEARTBEAT = 0x10, 0x11, 0x12, 0x13
FRAMING = b"uvarint"
ACK_EVERY = 100


def encode_note(i):
    """Note i in protobuf's wire format: fields 1 (name), 2 (date, int64)
    and 3 (comment), each left out when it has its default value."""
    name = ("note-%d" % i).encode()
    out = bytearray(b"\x0a" + _VarintBytes(len(name)) + name)
    date = note_date(i)
    if date != 0:
        out += b"\x10" + _VarintBytes(date & ((1 << 64) - 1))
    comment = note_comment(i).encode()
    if comment:
        out += b"\x1a" + _VarintBytes(len(comment)) + comment
    return bytes(out)


def read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        raise EOFError("stream ended after %d of %d bytes" % (len(b), n))
    return b


def reset(sock, f):
    """Closes sock, read through f, with a reset, as a failing network
    does. The socket stays open while its file object is."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    f.close()
    sock.close()


# The sender.


def hello(session, first, heartbeat_ms):
    return (MAGIC + bytes([VERSION, HELLO]) + session
            + struct.pack(">QIIH", first, MAX_MESSAGE_SIZE, heartbeat_ms, len(FRAMING)) + FRAMING)


def read_answer(f):
    """Returns the last message the listener delivered, or raises."""
    head = read_exact(f, 10)
    if head[:8] != MAGIC or head[8] != VERSION:
        raise ValueError("answer %r is not of protocol version %d" % (head, VERSION))
    if head[9] == ACCEPT:
        return struct.unpack(">Q", read_exact(f, 8))[0]
    if head[9] == REFUSE:
        reason, m = struct.unpack(">BH", read_exact(f, 3))
        raise ValueError("refused (reason %d): %s" % (reason, read_exact(f, m).decode()))
    raise ValueError("answer of type %#x" % head[9])


def read_records(f, acked, upto):
    """Reads records until the acknowledgement reaches upto, and returns it.
    A heartbeat says nothing new: it repeats the last position acknowledged."""
    while acked < upto:
        typ = read_exact(f, 1)[0]
        (seq,) = struct.unpack(">Q", read_exact(f, 8))
        if typ == REJECTED:
            (m,) = struct.unpack(">H", read_exact(f, 2))
            raise ValueError("note %d rejected: %s" % (seq - 1, read_exact(f, m).decode()))
        if typ == HEARTBEAT:
            if seq != acked:
                raise ValueError("heartbeat of %d after the acknowledgement of %d" % (seq, acked))
            continue
        if typ not in (ACK, GOAWAY):
            raise ValueError("record of type %#x" % typ)
        if seq < acked:
            raise ValueError("acknowledgement went back from %d to %d" % (acked, seq))
        acked = seq
        if typ == GOAWAY:
            break
    return acked


def read_idle(sock, f, acked, seconds, heartbeat_ms):
    """Sends nothing for seconds and reads what arrives meanwhile: only
    heartbeats repeating acked, at most one per interval. Returns their
    count."""
    interval = heartbeat_ms / 3000.0
    start = time.monotonic()
    end = start + seconds
    beats = 0
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            typ = read_exact(f, 1)[0]
        except socket.timeout:  # f cannot be read again: the connection is done
            break
        sock.settimeout(5)
        (seq,) = struct.unpack(">Q", read_exact(f, 8))
        if typ != HEARTBEAT or seq != acked:
            raise ValueError("record of type %#x with %d on an idle connection acknowledged up to %d" % (typ, seq, acked))
        beats += 1
    elapsed = time.monotonic() - start
    if beats == 0 or beats > elapsed / interval + 1:
        raise ValueError("%d heartbeats in %.2f s idle, with an interval of %.3f s" % (beats, elapsed, interval))
    return beats


def session_connection(args, session, first):
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    sock.sendall(hello(session, first, args.heartbeat))
    f = sock.makefile("rb")
    return sock, f, read_answer(f)


def run_sender(args):
    session = os.urandom(16)
    frames = [_VarintBytes(len(p)) + p for p in (encode_note(i) for i in range(args.count))]
    acked = 0  # notes 1..acked (numbered from 1) are acknowledged

    # First connection: write up to the cut, see some acknowledged, reset.
    sock, f, delivered = session_connection(args, session, acked + 1)
    acked = max(acked, delivered)
    sock.sendall(b"".join(frames[acked:args.cut_at]))
    acked = read_records(f, acked, args.cut_at // 2)
    reset(sock, f)

    # Second connection: resume after what the listener delivered.
    sock, f, delivered = session_connection(args, session, acked + 1)
    if delivered < acked:
        raise ValueError("the listener delivered %d, fewer than the %d acknowledged" % (delivered, acked))
    acked = delivered
    sock.sendall(b"".join(frames[acked:]))
    acked = read_records(f, acked, args.count)
    if args.idle > 0:
        print("heartbeats %d" % read_idle(sock, f, acked, args.idle, args.heartbeat), flush=True)
    f.close()
    sock.close()
    print("acked %d" % acked, flush=True)
    return 0


# The listener.


def read_hello(f):
    """Returns the session, the first note the sender holds and its
    heartbeat timeout in milliseconds."""
    head = read_exact(f, 10)
    if head[:8] != MAGIC or head[8] != VERSION or head[9] != HELLO:
        raise ValueError("hello %r is not a version %d hello" % (head, VERSION))
    head += read_exact(f, 34)
    session = head[10:26]
    first, max_size, heartbeat_ms, n = struct.unpack(">QIIH", head[26:44])
    framing = read_exact(f, n)
    if framing != FRAMING or max_size != MAX_MESSAGE_SIZE:
        raise ValueError("hello for %r, max %d" % (framing, max_size))
    if heartbeat_ms != 0 and heartbeat_ms < 100:
        raise ValueError("heartbeat timeout of %d ms" % heartbeat_ms)
    return session, first, heartbeat_ms


class Records:
    """Writes the listener's records on conn: acknowledgements from the
    read loop, and a heartbeat from a thread of its own whenever nothing
    was written for interval seconds (none if interval is 0). The lock
    keeps the two from interleaving."""

    def __init__(self, conn, interval, acked):
        self.conn, self.interval = conn, interval
        self.lock = threading.Lock()
        self.acked = acked  # the last position sent
        self.last = time.monotonic()
        self.done = threading.Event()
        self.thread = None
        if interval > 0:
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()

    def ack(self, delivered):
        with self.lock:
            self.conn.sendall(struct.pack(">BQ", ACK, delivered))
            self.acked, self.last = delivered, time.monotonic()

    def _beat(self):
        wait = self.interval
        while not self.done.wait(wait):
            with self.lock:
                wait = self.last + self.interval - time.monotonic()
                if wait > 0:
                    continue
                try:
                    self.conn.sendall(struct.pack(">BQ", HEARTBEAT, self.acked))
                except OSError:
                    return  # the read loop meets the failure too
                self.last, wait = time.monotonic(), self.interval

    def stop(self):
        self.done.set()
        if self.thread is not None:
            self.thread.join()


def run_listener(args):
    with socket.create_server(("127.0.0.1", 0)) as ln:
        ln.settimeout(args.timeout)
        print("port %d" % ln.getsockname()[1], flush=True)
        delivered = 0  # notes 1..delivered went to the "callback"
        session = None
        for connection in (1, 2):
            conn, _ = ln.accept()
            conn.settimeout(args.timeout)
            f = conn.makefile("rb")
            sid, first, heartbeat_ms = read_hello(f)
            if session is not None and sid != session:
                raise ValueError("the second connection has another session")
            session = sid
            delivered = max(delivered, first - 1)
            conn.sendall(MAGIC + bytes([VERSION, ACCEPT]) + struct.pack(">Q", delivered))
            records = Records(conn, heartbeat_ms / 3000.0, delivered)
            try:
                while True:
                    payload = read_frame("uvarint", f)
                    if payload is None:
                        records.stop()
                        f.close()
                        conn.close()
                        break
                    if delivered >= args.count:
                        raise ValueError("note %d: more than the %d expected" % (delivered, args.count))
                    if payload != encode_note(delivered):
                        raise ValueError("note %d: got %r..., want %r..." % (delivered, payload[:40], encode_note(delivered)[:40]))
                    delivered += 1
                    if connection == 1 and delivered == args.cut_at:
                        records.stop()
                        reset(conn, f)  # the notes since the last acknowledgement are not acknowledged
                        break
                    if delivered % ACK_EVERY == 0 or delivered == args.count:
                        records.ack(delivered)
            finally:
                records.stop()
    if delivered != args.count:
        raise ValueError("received %d notes, want %d" % (delivered, args.count))
    print("received %d" % delivered, flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["sender", "listener"])
    p.add_argument("--count", type=int, default=10000, help="notes to send or expect")
    p.add_argument("--cut-at", type=int, default=5000, help="notes after which the first connection is reset")
    p.add_argument("--port", type=int, help="the buffstreams listener's port on 127.0.0.1 (sender)")
    p.add_argument("--timeout", type=float, default=60, help="seconds any socket operation may take")
    p.add_argument("--heartbeat", type=int, default=5000, help="the heartbeat timeout the sender's hello asks for, in milliseconds; 0 for none")
    p.add_argument("--idle", type=float, default=0, help="seconds the sender stays idle at the end, counting heartbeats")
    args = p.parse_args()
    if args.mode == "sender" and args.port is None:
        p.error("sender needs --port")
    if not 0 < args.cut_at < args.count:
        p.error("--cut-at must be between 0 and --count")
    if args.heartbeat != 0 and not 100 <= args.heartbeat < 1 << 31:
        p.error("--heartbeat must be 0 or from 100 to 2^31-1")
    if args.idle > 0 and args.heartbeat == 0:
        p.error("--idle needs --heartbeat")
    try:
        if args.mode == "sender":
            return run_sender(args)
        return run_listener(args)
    except Exception as e:  # report, do not dump a traceback into the Go test's output
        print("%s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
