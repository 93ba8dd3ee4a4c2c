package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
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
