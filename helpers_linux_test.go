package buffstreams_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// requireNetnsEnv, set to 1, makes the tests that need network namespaces
// fail rather than skip where they cannot make them (.ci/run sets it).
const requireNetnsEnv = "BUFFSTREAMS_REQUIRE_NETNS"

// A netns is a network namespace of its own, entered by one locked thread
// that runs the functions given to do: the sockets they make stay in it.
type netns struct {
	name string
	fns  chan func()
	done chan struct{}
}

// newNetns makes a network namespace and names it for ip(8).
func newNetns(name string) (*netns, error) {
	n := &netns{name: name, fns: make(chan func()), done: make(chan struct{})}
	tid := make(chan int, 1)
	errc := make(chan error, 1)
	go func() {
		defer close(n.done)
		// Never unlocked: the thread, in the namespace, ends with the
		// goroutine instead of running other goroutines.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		tid <- syscall.Gettid()
		for f := range n.fns {
			f()
		}
	}()
	select {
	case err := <-errc:
		return nil, err
	case id := <-tid:
		if out, err := exec.Command("ip", "netns", "attach", name, strconv.Itoa(id)).CombinedOutput(); err != nil {
			n.close()
			return nil, fmt.Errorf("ip netns attach: %v: %s", err, out)
		}
	}
	return n, nil
}

// do runs f in the namespace.
func (n *netns) do(f func()) {
	ran := make(chan struct{})
	n.fns <- func() { f(); close(ran) }
	<-ran
}

// dial is a DialContext that dials from the namespace.
func (n *netns) dial(ctx context.Context, network, addr string) (nc net.Conn, err error) {
	n.do(func() {
		var d net.Dialer
		nc, err = d.DialContext(ctx, network, addr)
	})
	return nc, err
}

func (n *netns) close() {
	close(n.fns)
	<-n.done
	exec.Command("ip", "netns", "delete", n.name).Run()
}

// A partition is two network namespaces, a and b, joined by a veth pair,
// whose link can be taken down and up again, as a cable or a cloud network
// that fails.
type partition struct {
	t     testing.TB
	a, b  *netns
	addrA string // a's address
	addrB string // b's address
	linkB string // b's end of the veth pair
}

var partitions atomic.Int64

// newPartition makes a partition, or skips the test with the reason where
// namespaces cannot be made: not root, or no ip(8).
func newPartition(t *testing.T) *partition {
	t.Helper()
	skip := t.Skipf
	if os.Getenv(requireNetnsEnv) == "1" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("network namespaces need root: run as root (.ci/run does), with ip(8) from iproute2")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skip("network namespaces need ip(8): install iproute2 (.ci/run does)")
	}
	k := partitions.Add(1)
	tag := fmt.Sprintf("bs%dx%d", os.Getpid()%100000, k) // with a or b: at most 15 bytes, as a link's name must be
	p := &partition{t: t, addrA: fmt.Sprintf("10.213.%d.1", k%250), addrB: fmt.Sprintf("10.213.%d.2", k%250), linkB: tag + "b"}
	var err error
	if p.a, err = newNetns(tag + "a"); err != nil {
		skip("cannot make a network namespace: %v", err)
	}
	t.Cleanup(p.a.close)
	if p.b, err = newNetns(tag + "b"); err != nil {
		skip("cannot make a network namespace: %v", err)
	}
	t.Cleanup(p.b.close)
	p.ip("-n", p.a.name, "link", "add", tag+"a", "type", "veth", "peer", "name", p.linkB, "netns", p.b.name)
	p.ip("-n", p.a.name, "addr", "add", p.addrA+"/30", "dev", tag+"a")
	p.ip("-n", p.b.name, "addr", "add", p.addrB+"/30", "dev", p.linkB)
	p.ip("-n", p.a.name, "link", "set", tag+"a", "up")
	p.ip("-n", p.b.name, "link", "set", p.linkB, "up")
	return p
}

// ip runs ip(8) with args and fails the test if it fails.
func (p *partition) ip(args ...string) {
	p.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		p.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// down cuts the link at b's end.
func (p *partition) down() { p.ip("-n", p.b.name, "link", "set", p.linkB, "down") }

// up mends the link; it may be called from any goroutine.
func (p *partition) up() {
	if out, err := exec.Command("ip", "-n", p.b.name, "link", "set", p.linkB, "up").CombinedOutput(); err != nil {
		p.t.Errorf("ip link set up: %v: %s", err, out)
	}
}

// listen listens on b's address, in b.
func (p *partition) listen() net.Listener {
	p.t.Helper()
	var ln net.Listener
	var err error
	p.b.do(func() { ln, err = net.Listen("tcp", net.JoinHostPort(p.addrB, "0")) })
	if err != nil {
		p.t.Fatal(err)
	}
	return ln
}
