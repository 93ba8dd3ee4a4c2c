//go:build !linux

package main

import (
	"errors"
	"net"
)

// corkSupported reports whether the cork transport runs on this system:
// TCP_CORK is Linux's.
const corkSupported = false

func setCork(net.Conn, bool) error { return errors.New("TCP_CORK is Linux-only") }
