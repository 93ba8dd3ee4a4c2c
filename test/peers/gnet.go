package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/panjf2000/gnet/v2"
)

// ---- gnet: an event-loop server, fed by plain net.Conn clients ----
//
// The server is gnet's engine with one event loop per CPU (WithMulticore)
// and its other options at their defaults (64 KiB read buffer, TCP_NODELAY).
// OnTraffic takes every whole frame (4-byte big-endian length, then the
// payload) from the connection's inbound buffer: Peek of the header, Peek of
// the frame, Discard. Peek returns a slice of gnet's buffers, and a copy from
// its pool only when a frame straddles two of them (always, for payloads near
// the 64 KiB read size); nothing is allocated per message. In the latency
// cell OnTraffic writes each frame back with Conn.Write.
//
// gnet is a server framework: its client side is rarely what its users run,
// so the clients are plain net.Conns. For throughput, each writes the same
// pre-built frame once per message into a 64 KiB bufio.Writer (a frame larger
// than the free space goes straight to the socket when the buffer is empty,
// as bufio does), and flushes when its sender stops; the latency client is
// the raw transport's echoClient.

type gnetTransport struct{}

func (gnetTransport) Name() string { return "gnet" }

// gnetServer is a gnet engine counting (or echoing) frames, running in a
// goroutine of its own from start until Close.
type gnetServer struct {
	gnet.BuiltinEventEngine
	echo   bool
	counts counters
	errs   firstError
	booted chan gnet.Engine // OnBoot's engine, once
	done   chan error       // gnet.Run's result, once
	eng    gnet.Engine
	addr   string
}

func startGnet(echo bool) (*gnetServer, error) {
	s := &gnetServer{echo: echo, booted: make(chan gnet.Engine, 1), done: make(chan error, 1)}
	go func() {
		s.done <- gnet.Run(s, "tcp://127.0.0.1:0",
			gnet.WithMulticore(true),
			gnet.WithLogger(gnetLogger{}))
	}()
	select {
	case s.eng = <-s.booted:
	case err := <-s.done:
		return nil, fmt.Errorf("gnet.Run returned before booting: %v", err)
	}
	port, err := gnetPort(s.eng)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return s, nil
}

// gnetPort returns the port the engine's listener was bound to: gnet does
// not tell, so it asks the kernel about a duplicate of the listening socket.
func gnetPort(eng gnet.Engine) (int, error) {
	fd, err := eng.Dup()
	if err != nil {
		return 0, fmt.Errorf("gnet Dup: %w", err)
	}
	defer syscall.Close(fd)
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("getsockname: %w", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		return 0, fmt.Errorf("gnet listener has address %T, want IPv4", sa)
	}
	return in4.Port, nil
}

func (s *gnetServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.booted <- eng
	return gnet.None
}

func (s *gnetServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(s.counts.new())
	return nil, gnet.None
}

func (s *gnetServer) OnTraffic(c gnet.Conn) gnet.Action {
	var msgs, nbytes uint64
	for c.InboundBuffered() >= 4 {
		h, err := c.Peek(4)
		if err != nil {
			s.errs.set(fmt.Errorf("gnet server: peek of a header: %w", err))
			return gnet.Close
		}
		l := binary.BigEndian.Uint32(h)
		if l > maxMessageSize {
			s.errs.set(fmt.Errorf("gnet server: length %d above %d", l, maxMessageSize))
			return gnet.Close
		}
		n := 4 + int(l)
		if c.InboundBuffered() < n {
			break
		}
		frame, err := c.Peek(n)
		if err != nil {
			s.errs.set(fmt.Errorf("gnet server: peek of a %d-byte frame: %w", n, err))
			return gnet.Close
		}
		if s.echo {
			if _, err := c.Write(frame); err != nil {
				s.errs.set(fmt.Errorf("gnet server: echo: %w", err))
				return gnet.Close
			}
		}
		if _, err := c.Discard(n); err != nil {
			s.errs.set(fmt.Errorf("gnet server: discard: %w", err))
			return gnet.Close
		}
		msgs++
		nbytes += uint64(l)
	}
	if msgs > 0 {
		c.Context().(*counter).add(msgs, nbytes)
	}
	return gnet.None
}

// OnClose reports a connection that ended with an error other than its
// client closing it between frames.
func (s *gnetServer) OnClose(c gnet.Conn, err error) gnet.Action {
	switch {
	case err != nil && !errors.Is(err, io.EOF):
		s.errs.set(fmt.Errorf("gnet server: connection closed: %w", err))
	case c.InboundBuffered() > 0:
		s.errs.set(fmt.Errorf("gnet server: connection closed with %d bytes of a frame read", c.InboundBuffered()))
	}
	return gnet.None
}

// Close stops the engine, waits until gnet.Run has returned, and returns the
// first error of the server before Close.
func (s *gnetServer) Close() error {
	err := s.errs.close()
	// Engine.Stop polls for the end every 500 ms; Run's return says it
	// sooner, so Stop is abandoned once Run has returned.
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.eng.Stop(ctx) // its error says no more than Run's
	}()
	runErr := <-s.done
	cancel()
	<-stopped
	return errors.Join(err, runErr)
}

// gnetLogger drops gnet's debug and info lines and prints the rest.
type gnetLogger struct{}

func (gnetLogger) Debugf(string, ...any)             {}
func (gnetLogger) Infof(string, ...any)              {}
func (gnetLogger) Warnf(format string, args ...any)  { logf("gnet: warning: "+format, args...) }
func (gnetLogger) Errorf(format string, args ...any) { logf("gnet: error: "+format, args...) }
func (gnetLogger) Fatalf(format string, args ...any) { logf("gnet: fatal: "+format, args...) }

type gnetSession struct {
	srv     *gnetServer
	clients []net.Conn
	writers []*bufio.Writer
	frame   []byte
}

func (gnetTransport) Open(size, conns int) (session, error) {
	srv, err := startGnet(false)
	if err != nil {
		return nil, err
	}
	s := &gnetSession{srv: srv, frame: frames(size, 1)}
	if s.clients, err = dialAll(srv.addr, conns); err != nil {
		srv.Close()
		return nil, err
	}
	for _, c := range s.clients {
		s.writers = append(s.writers, bufio.NewWriterSize(c, 64<<10))
	}
	return s, nil
}

func (s *gnetSession) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	w := s.writers[i]
	var n uint64
	for n < limit && !stop.Load() {
		if _, err := w.Write(s.frame); err != nil {
			return n, err
		}
		n++
	}
	return n, w.Flush()
}

func (s *gnetSession) Received() (uint64, uint64) { return s.srv.counts.Received() }

func (s *gnetSession) Close() error {
	return errors.Join(closeAll(s.clients), s.srv.Close())
}

type gnetEcho struct {
	srv *gnetServer
	cl  *echoClient
}

func (gnetTransport) OpenEcho(size int) (echoSession, error) {
	srv, err := startGnet(true)
	if err != nil {
		return nil, err
	}
	cl, err := dialEcho(srv.addr, size)
	if err != nil {
		srv.Close()
		return nil, err
	}
	return &gnetEcho{srv: srv, cl: cl}, nil
}

func (e *gnetEcho) RoundTrip() error { return e.cl.RoundTrip() }

func (e *gnetEcho) Close() error { return errors.Join(e.cl.Close(), e.srv.Close()) }
