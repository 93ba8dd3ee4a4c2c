//go:build !race

package buffstreams_test

// raceEnabled is set when the race detector is on: it makes sync.Pool drop
// a share of what is put back, so allocation counts mean nothing.
const raceEnabled = false
