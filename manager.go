package buffstreams

import (
	"context"
	"errors"
	"sync"
)

// Manager keeps listeners and dialed connections by address, so that code
// can write to an address without holding a connection. It is safe for
// concurrent use. Its locks guard only its maps, never a network operation:
// writes to different addresses run in parallel, and a slow dial, write or
// broadcast on one address does not hold up the others, nor the opening and
// closing of other addresses.
//
// Everything a listener or a connection can do is reachable through it:
// replies, by a ConnCallback in the configuration given to StartListening;
// Broadcast to a listener's connections; ListenerStats and WriterStats;
// WriteBatch and Flush for connections in batching mode; and Listener and
// Writer for the rest (such as reading replies with Writer(address).Read or
// Messages).
type Manager struct {
	mu sync.RWMutex
	// The maps themselves never change, only their entries.
	listeners map[string]*slot[TCPListener] // guarded by mu
	writers   map[string]*slot[TCPConn]     // guarded by mu
}

// slot is a Manager entry. Its value is nil while the entry is being opened;
// the slot's identity tells an opener whether its reservation still stands.
type slot[T any] struct {
	v *T // guarded by Manager.mu
}

// NewManager returns an empty Manager.
func NewManager() *Manager {
	return &Manager{
		listeners: make(map[string]*slot[TCPListener]),
		writers:   make(map[string]*slot[TCPConn]),
	}
}

// reserve claims key in m for an entry about to be opened, or returns
// ErrAlreadyOpened.
func reserve[T any](mu *sync.RWMutex, m map[string]*slot[T], key string) (*slot[T], error) {
	mu.Lock()
	defer mu.Unlock()
	if _, ok := m[key]; ok {
		return nil, ErrAlreadyOpened
	}
	s := new(slot[T])
	m[key] = s
	return s, nil
}

// fillReservation fills the reservation s of key with v, or removes it if
// opening failed. It reports false if the reservation is gone because the Manager
// was closed meanwhile.
func fillReservation[T any](mu *sync.RWMutex, m map[string]*slot[T], key string, s *slot[T], v *T, err error) bool {
	mu.Lock()
	defer mu.Unlock()
	if m[key] != s {
		return false
	}
	if err != nil {
		delete(m, key)
	} else {
		s.v = v
	}
	return true
}

// lookup returns the open entry of key, or nil.
func lookup[T any](mu *sync.RWMutex, m map[string]*slot[T], key string) *T {
	mu.RLock()
	defer mu.RUnlock()
	if s := m[key]; s != nil {
		return s.v
	}
	return nil
}

// remove forgets the open entry of key and returns it, or returns nil if
// there is none (an entry still being opened stays).
func remove[T any](mu *sync.RWMutex, m map[string]*slot[T], key string) *T {
	mu.Lock()
	defer mu.Unlock()
	s := m[key]
	if s == nil || s.v == nil {
		return nil
	}
	delete(m, key)
	return s.v
}

// StartListening binds cfg.Address (on cfg.Network) and starts accepting on
// it in the background. It returns ErrAlreadyOpened if the Manager already
// listens on that address (as written in cfg.Address, which is also the key
// for Listener, Broadcast, ListenerStats and CloseListener). A server that
// replies sets cfg.ConnCallback and writes to the connection it is given.
func (m *Manager) StartListening(cfg TCPListenerConfig) error {
	s, err := reserve(&m.mu, m.listeners, cfg.Address)
	if err != nil {
		return err
	}
	l, err := ListenTCP(cfg)
	if err == nil {
		if err = l.StartListeningAsync(); err != nil {
			l.Close()
		}
	}
	if !fillReservation(&m.mu, m.listeners, cfg.Address, s, l, err) && err == nil {
		l.Close() // the Manager was closed meanwhile
		return errManagerClosed
	}
	return err
}

// errManagerClosed is returned by an open that Manager.Close overtook.
var errManagerClosed = errors.New("buffstreams: the Manager was closed while opening")

// Listener returns the listener on address, or nil if there is none.
func (m *Manager) Listener(address string) *TCPListener {
	return lookup(&m.mu, m.listeners, address)
}

// CloseListener closes the listener on address (see TCPListener.Close) and
// forgets it, so the address can be opened again. It returns ErrNotOpened
// if there is none. Like TCPListener.Close, it must not be called from the
// listener's callback.
func (m *Manager) CloseListener(address string) error {
	l := remove(&m.mu, m.listeners, address)
	if l == nil {
		return ErrNotOpened
	}
	l.Close()
	return nil
}

// Broadcast writes msg to every connection the listener on address serves,
// except the one given (nil for none), and returns how many got it; see
// TCPListener.Broadcast. It returns ErrNotOpened if the Manager has no
// listener on address (as written in the configuration given to
// StartListening). The Manager's lock is not held while writing, so a
// broadcast that waits for a slow peer holds up no other address; it may be
// called from a callback, for example to relay a message to the other
// clients.
func (m *Manager) Broadcast(address string, msg []byte, except *TCPConn) (int, error) {
	l := lookup(&m.mu, m.listeners, address)
	if l == nil {
		return 0, ErrNotOpened
	}
	return l.Broadcast(msg, except)
}

