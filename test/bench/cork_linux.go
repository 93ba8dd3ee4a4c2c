package main

import (
	"net"
	"syscall"
)

// corkSupported reports whether the cork transport runs on this system.
const corkSupported = true

// setCork sets or clears TCP_CORK on c: while it is set, the kernel holds
// what is written until it fills a segment.
func setCork(c net.Conn, on bool) error {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	v := 0
	if on {
		v = 1
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
	}); err != nil {
		return err
	}
	return serr
}
