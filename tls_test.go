package buffstreams_test

// TLS: round trips, mutual TLS, plaintext clients at a TLS listener, and
// certificates a client must refuse. The certificates are made here, with a
// test CA (ECDSA P-256), for 127.0.0.1.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bs "github.com/buffstreams/buffstreams"
)

// testPKI holds a CA and the certificates it signed, plus a client
// certificate it did not sign.
type testPKI struct {
	roots     *x509.CertPool  // trusts the CA
	server    tls.Certificate // for 127.0.0.1, ::1 and localhost
	expired   tls.Certificate // for 127.0.0.1, expired yesterday
	wrongHost tls.Certificate // for wrong.example only
	client    tls.Certificate // client authentication, signed by the CA
	rogue     tls.Certificate // client authentication, self-signed
}

var pkiOnce = sync.OnceValues(newPKI)

// pki returns the test certificates, made once per test binary.
func pki(t testing.TB) *testPKI {
	t.Helper()
	p, err := pkiOnce()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newPKI() (*testPKI, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "buffstreams test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl.SerialNumber = serial()
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if parent == nil { // self-signed
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, nil
	}
	serverAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	p := &testPKI{roots: x509.NewCertPool()}
	p.roots.AddCert(ca)
	for _, c := range []struct {
		dst    *tls.Certificate
		parent *x509.Certificate
		tmpl   *x509.Certificate
	}{
		{&p.server, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "server"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IPAddresses: loopback, DNSNames: []string{"localhost"}, ExtKeyUsage: serverAuth}},
		{&p.expired, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "expired"},
			NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour),
			IPAddresses: loopback, DNSNames: []string{"localhost"}, ExtKeyUsage: serverAuth}},
		{&p.wrongHost, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "wrong host"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			DNSNames: []string{"wrong.example"}, ExtKeyUsage: serverAuth}},
		{&p.client, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "buffstreams test client"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: clientAuth}},
		{&p.rogue, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "rogue client"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: clientAuth}},
	} {
		var parentKey *ecdsa.PrivateKey
		if c.parent != nil {
			parentKey = caKey
		}
		if *c.dst, err = leaf(c.parent, parentKey, c.tmpl); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// serverTLS returns a server configuration presenting cert.
func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// tlsRecorder is a ConnCallback that echoes every message and records it
// with the common name of the client certificate, if any.
type tlsRecorder struct {
	mu   sync.Mutex
	msgs []string
	cns  []string
	n    atomic.Int64
}

func (r *tlsRecorder) callback(conn *bs.TCPConn, p []byte) error {
	cn := "-"
	if st, ok := conn.ConnectionState(); ok && len(st.PeerCertificates) > 0 {
		cn = st.PeerCertificates[0].Subject.CommonName
	} else if !ok {
		cn = "not TLS"
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, string(p))
	r.cns = append(r.cns, cn)
	r.mu.Unlock()
	r.n.Add(1)
	_, err := conn.Write(p)
	return err
}

func (r *tlsRecorder) got() (msgs, cns []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...), append([]string(nil), r.cns...)
}

