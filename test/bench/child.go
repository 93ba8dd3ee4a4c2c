package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// A childProc is this program re-executed with an environment variable
// that gives it its role, driven by lines on its stdin and answering with
// lines on its stdout.
type childProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string // the child's stdout, line by line; closed at its end
}

// startChildProc starts this program with env=1 in its environment; role
// names the child in errors, and buffered is how many lines of its output
// may wait to be read.
func startChildProc(env, role string, buffered int) (*childProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s: %w", role, err)
	}
	c := &childProc{cmd: cmd, in: in, lines: make(chan string, buffered)}
	go func() { // ends when the child's stdout closes, which its owner waits for
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c, nil
}

// finish closes the child's stdin, waits up to 10 seconds for its output to
// end, killing it if it does not, and then for the process. It reports
// whether it had to kill it, and the error of the wait.
func (c *childProc) finish() (killed bool, err error) {
	c.in.Close()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for drained := false; !drained; {
		select {
		case _, ok := <-c.lines:
			drained = !ok
		case <-t.C:
			c.cmd.Process.Kill()
			killed = true
			t.Reset(time.Hour)
		}
	}
	return killed, c.cmd.Wait()
}
