//go:build linux && !386

package buffstreams

import (
	"encoding/binary"
	"syscall"
	"unsafe"
)

// segsOut returns tcpi_segs_out, the segments TCP socket fd has sent, or
// -1 if this kernel's tcp_info does not have it (before Linux 4.2).
func segsOut(fd uintptr) (int, error) {
	var info [256]byte
	n := uint32(len(info))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0, errno
	}
	if n < 140 {
		return -1, nil
	}
	return int(binary.NativeEndian.Uint32(info[136:])), nil
}
