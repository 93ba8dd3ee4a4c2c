package buffstreams_test

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// A listener hands each message to the callback, header removed. The slice
// is only valid until the callback returns.
func ExampleListenTCP() {
	got := make(chan string, 1)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address: "127.0.0.1:0", // port 0: the system picks one; see l.Addr()
		Callback: func(msg []byte) error {
			got <- string(msg) // string() copies the bytes
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello, buffstreams")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-got)
	// Output: hello, buffstreams
}

// A dialed connection writes messages; Write adds the header and returns
// the payload's length. Here both sides use protobuf's size-delimited
// framing, which Java, C#, Python and JavaScript protobuf runtimes speak.
func ExampleDialTCP() {
	sizes := make(chan int, 3)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Framing:  bs.Uvarint,
		Callback: func(msg []byte) error { sizes <- len(msg); return nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String(), Framing: bs.Uvarint})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"first", "second message", ""} {
		n, err := c.Write([]byte(msg))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("wrote %d bytes\n", n)
	}
	for range 3 {
		fmt.Printf("received %d bytes\n", <-sizes)
	}
	// Output:
	// wrote 5 bytes
	// wrote 14 bytes
	// wrote 0 bytes
	// received 5 bytes
	// received 14 bytes
	// received 0 bytes
}

// A Manager keeps listeners and connections by address.
func ExampleManager() {
	got := make(chan string, 1)
	m := bs.NewManager()
	defer m.Close()

	address := bs.FormatAddress("127.0.0.1", "0")
	err := m.StartListening(bs.TCPListenerConfig{
		Address:  address,
		Callback: func(msg []byte) error { got <- string(msg); return nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	// With port 0 the real address is the listener's.
	target := m.Listener(address).Addr().String()

	if err := m.Dial(&bs.TCPConnConfig{Address: target}); err != nil {
		log.Fatal(err)
	}
	if _, err := m.Write(target, []byte("via the manager")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-got)
	fmt.Println(m.CloseWriter(target))
	fmt.Println(m.CloseWriter(target))
	// Output:
	// via the manager
	// <nil>
	// buffstreams: address is not opened
}

func ExampleFormatAddress() {
	fmt.Println(bs.FormatAddress("", "5031"))
	fmt.Println(bs.FormatAddress("::1", "5031"))
	// Output:
	// :5031
	// [::1]:5031
}

// A server that answers: a ConnCallback gets the connection each message
// came from and writes the reply on it. The client reads the reply with
// Read.
func ExampleConnCallback() {
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address: "127.0.0.1:0",
		ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
			_, err := conn.Write(append([]byte("echo: "), msg...))
			return err // counted and logged; the connection stays open
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, c.MaxMessageSize())
	for _, msg := range []string{"ping", "hello"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			log.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(buf[:n]))
	}
	// Output:
	// echo: ping
	// echo: hello
}

// A chat server: every message is relayed to the other clients with
// Broadcast, which skips the sender. Each client says "join" first, so the
// example knows when the server is serving all three: Broadcast reaches the
// connections accepted so far.
func ExampleTCPListener_Broadcast() {
	var l *bs.TCPListener
	joined := make(chan struct{}, 3)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address: "127.0.0.1:0",
		ConnCallback: func(from *bs.TCPConn, msg []byte) error {
			if string(msg) == "join" {
				joined <- struct{}{}
				return nil
			}
			_, err := l.Broadcast(msg, from)
			return err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil { // after l is set: the callback uses it
		log.Fatal(err)
	}

	names := []string{"alice", "bob", "carol"}
	clients := map[string]*bs.TCPConn{}
	for _, name := range names {
		c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String()})
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		clients[name] = c
		if _, err := c.Write([]byte("join")); err != nil {
			log.Fatal(err)
		}
	}
	for range names {
		<-joined
	}
	read := func(name string) string {
		buf := make([]byte, 100)
		n, err := clients[name].Read(buf)
		if err != nil {
			log.Fatal(err)
		}
		return string(buf[:n])
	}

	if _, err := clients["alice"].Write([]byte("alice: hi all")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob reads:", read("bob"))
	fmt.Println("carol reads:", read("carol"))

	// The server itself speaks to everyone: alice's next message is this
	// one, not her own.
	n, err := l.Broadcast([]byte("server: closing at noon"), nil)
	fmt.Println("sent to", n, err)
	for _, name := range names {
		fmt.Println(name, "reads:", read(name))
	}
	// Output:
	// bob reads: alice: hi all
	// carol reads: alice: hi all
	// sent to 3 <nil>
	// alice reads: server: closing at noon
	// bob reads: server: closing at noon
	// carol reads: server: closing at noon
}

// Messages reads without a callback, pulling one message per iteration.
// Each message is valid until the next iteration (copy it to keep it);
// breaking out of the loop loses nothing, and the iteration ends with the
// error that stopped it, io.EOF when the peer closed.
func ExampleTCPConn_Messages() {
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address: "127.0.0.1:0",
		ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
			for _, part := range []string{"one", "two", "three", "four"} {
				if _, err := conn.Write([]byte(part)); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("send me four")); err != nil {
		log.Fatal(err)
	}

	var kept []string
	for msg, err := range c.Messages() {
		if err != nil {
			log.Fatal(err)
		}
		kept = append(kept, string(msg)) // string() copies
		if len(kept) == 2 {
			break
		}
	}
	fmt.Println(kept)
	for msg, err := range c.Messages() {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(msg))
		if string(msg) == "four" {
			break
		}
	}

	l.Close() // closes the server's side of the connection
	for _, err := range c.Messages() {
		fmt.Println(errors.Is(err, io.EOF))
	}
	// Output:
	// [one two]
	// three
	// four
	// true
}

