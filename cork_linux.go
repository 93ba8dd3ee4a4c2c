package buffstreams

import "syscall"

// corkSupported: Linux's TCP_CORK holds partial segments until the cork is
// taken off (which sends them) or 200 ms pass.
const corkSupported = true

// setCork sets or clears TCP_CORK on rc.
func setCork(rc syscall.RawConn, on bool) error {
	v := 0
	if on {
		v = 1
	}
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
	}); cerr != nil {
		return cerr
	}
	return err
}