// TestTLSRoundTrip sends messages of every size class over TLS, in both
// modes, and reads the server's echoes; the client derives ServerName from
// the address and leaves its configuration untouched.
func TestTLSRoundTrip(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	const max = 64 << 10
	var rec tlsRecorder
	l := listen(t, bs.TCPListenerConfig{MaxMessageSize: max, Framing: bs.Uvarint,
		TLSConfig: serverTLS(p.server), ConnCallback: rec.callback})
	clientCfg := &tls.Config{RootCAs: p.roots}
	c := dial(t, l, bs.TCPConnConfig{MaxMessageSize: max, Framing: bs.Uvarint, TLSConfig: clientCfg, ReadTimeout: 10 * time.Second})
	if clientCfg.ServerName != "" {
		t.Errorf("DialTCP wrote ServerName %q into the caller's tls.Config", clientCfg.ServerName)
	}
	st, ok := c.ConnectionState()
	if !ok || !st.HandshakeComplete || len(st.PeerCertificates) == 0 ||
		!st.PeerCertificates[0].Equal(p.server.Leaf) {
		t.Fatalf("ConnectionState = %+v, %v: want a completed handshake with the server's certificate", st, ok)
	}
	buf := make([]byte, max)
	for _, n := range []int{0, 1, 127, 128, 4096, 16383, 16384, 16385, 40000, max} {
		msg := payload(n, n)
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("Write(%d bytes): %v", n, err)
		}
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("Read echo of %d bytes: %v", n, err)
		}
		if !bytes.Equal(buf[:k], msg) {
			t.Fatalf("echo of %d bytes came back as %d different bytes", n, k)
		}
	}

	// Batching mode over TLS, with an explicit ServerName.
	b := dial(t, l, bs.TCPConnConfig{MaxMessageSize: max, Framing: bs.Uvarint, WriteBufferSize: 8 << 10,
		TLSConfig: &tls.Config{RootCAs: p.roots, ServerName: "localhost"}})
	const batched = 500
	for i := range batched {
		if _, err := b.Write(payload(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the batched messages", func() bool { return rec.n.Load() == 10+batched })
	if st := b.Stats(); st.MessagesWritten != batched || st.WriteErrors != 0 {
		t.Fatalf("batching client stats %+v", st)
	}
	msgs, cns := rec.got()
	for i, m := range msgs[10:] {
		if m != string(payload(i, 100)) {
			t.Fatalf("batched message %d corrupted", i)
		}
	}
	if cns[0] != "-" {
		t.Errorf("server saw a client certificate %q, want none", cns[0])
	}

	// Reopen makes a new handshake.
	if err := c.Reopen(); err != nil {
		t.Fatal(err)
	}
	if st, ok := c.ConnectionState(); !ok || !st.HandshakeComplete {
		t.Fatal("no TLS state after Reopen")
	}
	if _, err := c.Write([]byte("after reopen")); err != nil {
		t.Fatal(err)
	}
	if k, err := c.Read(buf); err != nil || string(buf[:k]) != "after reopen" {
		t.Fatalf("echo after Reopen: %q, %v", buf[:k], err)
	}
	if st := l.Stats(); st.TLSErrors != 0 {
		t.Errorf("TLSErrors = %d, want 0", st.TLSErrors)
	}

	// A plain connection reports no TLS state.
	pl := listen(t, bs.TCPListenerConfig{Callback: func([]byte) error { return nil }})
	if _, ok := dial(t, pl, bs.TCPConnConfig{}).ConnectionState(); ok {
		t.Error("ConnectionState reports TLS on a plain connection")
	}
}

// TestTLSMutual requires client certificates signed by the test CA: a client
// presenting one is served and identified, a client without one or with a
// self-signed one is refused, and nothing it sends reaches the callback.
func TestTLSMutual(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	var rec tlsRecorder
	srv := serverTLS(p.server)
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = p.roots
	l := listen(t, bs.TCPListenerConfig{TLSConfig: srv, ConnCallback: rec.callback})

	good := dial(t, l, bs.TCPConnConfig{ReadTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client}}})
	if _, err := good.Write([]byte("with certificate")); err != nil {
		t.Fatal(err)
	}
	if _, err := recvOne(good); err != nil {
		t.Fatalf("echo to the client with a certificate: %v", err)
	}

	refused := 0
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no certificate", nil},
		{"self-signed certificate", &p.rogue},
	} {
		ccfg := &tls.Config{RootCAs: p.roots}
		if tc.cert != nil {
			// Presented whatever CAs the server names, so that the server
			// has to verify it.
			ccfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tc.cert, nil }
		}
		cfg := bs.TCPConnConfig{Address: l.Addr().String(), ReadTimeout: 10 * time.Second, TLSConfig: ccfg}
		c, err := bs.DialTCP(&cfg)
		if err == nil {
			// With TLS 1.3 the client finishes its handshake before the
			// server has checked its certificate: the refusal arrives as an
			// alert on the first read.
			_, _ = c.Write([]byte("must not arrive")) // may already fail: the Read below says why
			_, err = recvOne(c)
			c.Close()
		}
		var ne net.Error
		switch {
		case err == nil:
			t.Errorf("%s: the server answered", tc.name)
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("%s: no refusal within 10 s: %v", tc.name, err)
		default:
			refused++
			t.Logf("%s: refused: %v", tc.name, err)
		}
	}
	eventually(t, "TLS errors counted", func() bool { return l.Stats().TLSErrors == uint64(refused) })
	if _, err := good.Write([]byte("still served")); err != nil {
		t.Fatal(err)
	}
	if _, err := recvOne(good); err != nil {
		t.Fatal(err)
	}
	msgs, cns := rec.got()
	if len(msgs) != 2 || msgs[0] != "with certificate" || msgs[1] != "still served" {
		t.Fatalf("callback got %q, want only the messages of the client with a certificate", msgs)
	}
	for _, cn := range cns {
		if cn != "buffstreams test client" {
			t.Errorf("server saw client %q, want the common name of the client certificate", cn)
		}
	}
}