// NewConn frames messages over any net.Conn: here both ends of an
// in-memory net.Pipe.
func ExampleNewConn() {
	a, b := net.Pipe()
	w, err := bs.NewConn(a, &bs.TCPConnConfig{Framing: bs.Uvarint})
	if err != nil {
		log.Fatal(err)
	}
	r, err := bs.NewConn(b, &bs.TCPConnConfig{Framing: bs.Uvarint})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	go func() {
		if _, err := w.WriteBatch([][]byte{[]byte("over"), []byte("a pipe")}); err != nil {
			log.Fatal(err)
		}
		if err := w.Close(); err != nil {
			log.Fatal(err)
		}
	}()
	for msg, err := range r.Messages() {
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Println(string(msg))
	}
	// Output:
	// over
	// a pipe
	// EOF
}

// memListener is an in-memory net.Listener: its DialContext makes a
// net.Pipe and hands one end to Accept.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (m *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *memListener) Close() error {
	m.once.Do(func() { close(m.done) })
	return nil
}

func (m *memListener) Addr() net.Addr { return memAddr{} }

func (m *memListener) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case m.conns <- server:
		return client, nil
	case <-m.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "memory" }

// NewListener serves the connections of any net.Listener (a Unix socket
// listener, a tls.Listener, or, here, an in-memory one that clients reach
// through TCPConnConfig.DialContext).
func ExampleNewListener() {
	ml := newMemListener()
	l, err := bs.NewListener(ml, bs.TCPListenerConfig{
		ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
			_, err := conn.Write(append([]byte("got "), msg...))
			return err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close() // closes ml too
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: "memory", DialContext: ml.DialContext})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("in memory")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf[:n]), "over", l.Addr().Network())
	// Output: got in memory over memory
}

// A listener's counters published with expvar, for /debug/vars. Stats never
// blocks the read loops, so the page may be read at any rate. A read loop
// publishes its counts after the callbacks of each read; the example closes
// the listener, which waits for the read loops, so the page it prints is
// final.
func ExampleTCPListener_Stats() {
	received := make(chan struct{}, 3)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Callback: func(msg []byte) error { received <- struct{}{}; return nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}
	// One name per listener: expvar names are process-wide and final.
	name := "buffstreams " + l.Addr().String()
	expvar.Publish(name, expvar.Func(func() any { return l.Stats() }))

	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"a", "bb", "ccc"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			log.Fatal(err)
		}
	}
	for range 3 {
		<-received // every message is handed over before Close
	}
	l.Close()
	fmt.Println(expvar.Get(name))
	// Output: {"Accepted":1,"Active":0,"Messages":3,"Bytes":6,"CallbackErrors":0,"Panics":0,"BadInput":0,"WrongProtocol":0,"AcceptErrors":0,"Refused":0,"Timeouts":0,"TLSErrors":0}
}

