package buffstreams

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAckWireBytes pins the bytes of every message of the protocol, as
// docs/wire.md draws them.
func TestAckWireBytes(t *testing.T) {
	id := SessionID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"hello", appendHello(nil, hello{version: ackVersion, id: id, first: 1, max: 4096, heartbeat: 5000, framing: "buffstreams"}),
			"ffffffff4253414b 02 01 00112233445566778899aabbccddeeff 0000000000000001 00001000 00001388 000b 6275666673747265616d73"},
		{"hello fixed4 resuming, no heartbeats", appendHello(nil, hello{version: ackVersion, id: id, first: 0x0102, max: 1 << 20, framing: "fixed4"}),
			"ffffffff4253414b 02 01 00112233445566778899aabbccddeeff 0000000000000102 00100000 00000000 0006 666978656434"},
		{"accept", appendAccept(nil, 300), "ffffffff4253414b 02 02 000000000000012c"},
		{"refuse", appendRefuse(nil, reasonFraming, "no"), "ffffffff4253414b 02 03 02 0002 6e6f"},
		{"ack", appendRecord(nil, typeAck, 7), "10 0000000000000007"},
		{"goaway", appendRecord(nil, typeGoaway, 7), "12 0000000000000007"},
		{"heartbeat", appendRecord(nil, typeHeartbeat, 7), "13 0000000000000007"},
		{"rejected", appendRejected(nil, 5, "bad"), "11 0000000000000005 0003 626164"},
	}
	for _, c := range cases {
		if want := unhex(t, c.want); !bytes.Equal(c.got, want) {
			t.Errorf("%s:\n got % x\nwant % x", c.name, c.got, want)
		}
	}
}

// TestAckMagicIsNoFrame checks the claim of ackMagic's documentation: for
// which framings a hello can and cannot be read as a first frame.
func TestAckMagicIsNoFrame(t *testing.T) {
	h := appendHello(nil, hello{version: ackVersion, first: 1, max: 4096, heartbeat: 5000, framing: "fixed1"})
	never := []Framing{BuffStreamsFraming(255), BuffStreamsFraming(4096), BuffStreamsFraming(1 << 20), BuffStreamsFraming(MaxMessageSizeLimit),
		Uvarint, Fixed4, Fixed4LE, Fixed4Inclusive, Fixed8, Fixed8LE}
	for _, f := range never {
		if _, _, _, err := f.split(h, MaxMessageSizeLimit); err == nil {
			t.Errorf("%s reads the hello as a frame", f)
		}
	}
	for _, f := range []Framing{Fixed1, Fixed2, Fixed2LE} {
		if _, _, _, err := f.split(h, f.maxLen()); err != nil {
			t.Errorf("%s: %v; the documentation says it can read the hello", f, err)
		}
	}
	if !isHello(h) || isHello(h[:9]) || isHello(append([]byte{0}, h...)) {
		t.Error("isHello")
	}
}

