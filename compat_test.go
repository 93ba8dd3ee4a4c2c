package buffstreams_test

import (
	"errors"
	"testing"

	"github.com/buffstreams/buffstreams"
)

// The BuffStreams 2.0 API, pinned: if a name or signature that 2.0 code
// depends on changes, this file stops compiling.
var (
	_ string = buffstreams.Version
	_ int    = buffstreams.DefaultMaxMessageSize

	_ func(string, string) string = buffstreams.FormatAddress

	_ buffstreams.ListenCallback                                            = func([]byte) error { return nil }
	_ func(buffstreams.TCPListenerConfig) (*buffstreams.TCPListener, error) = buffstreams.ListenTCP
	_ func(*buffstreams.TCPListener) error                                  = (*buffstreams.TCPListener).StartListening
	_ func(*buffstreams.TCPListener) error                                  = (*buffstreams.TCPListener).StartListeningAsync
	_ func(*buffstreams.TCPListener)                                        = (*buffstreams.TCPListener).Close

	_ func(*buffstreams.TCPConnConfig) (*buffstreams.TCPConn, error) = buffstreams.DialTCP
	_ func(*buffstreams.TCPConn, []byte) (int, error)                = (*buffstreams.TCPConn).Write
	_ func(*buffstreams.TCPConn, []byte) (int, error)                = (*buffstreams.TCPConn).Read
	_ func(*buffstreams.TCPConn) error                               = (*buffstreams.TCPConn).Reopen
	_ func(*buffstreams.TCPConn) error                               = (*buffstreams.TCPConn).Close

	_ func() *buffstreams.Manager                                     = buffstreams.NewManager
	_ func(*buffstreams.Manager, buffstreams.TCPListenerConfig) error = (*buffstreams.Manager).StartListening
	_ func(*buffstreams.Manager, *buffstreams.TCPConnConfig) error    = (*buffstreams.Manager).Dial
	_ func(*buffstreams.Manager, string, []byte) (int, error)         = (*buffstreams.Manager).Write
	_ func(*buffstreams.Manager, string) error                        = (*buffstreams.Manager).CloseListener
	_ func(*buffstreams.Manager, string) error                        = (*buffstreams.Manager).CloseWriter
	_ error                                                           = buffstreams.ErrAlreadyOpened
	_ error                                                           = buffstreams.ErrNotOpened
)

// TestBuffStreams2Program runs code written as for BuffStreams 2.0, with
// its config literals (field names, not positions) and defaults.
func TestBuffStreams2Program(t *testing.T) {
	received := make(chan string, 1)
	cfg := buffstreams.TCPListenerConfig{
		MaxMessageSize: 2048,
		EnableLogging:  false,
		Address:        buffstreams.FormatAddress("127.0.0.1", "0"),
		Callback: func(b []byte) error {
			received <- string(b)
			return nil
		},
	}
	btl, err := buffstreams.ListenTCP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer btl.Close()
	if err := btl.StartListeningAsync(); err != nil {
		t.Fatal(err)
	}
	btw, err := buffstreams.DialTCP(&buffstreams.TCPConnConfig{
		MaxMessageSize: 2048,
		Address:        btl.Addr().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer btw.Close()
	msg := []byte("This is an intentionally long and rambling sentence to pad out the size of the message.")
	n, err := btw.Write(msg)
	if err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v; want %d (the payload, not the header)", n, err, len(msg))
	}
	if got := <-received; got != string(msg) {
		t.Fatalf("received %q", got)
	}
	if _, err := buffstreams.NewManager().Write(cfg.Address, msg); !errors.Is(err, buffstreams.ErrNotOpened) {
		t.Fatalf("Manager.Write before Dial: %v", err)
	}
}
