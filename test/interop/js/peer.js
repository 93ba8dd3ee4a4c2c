#!/usr/bin/env node
// JavaScript peer of the buffstreams interop test (test/interop/interop_test.go).
//
// A client sends notes 0..count-1 to a buffstreams listener; a server accepts
// one connection from a buffstreams TCPConn and checks that it receives
// exactly notes 0..count-1, every field, in order. Message types come from
// test/message/message.proto, loaded at run time by protobufjs (no generated
// code). uvarint frames are protobufjs' own encodeDelimited/decodeDelimited;
// fixed4 frames are a 4-byte big-endian length written by hand.
//
//   node peer.js client --framing uvarint --count 10000 --port 5031
//   node peer.js server --framing fixed4 --count 10000
//
// The server prints "port N" once it listens on 127.0.0.1 and "received N"
// when the client has closed the connection after the last expected note;
// the client prints "sent N". Any mismatch or error is written to stderr and
// the exit status is 1.
'use strict';

const net = require('node:net');
const path = require('node:path');
const protobuf = require('protobufjs');

const MAX_MESSAGE_SIZE = 1 << 16; // the Go side's MaxMessageSize
const SEND_CHUNK = 64 << 10; // bytes of frames collected per socket write

const root = protobuf.loadSync(path.join(__dirname, '..', '..', 'message', 'message.proto'));
const Note = root.lookupType('message.Note');
const Long = protobuf.util.Long;

// The notes: the same in interop_test.go (note) and python/peer.py (note).
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const COMMENT_UNITS = ['a', '\u00e9', '\u65e5\u672c\u8a9e', '\u{1F9AB}', '\u03a9mega\t\x00 '];
const BIG_COMMENT = '\u00fc\u20ac\u{1D11E}'.repeat(2000); // 18000 bytes: a 3-byte varint

function noteDate(i) {
  const n = BigInt(i);
  switch (i % 6) {
    case 0: return -n;
    case 1: return n * 1000000007n;
    case 2: return INT64_MAX - (n - 2n); // INT64_MAX for note 2
    case 3: return INT64_MIN + (n - 3n); // INT64_MIN for note 3
    case 4: return -((1n << 53n) + n);
    default: return n;
  }
}

function noteComment(i) {
  if (i % 1000 === 999) return BIG_COMMENT;
  return COMMENT_UNITS[i % COMMENT_UNITS.length].repeat(i % 97);
}

function note(i) {
  return Note.create({
    name: `note-${i}`,
    date: Long.fromString(noteDate(i).toString()),
    comment: noteComment(i),
  });
}

function short(v) {
  const s = JSON.stringify(v);
  return s.length <= 40 ? s : `${s.slice(0, 40)}... (${String(v).length} code units)`;
}

// check returns what differs between got, decoded from size bytes, and note
// i, or null.
function check(i, got, size) {
  const date = typeof got.date === 'number' ? BigInt(got.date) : BigInt(got.date.toString());
  const want = [['name', got.name, `note-${i}`], ['date', date, noteDate(i)], ['comment', got.comment, noteComment(i)]];
  for (const [field, have, value] of want) {
    if (have !== value) {
      const fmt = (x) => (typeof x === 'bigint' ? x.toString() : short(x));
      return `message ${i}: ${field} = ${fmt(have)}, want ${fmt(value)}`;
    }
  }
  const wantSize = Note.encode(note(i)).finish().length;
  if (size !== wantSize) {
    // The fields match, so the payload holds something more.
    return `message ${i}: ${size} bytes, want ${wantSize}`;
  }
  return null;
}

function frame(framing, msg) {
  if (framing === 'uvarint') return Note.encodeDelimited(msg).finish();
  const body = Note.encode(msg).finish();
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  return Buffer.concat([header, body]);
}

// findFrame returns [start, size] for the frame at the start of buf: its
// payload is buf[start:size]. It returns null if buf does not hold the whole
// header yet.
function findFrame(framing, buf) {
  let start;
  let n;
  if (framing === 'uvarint') {
    n = 0;
    for (let i = 0; ; i++) {
      if (i === buf.length) return null;
      if (i === 10) throw new Error('varint header longer than 10 bytes');
      n += (buf[i] & 0x7f) * 2 ** (7 * i);
      if (buf[i] < 0x80) {
        start = i + 1;
        break;
      }
    }
  } else {
    if (buf.length < 4) return null;
    start = 4;
    n = buf.readUInt32BE(0);
  }
  if (n > MAX_MESSAGE_SIZE) throw new Error(`declared length ${n} exceeds ${MAX_MESSAGE_SIZE}`);
  return [start, start + n];
}