// TestTLSPlaintextRejected sends plaintext frames, and nothing at all, to a
// TLS listener while a TLS client streams: the plaintext connections are
// closed and counted in TLSErrors, the silent one after HandshakeTimeout,
// and the TLS client loses nothing.
func TestTLSPlaintextRejected(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	var rec tlsRecorder
	const handshakeTimeout = 300 * time.Millisecond
	l := listen(t, bs.TCPListenerConfig{TLSConfig: serverTLS(p.server), HandshakeTimeout: handshakeTimeout,
		ConnCallback: func(conn *bs.TCPConn, p []byte) error { rec.n.Add(1); return nil }})
	tc := dial(t, l, bs.TCPConnConfig{TLSConfig: &tls.Config{RootCAs: p.roots}})
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 200_000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := tc.Write(payload(i, 64)); err != nil {
				t.Error(err)
				return
			}
			sent.Add(1)
			if i%32 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	eventually(t, "TLS traffic", func() bool { return rec.n.Load() > 100 })

	// A plaintext buffstreams client: its frame is not a TLS record.
	pc := dial(t, l, bs.TCPConnConfig{ReadTimeout: 10 * time.Second})
	if _, err := pc.Write([]byte("plaintext")); err != nil {
		t.Fatal(err)
	}
	if _, err := recvOne(pc); err == nil || isTimeout(err) {
		t.Fatalf("plaintext client: read %v, want the connection closed", err)
	}
	eventually(t, "the plaintext client counted", func() bool { return l.Stats().TLSErrors == 1 })

	// A client that connects and says nothing is closed after HandshakeTimeout.
	silent := rawDial(t, l.Addr())
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent client: read %v, want the connection closed", err)
	}
	if d := time.Since(start); d < handshakeTimeout-10*time.Millisecond || d > handshakeTimeout+5*time.Second {
		t.Errorf("silent client closed after %v, want HandshakeTimeout (%v)", d, handshakeTimeout)
	}
	eventually(t, "the silent client counted", func() bool { return l.Stats().TLSErrors == 2 })

	mark := rec.n.Load()
	eventually(t, "TLS traffic after the rejections", func() bool { return rec.n.Load() > mark+100 })
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	eventually(t, "every TLS message", func() bool { return rec.n.Load() == sent.Load() })
	// The read loop publishes its counts after the callbacks return.
	eventually(t, "the TLS client alone active, with every message counted", func() bool {
		st := l.Stats()
		return st.Active == 1 && st.Messages == uint64(sent.Load())
	})
}

// TestTLSBadCertificates checks that DialTCP refuses an expired certificate,
// one for another host and one from an unknown CA, with the x509 error, and
// that the listener counts each failed handshake.
func TestTLSBadCertificates(t *testing.T) {
	leakCheck(t)
	p := pki(t)
	for _, tc := range []struct {
		name  string
		cert  tls.Certificate
		roots *x509.CertPool
		check func(error) bool
	}{
		{"expired", p.expired, p.roots, func(err error) bool {
			var e x509.CertificateInvalidError
			return errors.As(err, &e) && e.Reason == x509.Expired
		}},
		{"wrong host", p.wrongHost, p.roots, func(err error) bool {
			var e x509.HostnameError
			return errors.As(err, &e) && e.Host == "127.0.0.1"
		}},
		{"unknown authority", p.server, x509.NewCertPool(), func(err error) bool {
			var e x509.UnknownAuthorityError
			return errors.As(err, &e)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			l := listen(t, bs.TCPListenerConfig{TLSConfig: serverTLS(tc.cert),
				Callback: func([]byte) error { calls.Add(1); return nil }})
			c, err := bs.DialTCP(&bs.TCPConnConfig{Address: l.Addr().String(), DialTimeout: 10 * time.Second,
				TLSConfig: &tls.Config{RootCAs: tc.roots}})
			if err == nil {
				c.Close()
				t.Fatal("DialTCP accepted the certificate")
			}
			if !tc.check(err) {
				t.Fatalf("DialTCP: %v (%T), want the x509 error", err, errors.Unwrap(err))
			}
			// The read loop counts the failed handshake, then drops the
			// connection: wait for both rather than assume the order.
			eventually(t, "the failed handshake counted and the connection gone", func() bool {
				st := l.Stats()
				return st.TLSErrors == 1 && st.Active == 0
			})
			if st := l.Stats(); st.TLSErrors != 1 || st.Active != 0 || calls.Load() != 0 {
				t.Fatalf("stats %+v, %d callbacks: want the connection gone", st, calls.Load())
			}
		})
	}
}

// recvOne reads one message from c.
func recvOne(c *bs.TCPConn) (string, error) {
	buf := make([]byte, c.MaxMessageSize())
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// isTimeout reports whether err is a timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
