//go:build linux && !386

package buffstreams

import (
	"syscall"
	"unsafe"
)

// sendOne writes b on the socket fd with send(2).
func sendOne(fd uintptr, b []byte) (int, error) {
	r, _, e := syscall.Syscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