// ListenerStats returns a snapshot of the counters of the listener on
// address (see TCPListener.Stats), or ErrNotOpened if there is none. It does
// not block.
func (m *Manager) ListenerStats(address string) (ListenerStats, error) {
	l := lookup(&m.mu, m.listeners, address)
	if l == nil {
		return ListenerStats{}, ErrNotOpened
	}
	return l.Stats(), nil
}

// Dial connects to cfg.Address and keeps the connection for Write. It
// returns ErrAlreadyOpened if the Manager already has a connection to that
// address. It is DialContext with context.Background().
func (m *Manager) Dial(cfg *TCPConnConfig) error {
	return m.DialContext(context.Background(), cfg)
}

// DialContext is Dial with a context that bounds the first dial (see
// DialTCPContext). If the dial fails, the address is not kept and may be
// dialed again.
func (m *Manager) DialContext(ctx context.Context, cfg *TCPConnConfig) error {
	if cfg == nil {
		_, err := DialTCPContext(ctx, cfg)
		return err
	}
	s, err := reserve(&m.mu, m.writers, cfg.Address)
	if err != nil {
		return err
	}
	c, err := DialTCPContext(ctx, cfg)
	if !fillReservation(&m.mu, m.writers, cfg.Address, s, c, err) && err == nil {
		c.Close() // the Manager was closed meanwhile
		return errManagerClosed
	}
	return err
}

// Writer returns the connection to address, or nil if there is none.
func (m *Manager) Writer(address string) *TCPConn {
	return lookup(&m.mu, m.writers, address)
}

// Write sends data as one message to address, which must have been opened
// with Dial. It returns len(data) on success. After a failed Write, the next
// Write to the address dials again (see TCPConn.Write).
func (m *Manager) Write(address string, data []byte) (int, error) {
	c := lookup(&m.mu, m.writers, address)
	if c == nil {
		return 0, ErrNotOpened
	}
	return c.Write(data)
}

// WriteBatch sends msgs as separate messages, in order, to address, which
// must have been opened with Dial, and returns how many were written (in
// batching mode, accepted); see TCPConn.WriteBatch.
func (m *Manager) WriteBatch(address string, msgs [][]byte) (int, error) {
	c := lookup(&m.mu, m.writers, address)
	if c == nil {
		return 0, ErrNotOpened
	}
	return c.WriteBatch(msgs)
}

// Flush waits until every message written to address before it has reached
// the kernel, for a connection in batching mode (see TCPConn.Flush), and
// returns nil at once otherwise. It returns ErrNotOpened if the address was
// not opened with Dial.
func (m *Manager) Flush(address string) error {
	c := lookup(&m.mu, m.writers, address)
	if c == nil {
		return ErrNotOpened
	}
	return c.Flush()
}

// WriterStats returns a snapshot of the counters of the connection to
// address (see TCPConn.Stats), or ErrNotOpened if there is none. It does
// not block, even while a Write to address waits for a slow peer.
func (m *Manager) WriterStats(address string) (ConnStats, error) {
	c := lookup(&m.mu, m.writers, address)
	if c == nil {
		return ConnStats{}, ErrNotOpened
	}
	return c.Stats(), nil
}

// CloseWriter closes the connection to address and forgets it, so the
// address can be dialed again. It returns ErrNotOpened if there is none.
func (m *Manager) CloseWriter(address string) error {
	c := remove(&m.mu, m.writers, address)
	if c == nil {
		return ErrNotOpened
	}
	return c.Close()
}

// Close closes every connection, all at once, and then every listener of
// the Manager, and forgets them; opens in progress fail and close what they
// opened. It returns the errors of closing the connections, joined. It must
// not be called from a listener's callback.
func (m *Manager) Close() error {
	var ls []*TCPListener
	var ws []*TCPConn
	m.mu.Lock()
	for _, s := range m.listeners {
		if s.v != nil {
			ls = append(ls, s.v)
		}
	}
	for _, s := range m.writers {
		if s.v != nil {
			ws = append(ws, s.v)
		}
	}
	clear(m.listeners) // openers in progress see their reservation gone
	clear(m.writers)
	m.mu.Unlock()
	// Writers first: what they still buffer may be bound for one of the
	// Manager's own listeners, which reads it until the writer is closed;
	// and a writer closed after its peer reports the peer gone. They close
	// at once, each within its own bound (its WriteTimeout, or 10 s when
	// that is zero), since each may wait for acknowledgements: so the
	// slowest sets the time, not the sum.
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, c := range ws {
		wg.Go(func() { errs[i] = c.Close() })
	}
	wg.Wait()
	for _, l := range ls {
		l.Close()
	}
	return errors.Join(errs...)
}
