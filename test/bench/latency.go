package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/buffstreams/buffstreams"
)

// latencySize is the payload of every request and reply.
const latencySize = 110

// latencyBlock is how many rounds one transport runs before the other takes
// its turn.
const latencyBlock = 500

// latencyWarmup is the rounds each transport runs before any is timed.
const latencyWarmup = 500

// latencyResult is the latency of one transport.
type latencyResult struct {
	Transport string  `json:"transport"`
	Size      int     `json:"size"`
	Rounds    int     `json:"rounds"`
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	Error     string  `json:"error,omitempty"`
}

func (l latencyResult) summary() string {
	if l.Error != "" {
		return fmt.Sprintf("%d rounds ERROR: %s", l.Rounds, l.Error)
	}
	return fmt.Sprintf("%d rounds, p50 %.1f µs, p99 %.1f µs", l.Rounds, l.P50, l.P99)
}

// A pinger sends a request and waits for its reply.
type pinger interface {
	round() error
	// close ends the pinger's connections and server; it may be called
	// more than once, and while round runs (which then fails).
	close() error
}

// runLatency times request-response rounds of the library and of a raw
// net.Conn, alternating blocks of rounds between them, until each has run
// opt.rounds or opt.rtime has passed.
func runLatency(ctx context.Context, opt options) []latencyResult {
	names := []string{"sync", "batch", ceilingName}
	opens := []func() (pinger, error){
		func() (pinger, error) { return openLibPinger(0) },
		func() (pinger, error) { return openLibPinger(opt.batchBuf) },
		openRawPinger,
	}
	res := make([]latencyResult, len(names))
	ps := make([]pinger, len(names))
	samples := make([][]time.Duration, len(names))
	for i, open := range opens {
		res[i] = latencyResult{Transport: names[i], Size: latencySize}
		p, err := open()
		if err != nil {
			res[i].Error = err.Error()
			continue
		}
		ps[i] = p
		samples[i] = make([]time.Duration, 0, opt.rounds)
	}
	// A reply that never comes must not hang the run: past the deadline
	// and a grace period, the connections are closed under the rounds.
	watchdog := time.AfterFunc(opt.rtime+10*time.Second, func() {
		for _, p := range ps {
			if p != nil {
				p.close()
			}
		}
	})
	defer watchdog.Stop()

	fail := func(i int, err error) {
		res[i].Error = err.Error()
		ps[i].close()
		ps[i] = nil
	}
	for i, p := range ps {
		if p == nil {
			continue
		}
		for range latencyWarmup {
			if err := p.round(); err != nil {
				fail(i, fmt.Errorf("warm-up: %w", err))
				break
			}
		}
	}
	deadline := time.Now().Add(opt.rtime)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		busy := false
		for i, p := range ps {
			if p == nil || len(samples[i]) == opt.rounds {
				continue
			}
			busy = true
			for range min(latencyBlock, opt.rounds-len(samples[i])) {
				t0 := time.Now()
				if err := p.round(); err != nil {
					fail(i, err)
					break
				}
				samples[i] = append(samples[i], time.Since(t0))
			}
		}
		if !busy {
			break
		}
	}
	for i, p := range ps {
		if p != nil {
			if err := p.close(); err != nil && res[i].Error == "" {
				res[i].Error = "close: " + err.Error()
			}
		}
		s := samples[i]
		res[i].Rounds = len(s)
		if len(s) == 0 {
			if res[i].Error == "" {
				res[i].Error = "no rounds"
			}
			continue
		}
		slices.Sort(s)
		res[i].P50 = micros(percentile(s, 50))
		res[i].P99 = micros(percentile(s, 99))
	}
	return res
}

