package buffstreams_test

import (
	"fmt"
	"log"

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
	c.Write([]byte("hello, buffstreams"))
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
	l.StartListeningAsync()

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
