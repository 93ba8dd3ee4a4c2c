package buffstreams

import "syscall"

// corkSupported: Linux's TCP_CORK holds partial segments until the cork is
// taken off (which sends them) or 200 ms pass.
const corkSupported = true

// setCork sets TCP_CORK on the socket fd to v (1 or 0).
func setCork(fd uintptr, v int) error {
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
}