// decodeFrame decodes the whole frame f, whose payload starts at start.
function decodeFrame(framing, f, start) {
  if (framing === 'fixed4') return Note.decode(f.subarray(start));
  const r = protobuf.Reader.create(f);
  const msg = Note.decodeDelimited(r);
  if (r.pos !== f.length) throw new Error(`decodeDelimited read ${r.pos} of the frame's ${f.length} bytes`);
  return msg;
}

function fail(msg) {
  process.stderr.write(`${msg}\n`);
  process.exit(1);
}

function write(sock, buf) {
  return new Promise((resolve, reject) => {
    sock.write(buf, (err) => (err ? reject(err) : resolve()));
  });
}

async function runClient(opts) {
  const sock = net.connect({ host: '127.0.0.1', port: opts.port });
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  let pending = [];
  let size = 0;
  for (let i = 0; i < opts.count; i++) {
    const f = frame(opts.framing, note(i));
    pending.push(f);
    size += f.length;
    if (size >= SEND_CHUNK) {
      await write(sock, Buffer.concat(pending));
      pending = [];
      size = 0;
    }
  }
  await write(sock, Buffer.concat(pending));
  await new Promise((resolve, reject) => {
    sock.once('close', resolve);
    sock.once('error', reject);
    sock.end();
    sock.resume(); // the listener sends nothing; read its end of stream
  });
  process.stdout.write(`sent ${opts.count}\n`);
}

function runServer(opts) {
  const server = net.createServer();
  server.once('connection', (sock) => {
    server.close(); // one connection is the whole test
    let buf = Buffer.alloc(0);
    let i = 0;
    sock.on('data', (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      try {
        for (;;) {
          const found = findFrame(opts.framing, buf);
          if (found === null || found[1] > buf.length) break;
          const [start, size] = found;
          if (i >= opts.count) fail(`message ${i}: more than the ${opts.count} expected`);
          const got = decodeFrame(opts.framing, buf.subarray(0, size), start);
          const problem = check(i, got, size - start);
          if (problem) fail(problem);
          buf = buf.subarray(size);
          i++;
        }
      } catch (e) {
        fail(`message ${i}: ${e}`);
      }
    });
    sock.on('end', () => {
      if (buf.length) fail(`stream ended inside a frame: ${buf.length} bytes left`);
      if (i !== opts.count) fail(`received ${i} messages, want ${opts.count}`);
      process.stdout.write(`received ${i}\n`);
      sock.end();
    });
    sock.on('error', (e) => fail(`connection: ${e}`));
  });
  server.on('error', (e) => fail(`listen: ${e}`));
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`port ${server.address().port}\n`);
  });
}

function parseArgs(argv) {
  const usage = 'usage: node peer.js client|server --framing uvarint|fixed4 [--count N] [--port P] [--timeout SECONDS]';
  const opts = { mode: argv[0], framing: '', count: 10000, port: 0, timeout: 60 };
  if (opts.mode !== 'client' && opts.mode !== 'server') fail(usage);
  for (let i = 1; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(usage);
    switch (flag) {
      case '--framing': opts.framing = value; break;
      case '--count': opts.count = Number(value); break;
      case '--port': opts.port = Number(value); break;
      case '--timeout': opts.timeout = Number(value); break;
      default: fail(usage);
    }
  }
  if (!['uvarint', 'fixed4'].includes(opts.framing)) fail(usage);
  if (!Number.isInteger(opts.count) || opts.count < 0) fail(usage);
  if (opts.mode === 'client' && !(opts.port > 0)) fail('client needs --port');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
setTimeout(() => fail(`timed out after ${opts.timeout} s`), opts.timeout * 1000).unref();
if (opts.mode === 'client') {
  runClient(opts).catch((e) => fail(`client: ${e}`));
} else {
  runServer(opts);
}
