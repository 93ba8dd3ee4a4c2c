package buffstreams

import "syscall"

// sendOne writes b on the socket fd. On 386 send(2) goes through
// socketcall, which the syscall package does not expose: write(2) it is.
func sendOne(fd uintptr, b []byte) (int, error) { return syscall.Write(int(fd), b) }
