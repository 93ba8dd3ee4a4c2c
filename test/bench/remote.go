package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// receiverChildEnv, set in the environment, makes this program the server
// of one cross-process cell: it serves one transport on 127.0.0.1 and
// answers the parent's commands on stdin (see runReceiverChild).
const receiverChildEnv = "BUFFSTREAMS_BENCH_RECEIVER"

// pollInterval is how often the end waiting for delivery looks at the
// server's counts. It costs one Received call per interval; the interval is
// far below the precision that matters for cells of seconds.
const pollInterval = 20 * time.Microsecond

// usage is what a process has used so far.
type usage struct {
	cpu     time.Duration // user + system (zero where cpuMeasured is false)
	mallocs uint64        // heap allocations (runtime.MemStats.Mallocs)
}

// readUsage returns this process's usage so far.
func readUsage() usage {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{cpu: cpuTime(), mallocs: ms.Mallocs}
}

func (u usage) sub(v usage) usage { return usage{u.cpu - v.cpu, u.mallocs - v.mallocs} }
func (u usage) add(v usage) usage { return usage{u.cpu + v.cpu, u.mallocs + v.mallocs} }

// endStat is what a cell's server has received so far, and the usage of
// its process where that is not this one (zero otherwise: this process's
// own usage is measured around the cell).
type endStat struct {
	msgs, bytes uint64
	use         usage
}

// An end is a cell's server as the measuring code sees it: in this process
// or in a child.
type end interface {
	// addr is the server's address, to dial.
	addr() string
	// stat returns what the server has received so far.
	stat() (endStat, error)
	// await waits until the server has received at least target messages,
	// or for timeout, and returns what it has received then.
	await(target uint64, timeout time.Duration) (endStat, error)
	// Close closes the server and returns once it is gone.
	Close() error
}

// localEnd is a server in this process.
type localEnd struct{ srv server }

func (l localEnd) addr() string { return l.srv.Addr() }

func (l localEnd) stat() (endStat, error) {
	m, b := l.srv.Received()
	return endStat{msgs: m, bytes: b}, nil
}

// await polls the server's counts every pollInterval.
func (l localEnd) await(target uint64, timeout time.Duration) (endStat, error) {
	deadline := time.Now().Add(timeout)
	for {
		m, b := l.srv.Received()
		if m >= target || time.Now().After(deadline) {
			return endStat{msgs: m, bytes: b}, nil
		}
		time.Sleep(pollInterval)
	}
}

func (l localEnd) Close() error { return l.srv.Close() }

// childEnd is a server in a child process: this program, re-executed with
// receiverChildEnv set, driven by lines on its stdin and answering on its
// stdout.
type childEnd struct {
	*childProc
	address string
}

// startChild starts a child serving transport name for payloads of size
// bytes, and returns once it listens.
func startChild(name string, size int) (*childEnd, error) {
	p, err := startChildProc(receiverChildEnv, "receiver process", 4)
	if err != nil {
		return nil, err
	}
	c := &childEnd{childProc: p}
	if c.address, err = c.ask(fmt.Sprintf("serve %s %d", name, size), "addr ", 10*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *childEnd) addr() string { return c.address }

// ask sends a command line and returns the rest of the answer, a line that
// starts with prefix. An "error " line is returned as an error.
func (c *childEnd) ask(cmd, prefix string, timeout time.Duration) (string, error) {
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return "", fmt.Errorf("receiver process: %s: %w", cmd, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("receiver process: exited instead of answering %q", cmd)
		}
		if rest, found := strings.CutPrefix(l, prefix); found {
			return rest, nil
		}
		if rest, found := strings.CutPrefix(l, "error "); found {
			return "", errors.New(rest)
		}
		return "", fmt.Errorf("receiver process: answered %q to %q", l, cmd)
	case <-t.C:
		return "", fmt.Errorf("receiver process: no answer to %q within %v", cmd, timeout)
	}
}

func (c *childEnd) stat() (endStat, error) {
	l, err := c.ask("stat", "stat ", 10*time.Second)
	if err != nil {
		return endStat{}, err
	}
	return parseStat(l)
}

