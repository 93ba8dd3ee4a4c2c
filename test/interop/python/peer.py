#!/usr/bin/env python3
"""Python peer of the buffstreams interop test (test/interop/interop_test.go).

A client sends notes 0..count-1 to a buffstreams listener; a server accepts
one connection from a buffstreams TCPConn and checks that it receives exactly
notes 0..count-1, every field, in order. Frames are built by hand with
protobuf's varint helpers (uvarint) or struct (fixed4), as any Python program
talking to buffstreams would.

    peer.py --pb2-dir DIR client --framing uvarint --count 10000 --port 5031
    peer.py --pb2-dir DIR server --framing fixed4 --count 10000

DIR holds message_pb2.py, generated from test/message/message.proto with
`protoc --python_out=DIR`. The server prints "port N" once it listens on
127.0.0.1 and "received N" when the client has closed the connection after
the last expected note; the client prints "sent N". Any mismatch or error is
written to stderr and the exit status is 1.
"""

import argparse
import socket
import struct
import sys

MAX_MESSAGE_SIZE = 1 << 16  # the Go side's MaxMessageSize
SEND_CHUNK = 64 << 10  # bytes of frames collected per sendall

try:
    from google.protobuf.internal.decoder import _DecodeVarint32
    from google.protobuf.internal.encoder import _VarintBytes
except ImportError:  # the internals moved: the format is simple enough

    def _VarintBytes(value):
        out = bytearray()
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    def _DecodeVarint32(buf, pos):
        result = shift = 0
        while True:
            b = buf[pos]
            result |= (b & 0x7F) << shift
            pos += 1
            if b < 0x80:
                return result, pos
            shift += 7
            if shift >= 64:
                raise ValueError("varint longer than 10 bytes")


# The notes: the same in interop_test.go (note) and js/peer.js (note).
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
COMMENT_UNITS = ["a", "\u00e9", "\u65e5\u672c\u8a9e", "\U0001F9AB", "\u03a9mega\t\x00 "]
BIG_COMMENT = "\u00fc\u20ac\U0001D11E" * 2000  # 18000 bytes: a 3-byte varint


def note_date(i):
    k = i % 6
    if k == 0:
        return -i
    if k == 1:
        return i * 1_000_000_007
    if k == 2:
        return INT64_MAX - (i - 2)  # INT64_MAX for note 2
    if k == 3:
        return INT64_MIN + (i - 3)  # INT64_MIN for note 3
    if k == 4:
        return -((1 << 53) + i)
    return i


def note_comment(i):
    if i % 1000 == 999:
        return BIG_COMMENT
    return COMMENT_UNITS[i % len(COMMENT_UNITS)] * (i % 97)


def note(pb, i):
    return pb.Note(name="note-%d" % i, date=note_date(i), comment=note_comment(i))


def short(s):
    return repr(s) if len(s) <= 40 else "%r... (%d characters)" % (s[:40], len(s))


def check(pb, i, got, size):
    """Returns what differs between got, decoded from size bytes, and note i,
    or None."""
    want = (("name", "note-%d" % i), ("date", note_date(i)), ("comment", note_comment(i)))
    for field, value in want:
        if getattr(got, field) != value:
            return "message %d: %s = %s, want %s" % (i, field, short(getattr(got, field)), short(value))
    want_size = note(pb, i).ByteSize()
    if size != want_size:
        # The fields match, so the payload holds something more.
        return "message %d: %d bytes, want %d" % (i, size, want_size)
    return None


def frame(framing, payload):
    if framing == "uvarint":
        return _VarintBytes(len(payload)) + payload
    return struct.pack(">I", len(payload)) + payload


def read_frame(framing, f):
    """Returns the next payload, or None at a clean end of stream."""
    if framing == "uvarint":
        header = bytearray()
        while True:
            b = f.read(1)
            if not b:
                if header:
                    raise EOFError("stream ended inside a varint header")
                return None
            header += b
            if b[0] < 0x80:
                break
            if len(header) == 10:
                raise ValueError("varint header longer than 10 bytes")
        n, _ = _DecodeVarint32(bytes(header), 0)
    else:
        header = f.read(4)
        if not header:
            return None
        if len(header) < 4:
            raise EOFError("stream ended inside a 4-byte header")
        (n,) = struct.unpack(">I", header)
    if n > MAX_MESSAGE_SIZE:
        raise ValueError("declared length %d exceeds %d" % (n, MAX_MESSAGE_SIZE))
    payload = f.read(n)
    if len(payload) != n:
        raise EOFError("stream ended after %d of %d payload bytes" % (len(payload), n))
    return payload


def run_client(pb, args):
    with socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout) as sock:
        buf = bytearray()
        for i in range(args.count):
            buf += frame(args.framing, note(pb, i).SerializeToString())
            if len(buf) >= SEND_CHUNK:
                sock.sendall(buf)
                buf.clear()
        sock.sendall(buf)
        sock.shutdown(socket.SHUT_WR)
    print("sent %d" % args.count, flush=True)
    return 0


def run_server(pb, args):
    with socket.create_server(("127.0.0.1", 0)) as ln:
        ln.settimeout(args.timeout)
        print("port %d" % ln.getsockname()[1], flush=True)
        conn, _ = ln.accept()
    with conn:
        conn.settimeout(args.timeout)
        f = conn.makefile("rb")
        i = 0
        while True:
            payload = read_frame(args.framing, f)
            if payload is None:
                break
            if i >= args.count:
                print("message %d: more than the %d expected" % (i, args.count), file=sys.stderr)
                return 1
            got = pb.Note()
            got.ParseFromString(payload)
            problem = check(pb, i, got, len(payload))
            if problem:
                print(problem, file=sys.stderr)
                return 1
            i += 1
    if i != args.count:
        print("received %d messages, want %d" % (i, args.count), file=sys.stderr)
        return 1
    print("received %d" % i, flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pb2-dir", required=True, help="directory holding message_pb2.py")
    p.add_argument("mode", choices=["client", "server"])
    p.add_argument("--framing", choices=["uvarint", "fixed4"], required=True)
    p.add_argument("--count", type=int, default=10000, help="notes to send or expect")
    p.add_argument("--port", type=int, help="the buffstreams listener's port on 127.0.0.1 (client)")
    p.add_argument("--timeout", type=float, default=60, help="seconds any socket operation may take")
    args = p.parse_args()
    if args.mode == "client" and args.port is None:
        p.error("client needs --port")
    sys.path.insert(0, args.pb2_dir)
    import message_pb2

    try:
        if args.mode == "client":
            return run_client(message_pb2, args)
        return run_server(message_pb2, args)
    except Exception as e:  # report, do not dump a traceback into the Go test's output
        print("%s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
