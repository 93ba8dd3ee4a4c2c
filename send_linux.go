//go:build linux && !386

package buffstreams

import (
	"syscall"
	"unsafe"
)

// sendOne writes b on the socket fd with send(2), without SIGPIPE when the
// peer has reset it (the error says so).
func sendOne(fd uintptr, b []byte) (int, error) {
	r, _, e := syscall.Syscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