func TestParseHello(t *testing.T) {
	good := appendHello(nil, hello{version: ackVersion, first: 9, max: 4096, heartbeat: 300, framing: "uvarint"})
	for n := range len(good) {
		h, size, _, err := parseHello(good[:n])
		if err != nil {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
		if size != 0 && size <= n {
			t.Fatalf("prefix of %d bytes: complete at %d", n, size)
		}
		_ = h
	}
	h, size, _, err := parseHello(good)
	if err != nil || size != len(good) || h.first != 9 || h.max != 4096 || h.heartbeat != 300 || h.framing != "uvarint" {
		t.Fatalf("parseHello = %+v, %d, %v", h, size, err)
	}
	bad := []struct {
		name   string
		p      []byte
		reason byte
	}{
		{"plain frame", []byte{0x0b, 0, 0, 0}, reasonNoHello},
		{"TLS", []byte{0x16, 0x03, 0x01, 0x02}, reasonNoHello},
		{"version 3", append(append([]byte(nil), good[:8]...), 3, 1), reasonVersion},
		{"type", append(append([]byte(nil), good[:8]...), ackVersion, 9), reasonBadHello},
	}
	for _, b := range bad {
		p := append(append([]byte(nil), b.p...), make([]byte, 64)...)
		if _, _, r, err := parseHello(p); err == nil || r != b.reason {
			t.Errorf("%s: reason %d, err %v; want reason %d", b.name, r, err, b.reason)
		}
	}
	for _, ms := range []uint32{1, 99, 1 << 31} {
		p := bytes.Clone(good)
		binary.BigEndian.PutUint32(p[38:42], ms)
		if _, _, r, err := parseHello(p); !errors.Is(err, ErrAckProtocol) || r != reasonBadHello {
			t.Errorf("heartbeat timeout of %d ms: reason %d, err %v; want a malformed hello", ms, r, err)
		}
	}
	huge := bytes.Clone(good)
	huge[42], huge[43] = 0xff, 0xff // a framing name of 65535 bytes
	if _, _, r, err := parseHello(huge); err == nil || r != reasonBadHello {
		t.Errorf("giant framing name: reason %d, err %v", r, err)
	}
	zero := bytes.Clone(good)
	copy(zero[26:34], make([]byte, 8))
	if _, _, _, err := parseHello(zero); !errors.Is(err, ErrAckProtocol) {
		t.Errorf("first 0: %v", err)
	}
}

// TestAckVersionRule checks both sides of the version rule against the
// bytes of protocol version 1: a hello of that version is refused with
// reason 1 as soon as its version byte arrives, and an answer of that
// version fails the dial; both errors match ErrAckMismatch and name both
// versions.
func TestAckVersionRule(t *testing.T) {
	const saying = "protocol version 1, this side speaks 2"
	old := v1Hello(1, 4096, "buffstreams")
	for _, p := range [][]byte{old, old[:10]} {
		if _, _, r, err := parseHello(p); r != reasonVersion || !errors.Is(err, ErrAckMismatch) || !strings.Contains(err.Error(), saying) {
			t.Errorf("hello of version 1 (%d bytes): reason %d, %v; want reason %d saying %q", len(p), r, err, reasonVersion, saying)
		}
	}
	v1 := append(append([]byte(nil), ackMagic[:]...), 1)
	for _, answer := range [][]byte{
		append(append(v1, typeAccept), make([]byte, 8)...),
		append(append(v1, typeRefuse, reasonVersion, 0, 2), "no"...),
	} {
		if _, err := readAnswer(bytes.NewReader(answer)); !errors.Is(err, ErrAckMismatch) || !strings.Contains(err.Error(), saying) {
			t.Errorf("answer % x: %v; want ErrAckMismatch saying %q", answer, err, saying)
		}
	}
}

func TestReadAnswer(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want error
		d    uint64
	}{
		{"accept", appendAccept(nil, 42), nil, 42},
		{"framing", appendRefuse(nil, reasonFraming, "x"), ErrAckMismatch, 0},
		{"max", appendRefuse(nil, reasonMax, "x"), ErrAckMismatch, 0},
		{"acks off", appendRefuse(nil, reasonAcksOff, "x"), ErrAcksOff, 0},
		{"tls", appendRefuse(nil, reasonTLS, "x"), ErrTLSMismatch, 0},
		{"busy", appendRefuse(nil, reasonBusy, "x"), ErrAckRefused, 0},
		{"closed", nil, ErrAcksOff, 0},
		{"TLS alert", []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}, ErrTLSMismatch, 0},
		{"garbage", []byte("HTTP/1.1 400 Bad Request\r\n"), ErrAckProtocol, 0},
		{"cut accept", appendAccept(nil, 42)[:12], ErrAckProtocol, 0},
	}
	for _, c := range cases {
		d, err := readAnswer(bytes.NewReader(c.in))
		if !errors.Is(err, c.want) || (c.want == nil && d != c.d) {
			t.Errorf("%s: %d, %v; want %d, %v", c.name, d, err, c.d, c.want)
		}
	}
}

func TestReadRecord(t *testing.T) {
	var in []byte
	in = appendRecord(in, typeAck, 3)
	in = appendRecord(in, typeHeartbeat, 3)
	in = appendRejected(in, 4, "nope")
	in = appendRecord(in, typeGoaway, 4)
	br := bufio.NewReader(bytes.NewReader(in))
	want := []struct {
		typ  byte
		seq  uint64
		text string
	}{{typeAck, 3, ""}, {typeHeartbeat, 3, ""}, {typeRejected, 4, "nope"}, {typeGoaway, 4, ""}}
	for _, w := range want {
		typ, seq, text, err := readRecord(br, new(recordBuf))
		if err != nil || typ != w.typ || seq != w.seq || text != w.text {
			t.Fatalf("readRecord = %#x %d %q %v, want %+v", typ, seq, text, err, w)
		}
	}
	for _, bad := range [][]byte{{0x55, 0, 0, 0, 0, 0, 0, 0, 1}, {0x14, 0, 0, 0, 0, 0, 0, 0, 1}, {typeAck, 0, 0}, {typeHeartbeat, 0, 0, 0, 0, 0, 0, 0}, appendRejected(nil, 1, "abc")[:12], {typeRejected, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff}} {
		if _, _, _, err := readRecord(bufio.NewReader(bytes.NewReader(bad)), new(recordBuf)); !errors.Is(err, ErrAckProtocol) {
			t.Errorf("% x: %v, want ErrAckProtocol", bad, err)
		}
	}
}

