//go:build !linux

package buffstreams

import (
	"syscall"
	"time"
)

// setUserTimeout reports false: outside Linux the write deadline bounds a
// stall (see stall.go).
func setUserTimeout(rc syscall.RawConn, d time.Duration) bool { return false }
