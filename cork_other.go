//go:build !linux

package buffstreams

// corkSupported: elsewhere every Write leaves as its own segment. The BSDs'
// TCP_NOPUSH is not used: whether clearing it sends what it held differs
// between systems, and no test here can tell.
const corkSupported = false

func setCork(uintptr, int) error { return nil }