func FuzzParseHello(f *testing.F) {
	f.Add(appendHello(nil, hello{version: ackVersion, first: 1, max: 4096, heartbeat: 5000, framing: "buffstreams"}))
	f.Add(appendHello(nil, hello{version: ackVersion, first: 1 << 40, max: 1 << 20, framing: "fixed4"}))
	f.Add(appendHello(nil, hello{version: ackVersion, first: 7, max: 255, heartbeat: 100, framing: "fixed1"}))
	f.Add(appendHello(nil, hello{version: ackVersion, first: 7, max: 255, heartbeat: 99, framing: "fixed1"}))
	f.Add(v1Hello(1, 4096, "buffstreams"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 'B', 'S', 'A', 'K', ackVersion, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 'B', 'S', 'A', 'K', 1, 1})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, p []byte) {
		h, size, _, err := parseHello(p)
		if err != nil {
			return
		}
		if size > helloFixed+maxFramingName {
			t.Fatalf("size %d above the largest hello", size)
		}
		if size != 0 && size <= len(p) {
			if h.version != ackVersion || h.first == 0 || len(h.framing) == 0 ||
				h.heartbeat != 0 && time.Duration(h.heartbeat)*time.Millisecond < minHeartbeatTimeout {
				t.Fatalf("accepted %+v", h)
			}
			again := appendHello(nil, h)
			if !bytes.Equal(again, p[:size]) {
				t.Fatalf("round trip: % x, want % x", again, p[:size])
			}
		}
	})
}

func FuzzReadAnswer(f *testing.F) {
	f.Add(appendAccept(nil, 1))
	f.Add(appendRefuse(nil, reasonMax, "too big"))
	f.Add([]byte{0x15, 0x03, 0x03, 0x00, 0x02})
	f.Fuzz(func(t *testing.T, p []byte) {
		d, err := readAnswer(bytes.NewReader(p))
		if err == nil && !bytes.Equal(p[:18], appendAccept(nil, d)) {
			t.Fatalf("accepted % x as %d", p, d)
		}
	})
}

func FuzzReadRecord(f *testing.F) {
	f.Add(appendRecord(nil, typeAck, 1))
	f.Add(appendRejected(nil, 2, "x"))
	f.Add(appendRecord(nil, typeHeartbeat, 0))
	f.Add(appendRecord(appendRecord(nil, typeAck, 9), typeHeartbeat, 9))
	f.Add(appendRecord(appendRecord(nil, typeHeartbeat, 3), typeGoaway, 4))
	f.Add(appendRecord(nil, typeHeartbeat, 5)[:6])
	f.Fuzz(func(t *testing.T, p []byte) {
		br := bufio.NewReader(bytes.NewReader(p))
		used := 0
		for range 100 {
			typ, seq, text, err := readRecord(br, new(recordBuf))
			if err != nil {
				return
			}
			var want []byte
			switch typ {
			case typeAck, typeGoaway, typeHeartbeat:
				if text != "" {
					t.Fatalf("record of type %#x with text %q", typ, text)
				}
				want = appendRecord(nil, typ, seq)
			case typeRejected:
				if len(text) > maxReasonText {
					t.Fatalf("rejection text of %d bytes", len(text))
				}
				want = appendRejected(nil, seq, text)
			default:
				t.Fatalf("accepted type %#x", typ)
			}
			// Every record accepted is the bytes that encode it.
			if !bytes.Equal(p[used:used+len(want)], want) {
				t.Fatalf("read % x as % x", p[used:used+len(want)], want)
			}
			used += len(want)
		}
	})
}

// v1Hello returns the hello of protocol version 1, without the heartbeat
// timeout, as a dialer of that version sends it.
func v1Hello(first uint64, max uint32, framing string) []byte {
	b := append(append([]byte(nil), ackMagic[:]...), 1, typeHello)
	b = append(b, make([]byte, 16)...)
	b = binary.BigEndian.AppendUint64(b, first)
	b = binary.BigEndian.AppendUint32(b, max)
	b = binary.BigEndian.AppendUint16(b, uint16(len(framing)))
	return append(b, framing...)
}
