package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
)

// ---- grpc: bidirectional streams of raw []byte messages ----
//
// The service is declared by hand (grpcService), so no code generator is
// needed, and the messages are []byte payloads carried by rawCodec, so the
// comparison is of transports, not of serialisers. rawCodec costs what gRPC's
// protobuf codec costs around a marshalled message: Marshal copies the
// payload into a buffer of its own (allocated below gRPC's pooling threshold,
// taken from gRPC's pool above it) that gRPC frees once written, and
// Unmarshal copies out of gRPC's buffers into the caller's slice, reusing its
// capacity. Everything else is at gRPC's defaults: 64 KiB initial flow
// control windows grown by BDP estimation, 32 KiB read and write buffers, a
// 5-byte gRPC header per message inside HTTP/2 DATA frames.
//
// Throughput: each connection is a grpc.ClientConn with one stream to Sink;
// the client calls SendMsg once per message, and the server calls RecvMsg
// once per message into a reused slice, counting. Latency: one stream to
// Echo; the client calls SendMsg then RecvMsg, and the server RecvMsg then
// SendMsg.

type grpcTransport struct{}

func (grpcTransport) Name() string { return "grpc" }

const (
	grpcSinkMethod = "/peers.Stream/Sink"
	grpcEchoMethod = "/peers.Stream/Echo"
)

// grpcHandlers is the service's implementation, which grpcService dispatches
// to.
type grpcHandlers interface {
	sink(grpc.ServerStream) error
	echo(grpc.ServerStream) error
}

var grpcService = grpc.ServiceDesc{
	ServiceName: "peers.Stream",
	HandlerType: (*grpcHandlers)(nil),
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "Sink",
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(srv any, st grpc.ServerStream) error {
				return srv.(grpcHandlers).sink(st)
			},
		},
		{
			StreamName:    "Echo",
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(srv any, st grpc.ServerStream) error {
				return srv.(grpcHandlers).echo(st)
			},
		},
	},
	Metadata: "hand-written; no .proto file",
}

// rawCodec carries *[]byte messages as they are.
type rawCodec struct{}

func (rawCodec) Name() string { return "raw" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.Copy(*p, mem.DefaultBufferPool())}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	n := data.Len()
	if cap(*p) < n {
		*p = make([]byte, n)
	}
	*p = (*p)[:n]
	data.CopyTo(*p)
	return nil
}

// grpcServer serves grpcService on 127.0.0.1:0 from start until Close.
type grpcServer struct {
	srv    *grpc.Server
	addr   string
	served chan error // Serve's result
	counts counters
	errs   firstError
}

func startGRPC() (*grpcServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &grpcServer{
		srv:    grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.WaitForHandlers(true)),
		addr:   ln.Addr().String(),
		served: make(chan error, 1),
	}
	s.srv.RegisterService(&grpcService, s)
	go func() { s.served <- s.srv.Serve(ln) }()
	return s, nil
}

func (s *grpcServer) sink(st grpc.ServerStream) error {
	cnt := s.counts.new()
	var msg []byte
	for {
		if err := st.RecvMsg(&msg); err != nil {
			if err == io.EOF {
				return nil
			}
			s.errs.set(fmt.Errorf("grpc server: %w", err))
			return err
		}
		cnt.add(1, uint64(len(msg)))
	}
}

func (s *grpcServer) echo(st grpc.ServerStream) error {
	var msg []byte
	for {
		if err := st.RecvMsg(&msg); err != nil {
			if err == io.EOF {
				return nil
			}
			s.errs.set(fmt.Errorf("grpc echo server: %w", err))
			return err
		}
		if err := st.SendMsg(&msg); err != nil {
			s.errs.set(fmt.Errorf("grpc echo server: %w", err))
			return err
		}
	}
}

// Close stops the server, waits for its handlers and for Serve, and returns
// the first error of a handler before Close.
func (s *grpcServer) Close() error {
	err := s.errs.close()
	s.srv.Stop()
	if serr := <-s.served; serr != nil && !errors.Is(serr, grpc.ErrServerStopped) {
		err = errors.Join(err, serr)
	}
	return err
}

// grpcClient is one grpc.ClientConn with one stream open.
type grpcClient struct {
	cc     *grpc.ClientConn
	st     grpc.ClientStream
	cancel context.CancelFunc
}

func dialGRPC(addr, method string) (*grpcClient, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	desc := &grpcService.Streams[0]
	if method == grpcEchoMethod {
		desc = &grpcService.Streams[1]
	}
	st, err := cc.NewStream(ctx, desc, method)
	if err != nil {
		cancel()
		cc.Close()
		return nil, err
	}
	return &grpcClient{cc: cc, st: st, cancel: cancel}, nil
}

// Close half-closes the stream, waits for the server to end it (so that the
// server saw every message), then closes the connection.
func (c *grpcClient) Close() error {
	err := c.st.CloseSend()
	var m []byte
	for err == nil {
		err = c.st.RecvMsg(&m) // io.EOF once the handler has returned nil
	}
	if err == io.EOF {
		err = nil
	}
	c.cancel()
	return errors.Join(err, c.cc.Close())
}

type grpcSession struct {
	srv     *grpcServer
	clients []*grpcClient
	payload []byte
}

func (grpcTransport) Open(size, conns int) (session, error) {
	srv, err := startGRPC()
	if err != nil {
		return nil, err
	}
	s := &grpcSession{srv: srv, payload: payload(size)}
	for range conns {
		c, err := dialGRPC(srv.addr, grpcSinkMethod)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.clients = append(s.clients, c)
	}
	return s, nil
}

func (s *grpcSession) Send(i int, stop *atomic.Bool, limit uint64) (uint64, error) {
	st, p := s.clients[i].st, &s.payload
	var n uint64
	for n < limit && !stop.Load() {
		if err := st.SendMsg(p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *grpcSession) Received() (uint64, uint64) { return s.srv.counts.Received() }

func (s *grpcSession) Close() error {
	var errs []error
	for _, c := range s.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(append(errs, s.srv.Close())...)
}

type grpcEcho struct {
	srv  *grpcServer
	cl   *grpcClient
	sent []byte
	got  []byte
}

func (grpcTransport) OpenEcho(size int) (echoSession, error) {
	srv, err := startGRPC()
	if err != nil {
		return nil, err
	}
	cl, err := dialGRPC(srv.addr, grpcEchoMethod)
	if err != nil {
		srv.Close()
		return nil, err
	}
	return &grpcEcho{srv: srv, cl: cl, sent: payload(size)}, nil
}

func (e *grpcEcho) RoundTrip() error {
	if err := e.cl.st.SendMsg(&e.sent); err != nil {
		return err
	}
	if err := e.cl.st.RecvMsg(&e.got); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if !bytes.Equal(e.got, e.sent) {
		return fmt.Errorf("echo of %d bytes differs from the %d bytes sent", len(e.got), len(e.sent))
	}
	return nil
}

func (e *grpcEcho) Close() error { return errors.Join(e.cl.Close(), e.srv.Close()) }
