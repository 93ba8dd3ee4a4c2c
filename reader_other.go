//go:build !unix

package buffstreams

import "io"

// rawReader is only used on Unix systems; elsewhere connections read
// through their Read method and keep their buffer while idle.
type rawReader struct{}

func newRawReader(io.Reader) *rawReader { return nil }

func (*rawReader) readInto(*frameReader) (int, error) { panic("unreachable") }