// Batching mode: Write copies each message into a buffer and returns, and a
// flusher writes many messages per system call. Flush waits until
// everything written before it has reached the kernel; Close writes what is
// left.
func ExampleTCPConnConfig_batching() {
	received := make(chan struct{}, 1100)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Callback: func([]byte) error { received <- struct{}{}; return nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	c, err := bs.DialTCP(&bs.TCPConnConfig{
		Address:         l.Addr().String(),
		WriteBufferSize: 64 << 10,         // batching mode
		FlushInterval:   time.Millisecond, // wait up to 1 ms for more
	})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 1000 {
		if _, err := c.Write(fmt.Appendf(nil, "event %d", i)); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := c.WriteBatch([][]byte{[]byte("x"), []byte("y"), []byte("z")}); err != nil {
		log.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("written after Flush:", c.Stats().MessagesWritten)
	if _, err := c.Write([]byte("last")); err != nil {
		log.Fatal(err)
	}
	if err := c.Close(); err != nil { // writes "last" first
		log.Fatal(err)
	}
	fmt.Println("written after Close:", c.Stats().MessagesWritten)
	for range 1004 {
		<-received
	}
	fmt.Println("received: 1004")
	// Output:
	// written after Flush: 1003
	// written after Close: 1004
	// received: 1004
}

// A BufferedWriter gives one goroutine a buffer of its own: Write frames each
// message into it without a lock, and the buffer goes to the connection,
// in one system call, when it is full or on Flush. Other goroutines may
// write on the same connection meanwhile.
func ExampleTCPConn_NewBufferedWriter() {
	received := make(chan struct{}, 1000)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Callback: func([]byte) error { received <- struct{}{}; return nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	w := c.NewBufferedWriter(4096)
	for i := range 1000 {
		if _, err := w.Write(fmt.Appendf(nil, "event %d", i)); err != nil {
			log.Fatal(err)
		}
	}
	// Full buffers went to the connection along the way.
	fmt.Println("written before Flush:", c.Stats().MessagesWritten, "buffered:", w.Buffered())
	if err := w.Flush(); err != nil { // the kernel has every frame when it returns
		log.Fatal(err)
	}
	fmt.Println("written after Flush:", c.Stats().MessagesWritten)
	for range 1000 {
		<-received
	}
	fmt.Println("received: 1000")
	// Output:
	// written before Flush: 689 buffered: 311
	// written after Flush: 1000
	// received: 1000
}

// The Manager reaches the same abilities by address: replies through the
// ConnCallback of the listener's configuration, Broadcast, and counters.
func ExampleManager_Broadcast() {
	m := bs.NewManager()
	defer m.Close()
	address := "127.0.0.1:0"
	err := m.StartListening(bs.TCPListenerConfig{
		Address: address,
		ConnCallback: func(conn *bs.TCPConn, msg []byte) error {
			_, err := conn.Write(append([]byte("ack "), msg...))
			return err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	target := m.Listener(address).Addr().String()
	if err := m.Dial(&bs.TCPConnConfig{Address: target}); err != nil {
		log.Fatal(err)
	}
	read := func() string {
		buf := make([]byte, 64)
		n, err := m.Writer(target).Read(buf)
		if err != nil {
			log.Fatal(err)
		}
		return string(buf[:n])
	}

	if _, err := m.Write(target, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(read())
	n, err := m.Broadcast(address, []byte("news for all"), nil) // keyed as in the listener's config
	fmt.Println("broadcast to", n, err)
	fmt.Println(read())

	ls, err := m.ListenerStats(address)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("listener: accepted", ls.Accepted, "active", ls.Active)
	ws, err := m.WriterStats(target)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("writer: written", ws.MessagesWritten, "read", ws.MessagesRead)
	_, err = m.Broadcast("127.0.0.1:1", []byte("?"), nil)
	fmt.Println(err)
	// Output:
	// ack hello
	// broadcast to 1 <nil>
	// news for all
	// listener: accepted 1 active 1
	// writer: written 1 read 2
	// buffstreams: address is not opened
}

// Delimited framings end each message with a delimiter instead of
// prefixing its length: Lines is the newline. They are for text; a payload
// that contains the delimiter is refused before anything is sent.
func ExampleDelimited() {
	got := make(chan string, 2)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Framing:  bs.Lines,
		Callback: func(msg []byte) error { got <- string(msg); return nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String(), Framing: bs.Lines})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		log.Fatal(err)
	}
	_, err = c.Write([]byte("two\nlines"))
	fmt.Println(errors.Is(err, bs.ErrDelimiterInPayload))
	if _, err := c.Write([]byte("world")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-got, <-got)

	crlf, err := bs.Delimited([]byte("\r\n"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(crlf)
	// Output:
	// true
	// hello world
	// delim:\r\n
}

// ParseFraming turns names from flags or configuration files into framings;
// every framing's String parses back to it ("lines" is another name for
// delim:\n).
func ExampleParseFraming() {
	for _, name := range []string{"buffstreams", "uvarint", "fixed4", "fixed4le", "fixed4incl", "lines", `delim:\x00`} {
		f, err := bs.ParseFraming(name, 4096)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(f)
	}
	_, err := bs.ParseFraming("fixed5", 4096)
	fmt.Println(errors.Is(err, bs.ErrInvalidConfig))
	// Output:
	// buffstreams
	// uvarint
	// fixed4
	// fixed4le
	// fixed4incl
	// delim:\n
	// delim:\x00
	// true
}

// Shutdown stops accepting and lets every connection deliver what its peer
// has sent before closing it; Close would drop what is not yet delivered.
func ExampleTCPListener_Shutdown() {
	var mu sync.Mutex
	delivered := 0
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address: "127.0.0.1:0",
		Callback: func(msg []byte) error {
			mu.Lock()
			delivered++
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for range 1000 {
		if _, err := c.Write([]byte("in flight")); err != nil {
			log.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println(l.Shutdown(ctx))
	mu.Lock()
	fmt.Println("delivered", delivered)
	mu.Unlock()
	// Output:
	// <nil>
	// delivered 1000
}

// OnWriteError receives every message that could not be written, once, with
// the reason; together with Stats().MessagesWritten it accounts for every
// message given to Write.
func ExampleTCPConnConfig_onWriteError() {
	l, err := bs.ListenTCP(bs.TCPListenerConfig{Address: "127.0.0.1:0", Callback: func([]byte) error { return nil }})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}

	failed := 0
	c, err := bs.DialTCP(&bs.TCPConnConfig{
		Address: l.Addr().String(),
		OnWriteError: func(msg []byte, err error) {
			failed++
			fmt.Printf("not sent: %d bytes: %v\n", len(msg), errors.Is(err, bs.ErrMessageTooLarge))
		},
		Retry: &bs.RetryPolicy{MaxAttempts: 5, MaxWait: 10 * time.Second},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 100)); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 5000)); !errors.Is(err, bs.ErrMessageTooLarge) { // above the default MaxMessageSize of 4096
		log.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 200)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("written", c.Stats().MessagesWritten, "failed", failed)
	// Output:
	// not sent: 5000 bytes: true
	// written 2 failed 1
}

// OnConnEnd reports why each connection ended, once per connection, so a
// server can count the causes. Close waits for every call.
func ExampleTCPListenerConfig_onConnEnd() {
	var mu sync.Mutex
	causes := make(map[string]int)
	ended := make(chan struct{}, 3)
	received := make(chan struct{}, 2)
	l, err := bs.ListenTCP(bs.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Callback: func([]byte) error { received <- struct{}{}; return nil },
		OnConnEnd: func(conn *bs.TCPConn, err error) {
			cause := "other"
			switch {
			case err == nil:
				cause = "peer hung up"
			case errors.Is(err, bs.ErrMessageTooLarge), errors.Is(err, bs.ErrMalformedHeader), errors.Is(err, io.ErrUnexpectedEOF):
				cause = "bad input"
			case errors.Is(err, net.ErrClosed):
				cause = "closed by us"
			}
			mu.Lock()
			causes[cause]++
			mu.Unlock()
			ended <- struct{}{}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := l.StartListeningAsync(); err != nil {
		log.Fatal(err)
	}
	addr := l.Addr().String()

	// A client that sends a message and hangs up.
	c, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		log.Fatal(err)
	}
	c.Close()
	<-received
	<-ended

	// A peer whose header declares 5000 bytes, above MaxMessageSize.
	bad, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Write([]byte{0x90, 0x4e, 0x00}); err != nil {
		log.Fatal(err)
	}
	<-ended

	// A client still connected when the listener closes.
	idle, err := bs.DialTCP(&bs.TCPConnConfig{Address: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Write([]byte("still here")); err != nil {
		log.Fatal(err)
	}
	<-received
	l.Close() // returns after OnConnEnd has run for it

	mu.Lock()
	fmt.Println(causes)
	mu.Unlock()
	// Output: map[bad input:1 closed by us:1 peer hung up:1]
}