// percentile returns the nearest-rank p-th percentile of sorted s.
func percentile(s []time.Duration, p int) time.Duration {
	k := (len(s)*p + 99) / 100 // ceil(len*p/100)
	return s[max(k-1, 0)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// libPinger is a buffstreams client in the default mode and a listener
// whose ConnCallback writes every message back on its connection.
type libPinger struct {
	ln   *buffstreams.TCPListener
	c    *buffstreams.TCPConn
	p    []byte
	buf  []byte
	once sync.Once
	err  error
}

// openLibPinger opens a listener that echoes every message and a client
// with the given WriteBufferSize: 0 for the default mode, more for
// batching mode, where the round does not call Flush: a lone message must
// go out at once by itself.
func openLibPinger(writeBuffer int) (pinger, error) {
	ln, err := buffstreams.ListenTCP(buffstreams.TCPListenerConfig{
		Address:        "127.0.0.1:0",
		MaxMessageSize: maxMessageSize,
		ConnCallback: func(c *buffstreams.TCPConn, msg []byte) error {
			_, err := c.Write(msg)
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	if err := ln.StartListeningAsync(); err != nil {
		ln.Close()
		return nil, err
	}
	c, err := buffstreams.DialTCP(&buffstreams.TCPConnConfig{
		Address:         ln.Addr().String(),
		MaxMessageSize:  maxMessageSize,
		WriteBufferSize: writeBuffer,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &libPinger{ln: ln, c: c, p: payload(latencySize), buf: make([]byte, maxMessageSize)}, nil
}

func (l *libPinger) round() error {
	if _, err := l.c.Write(l.p); err != nil {
		return err
	}
	n, err := l.c.Read(l.buf)
	if err != nil {
		return err
	}
	if n != len(l.p) {
		return fmt.Errorf("reply of %d bytes, want %d", n, len(l.p))
	}
	return nil
}

func (l *libPinger) close() error {
	l.once.Do(func() {
		l.err = l.c.Close()
		l.ln.Close()
		if st := l.ln.Stats(); st.BadInput+st.CallbackErrors+st.Panics != 0 {
			l.err = errors.Join(l.err, fmt.Errorf("listener stats: %+v", st))
		}
	})
	return l.err
}

// rawPinger is a net.Conn client and an echo server speaking frames of a
// 4-byte big-endian length and the payload: each end writes a frame with
// one Write and reads it with io.ReadFull of the header, then of the
// payload.
type rawPinger struct {
	plainServer
	plainClients
	frame []byte
	rbuf  []byte
	once  sync.Once
	err   error
}

func openRawPinger() (pinger, error) {
	p := &rawPinger{rbuf: make([]byte, 4+maxMessageSize)}
	p.frame = binary.BigEndian.AppendUint32(nil, latencySize)
	p.frame = append(p.frame, payload(latencySize)...)
	if err := p.listen(p.serve); err != nil {
		return nil, err
	}
	if err := p.dial(p.Addr(), 1); err != nil {
		p.plainServer.Close()
		return nil, err
	}
	return p, nil
}

// serve reads each frame into one buffer and writes the same bytes back.
func (p *rawPinger) serve(c net.Conn) error {
	buf := make([]byte, 4+maxMessageSize)
	for {
		if _, err := io.ReadFull(c, buf[:4]); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		l := int(binary.BigEndian.Uint32(buf))
		if l > maxMessageSize {
			return fmt.Errorf("raw echo: length %d above %d", l, maxMessageSize)
		}
		if _, err := io.ReadFull(c, buf[4:4+l]); err != nil {
			return err
		}
		if _, err := c.Write(buf[:4+l]); err != nil {
			return err
		}
	}
}

func (p *rawPinger) round() error {
	c := p.conns[0]
	if _, err := c.Write(p.frame); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, p.rbuf[:4]); err != nil {
		return err
	}
	l := int(binary.BigEndian.Uint32(p.rbuf))
	if l != latencySize {
		return fmt.Errorf("reply of %d bytes, want %d", l, latencySize)
	}
	_, err := io.ReadFull(c, p.rbuf[4:4+l])
	return err
}

func (p *rawPinger) close() error {
	p.once.Do(func() { p.err = errors.Join(p.plainClients.Close(), p.plainServer.Close()) })
	return p.err
}
