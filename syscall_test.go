package buffstreams_test

import "syscall"

// syscallReset is the error of reading a connection the peer reset.
var syscallReset = syscall.ECONNRESET
