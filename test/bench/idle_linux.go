package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/buffstreams/buffstreams"
)

// idleDialers is how many goroutines dial the idle connections.
const idleDialers = 16

// idleSettle bounds the wait for the child to serve every connection.
const idleSettle = 60 * time.Second

// runIdle opens n connections to a listener in a child process, each sending
// one message, and measures the child's resident memory before and after.
func runIdle(ctx context.Context, n int) (res idleResult) {
	res.Conns = n
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		res.Skipped = "getrlimit: " + err.Error()
		return res
	}
	// Raising the limit explicitly (rather than relying on the runtime,
	// which raises it for this process only) makes the child inherit it.
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			res.Skipped = "setrlimit: " + err.Error()
			return res
		}
	}
	if need := uint64(n) + 256; lim.Cur < need {
		res.Skipped = fmt.Sprintf("RLIMIT_NOFILE is %d (hard limit %d); %d connections need about %d open files in each process", lim.Cur, lim.Max, n, need)
		return res
	}

	child, err := startIdleChild()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() {
		if err := child.stop(); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}()
	addr, err := child.expect("addr ", 10*time.Second)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if res.RSSBefore, err = child.rssAfterGC(); err != nil {
		res.Error = err.Error()
		return res
	}

	conns, err := dialIdle(ctx, addr, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if err := child.settle(ctx, n); err != nil {
		res.Error = err.Error()
		return res
	}
	// Stats count a message before its read loop goes back to waiting;
	// give the last loops a moment to park.
	time.Sleep(200 * time.Millisecond)
	if res.RSSAfter, err = child.rssAfterGC(); err != nil {
		res.Error = err.Error()
		return res
	}
	res.BytesPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(n)
	return res
}

// dialIdle opens n connections to addr, each sending one framed message of
// idleMsgSize bytes in the listener's default framing, and returns them.
func dialIdle(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	frame := append(bs2Header(idleMsgSize, bs2Width(buffstreams.DefaultMaxMessageSize)), payload(idleMsgSize)...)
	conns := make([]net.Conn, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	d := net.Dialer{Timeout: 10 * time.Second}
	for range idleDialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					conns[i] = c
					_, err = c.Write(frame)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return conns, firstErr
}

// idleChild is the child process, driven by lines on its stdin: "stats"
// prints the listener's connections and messages, "gc" collects garbage and
// returns freed memory to the system, "quit" exits.
type idleChild struct {
	*childProc
}

func startIdleChild() (*idleChild, error) {
	p, err := startChildProc(idleChildEnv, "idle-memory child", 16)
	if err != nil {
		return nil, err
	}
	return &idleChild{p}, nil
}

// send writes a command line to the child.
func (c *idleChild) send(cmd string) error {
	_, err := io.WriteString(c.in, cmd+"\n")
	return err
}

// expect returns the rest of the child's next line that starts with prefix.
func (c *idleChild) expect(prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("the idle-memory child exited while %q was expected", prefix)
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return rest, nil
			}
		case <-t.C:
			return "", fmt.Errorf("the idle-memory child printed no %q line within %v", prefix, timeout)
		}
	}
}

// rssAfterGC makes the child collect its garbage and return it to the
// system, then reads its VmRSS.
func (c *idleChild) rssAfterGC() (int64, error) {
	if err := c.send("gc"); err != nil {
		return 0, err
	}
	if _, err := c.expect("gc ", 10*time.Second); err != nil {
		return 0, err
	}
	return vmRSS(c.cmd.Process.Pid)
}

// settle waits until the child serves n connections and has received n
// messages.
func (c *idleChild) settle(ctx context.Context, n int) error {
	deadline := time.Now().Add(idleSettle)
	for {
		if err := c.send("stats"); err != nil {
			return err
		}
		line, err := c.expect("stats ", 10*time.Second)
		if err != nil {
			return err
		}
		var conns, active, msgs, bad int
		if _, err := fmt.Sscanf(line, "conns=%d active=%d messages=%d badinput=%d", &conns, &active, &msgs, &bad); err != nil {
			return fmt.Errorf("idle-memory child: %q: %w", line, err)
		}
		switch {
		case bad > 0:
			return fmt.Errorf("idle-memory child: %d connections closed for bad input", bad)
		case conns == n && active == n && msgs == n:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().After(deadline):
			return fmt.Errorf("after %v the child serves %d connections (%d active) and received %d messages, want %d", idleSettle, conns, active, msgs, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop asks the child to exit, kills it if it does not within 10 seconds,
// and waits for it and for the goroutine reading its output.
func (c *idleChild) stop() error {
	c.send("quit")
	killed, err := c.finish()
	if killed {
		return errors.New("the idle-memory child did not exit within 10 s of quit and was killed")
	}
	if err != nil {
		return fmt.Errorf("idle-memory child: %w", err)
	}
	return nil
}

// vmRSS returns the resident set size of process pid, in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// runIdleChild is the child's main: a listener with the default
// configuration and a callback that does nothing, on 127.0.0.1:0. It prints
// "addr ADDRESS", then answers the commands of idleChild until "quit" or
// the end of its input.
func runIdleChild() int {
	ln, err := buffstreams.ListenTCP(buffstreams.TCPListenerConfig{
		Address:  "127.0.0.1:0",
		Callback: func([]byte) error { return nil },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench idle child:", err)
		return 1
	}
	defer ln.Close()
	if err := ln.StartListeningAsync(); err != nil {
		fmt.Fprintln(os.Stderr, "bench idle child:", err)
		return 1
	}
	fmt.Printf("addr %s\n", ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "stats":
			st := ln.Stats()
			fmt.Printf("stats conns=%d active=%d messages=%d badinput=%d\n", ln.Conns(), st.Active, st.Messages, st.BadInput)
		case "gc":
			runtime.GC()
			debug.FreeOSMemory()
			fmt.Printf("gc goroutines=%d\n", runtime.NumGoroutine())
		case "quit":
			return 0
		}
	}
	return 0
}