func (c *childEnd) await(target uint64, timeout time.Duration) (endStat, error) {
	l, err := c.ask(fmt.Sprintf("await %d %d", target, timeout), "stat ", timeout+10*time.Second)
	if err != nil {
		return endStat{}, err
	}
	return parseStat(l)
}

// Close asks the child to close its server and exit, kills it if it does
// not within 10 seconds, and waits for it and for the goroutine reading its
// output. It returns the server's error, if any.
func (c *childEnd) Close() error {
	var err error
	if c.address != "" { // it serves
		_, err = c.ask("close", "closed", 10*time.Second)
	}
	killed, werr := c.finish()
	switch {
	case killed:
		return errors.Join(err, errors.New("the receiver process did not exit within 10 s and was killed"))
	case werr != nil:
		return errors.Join(err, fmt.Errorf("receiver process: %w", werr))
	}
	return err
}

// statLine formats an endStat for parseStat.
func statLine(s endStat) string {
	return fmt.Sprintf("%d %d %d %d", s.msgs, s.bytes, int64(s.use.cpu), s.use.mallocs)
}

func parseStat(l string) (endStat, error) {
	f := strings.Fields(l)
	if len(f) != 4 {
		return endStat{}, fmt.Errorf("receiver process: bad stat %q", l)
	}
	var v [4]uint64
	for i, s := range f {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return endStat{}, fmt.Errorf("receiver process: bad stat %q: %w", l, err)
		}
		v[i] = n
	}
	return endStat{msgs: v[0], bytes: v[1], use: usage{cpu: time.Duration(v[2]), mallocs: v[3]}}, nil
}

// runReceiverChild is the child's main. Its first command is
// "serve TRANSPORT SIZE": it starts that transport's server on 127.0.0.1:0
// and prints "addr ADDRESS". Then it answers, each with one line:
//
//	stat               stat MSGS BYTES CPU_NS MALLOCS
//	await TARGET NS    the same, once MSGS >= TARGET or after NS nanoseconds
//	close              closed, once the server is closed; then it exits
//
// CPU_NS and MALLOCS are this process's usage so far. A failure is answered
// with "error TEXT". The end of its input closes the server too. SIGINT and
// SIGTERM are ignored: the parent ends the child when it stops.
func runReceiverChild() int {
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	sc := bufio.NewScanner(os.Stdin)
	fail := func(format string, args ...any) int {
		fmt.Printf("error "+format+"\n", args...)
		return 1
	}
	if !sc.Scan() {
		return 1
	}
	f := strings.Fields(sc.Text())
	if len(f) != 3 || f[0] != "serve" {
		return fail("want serve TRANSPORT SIZE, got %q", sc.Text())
	}
	size, err := strconv.Atoi(f[2])
	if err != nil || size < 0 || size > maxMessageSize {
		return fail("bad size %q", f[2])
	}
	name := f[1]
	ts, err := selectTransports(newTransports(options{}), name)
	if err != nil {
		return fail("%v", err)
	}
	srv, err := ts[0].Serve(size)
	if err != nil {
		return fail("%s server: %v", name, err)
	}
	loc := localEnd{srv}
	fmt.Printf("addr %s\n", srv.Addr())
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "stat" && len(f) == 1:
			st, _ := loc.stat()
			st.use = readUsage()
			fmt.Printf("stat %s\n", statLine(st))
		case f[0] == "await" && len(f) == 3:
			target, err1 := strconv.ParseUint(f[1], 10, 64)
			ns, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				fmt.Printf("error bad command %q\n", sc.Text())
				continue
			}
			st, _ := loc.await(target, time.Duration(ns))
			st.use = readUsage()
			fmt.Printf("stat %s\n", statLine(st))
		case f[0] == "close" && len(f) == 1:
			if err := srv.Close(); err != nil {
				return fail("%s server: %v", name, err)
			}
			fmt.Println("closed")
			return 0
		default:
			fmt.Printf("error bad command %q\n", sc.Text())
		}
	}
	if err := srv.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "bench receiver: %s server: %v\n", name, err)
		return 1
	}
	return 0
}
