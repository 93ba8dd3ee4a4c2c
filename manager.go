package buffstreams

import (
	"errors"
	"net"
	"sync"
)

// Manager keeps listeners and dialed connections by address, so that code
// can write to an address without holding a connection. It is safe for
// concurrent use. Its locks guard only its maps, never a network operation:
// writes to different addresses run in parallel, and a slow dial or write to
// one address does not hold up the others.
type Manager struct {
	mu sync.RWMutex
	// The maps themselves never change, only their entries.
	listeners map[string]*TCPListener // nil value: being opened; guarded by mu
	writers   map[string]*TCPConn     // nil value: being dialed; guarded by mu
}

// NewManager returns an empty Manager.
func NewManager() *Manager {
	return &Manager{
		listeners: make(map[string]*TCPListener),
		writers:   make(map[string]*TCPConn),
	}
}

// reserve claims key in m for an entry being opened, or returns
// ErrAlreadyOpened. mu is held.
func reserve[T any](m map[string]*T, key string) error {
	if _, ok := m[key]; ok {
		return ErrAlreadyOpened
	}
	m[key] = nil
	return nil
}

// settle replaces the reservation of key with v, or removes it if opening
// failed. It reports false if the reservation is gone because the Manager
// was closed meanwhile.
func settle[T any](mu *sync.RWMutex, m map[string]*T, key string, v *T, err error) bool {
	mu.Lock()
	defer mu.Unlock()
	if old, ok := m[key]; !ok || old != nil {
		return false
	}
	if err != nil {
		delete(m, key)
	} else {
		m[key] = v
	}
	return true
}

// StartListening binds cfg.Address and starts accepting on it in the
// background. It returns ErrAlreadyOpened if the Manager already listens on
// that address (as written in cfg.Address).
func (m *Manager) StartListening(cfg TCPListenerConfig) error {
	m.mu.Lock()
	err := reserve(m.listeners, cfg.Address)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	l, err := ListenTCP(cfg)
	if err == nil {
		err = l.StartListeningAsync()
	}
	if !settle(&m.mu, m.listeners, cfg.Address, l, err) && err == nil {
		l.Close() // the Manager was closed meanwhile
		return net.ErrClosed
	}
	return err
}

// Listener returns the listener on address, or nil if there is none.
func (m *Manager) Listener(address string) *TCPListener {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.listeners[address]
}

// CloseListener closes the listener on address (see TCPListener.Close) and
// forgets it, so the address can be opened again. It returns ErrNotOpened
// if there is none.
func (m *Manager) CloseListener(address string) error {
	m.mu.Lock()
	l := m.listeners[address]
	if l != nil {
		delete(m.listeners, address)
	}
	m.mu.Unlock()
	if l == nil {
		return ErrNotOpened
	}
	l.Close()
	return nil
}

// Dial connects to cfg.Address and keeps the connection for Write. It
// returns ErrAlreadyOpened if the Manager already has a connection to that
// address.
func (m *Manager) Dial(cfg *TCPConnConfig) error {
	if cfg == nil {
		_, err := DialTCP(cfg)
		return err
	}
	m.mu.Lock()
	err := reserve(m.writers, cfg.Address)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	c, err := DialTCP(cfg)
	if !settle(&m.mu, m.writers, cfg.Address, c, err) && err == nil {
		c.Close() // the Manager was closed meanwhile
		return net.ErrClosed
	}
	return err
}

// Writer returns the connection to address, or nil if there is none.
func (m *Manager) Writer(address string) *TCPConn {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.writers[address]
}

// Write sends data as one message to address, which must have been opened
// with Dial. It returns len(data) on success. After a failed Write, the next
// Write to the address dials again (see TCPConn.Write).
func (m *Manager) Write(address string, data []byte) (int, error) {
	m.mu.RLock()
	c := m.writers[address]
	m.mu.RUnlock()
	if c == nil {
		return 0, ErrNotOpened
	}
	return c.Write(data)
}

// CloseWriter closes the connection to address and forgets it, so the
// address can be dialed again. It returns ErrNotOpened if there is none.
func (m *Manager) CloseWriter(address string) error {
	m.mu.Lock()
	c := m.writers[address]
	if c != nil {
		delete(m.writers, address)
	}
	m.mu.Unlock()
	if c == nil {
		return ErrNotOpened
	}
	return c.Close()
}

// Close closes every listener and connection of the Manager and forgets
// them. It returns the errors of closing the connections, joined.
func (m *Manager) Close() error {
	var ls []*TCPListener
	var ws []*TCPConn
	m.mu.Lock()
	for _, l := range m.listeners {
		if l != nil {
			ls = append(ls, l)
		}
	}
	for _, c := range m.writers {
		if c != nil {
			ws = append(ws, c)
		}
	}
	clear(m.listeners) // entries being opened see their reservation gone
	clear(m.writers)
	m.mu.Unlock()
	var errs []error
	for _, l := range ls {
		l.Close()
	}
	for _, c := range ws {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
