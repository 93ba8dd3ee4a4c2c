package main

import "fmt"

// idleChildEnv, set in the environment, makes this program the child of the
// idle-memory section: a buffstreams listener driven through stdin.
const idleChildEnv = "BUFFSTREAMS_BENCH_IDLE_CHILD"

// idleMsgSize is the payload each idle connection sends once.
const idleMsgSize = 110

// idleResult is the outcome of the idle-memory section.
type idleResult struct {
	Conns        int     `json:"conns"`
	RSSBefore    int64   `json:"rss_before"` // child's VmRSS in bytes, listening, before the connections
	RSSAfter     int64   `json:"rss_after"`  // with every connection open and idle
	BytesPerConn float64 `json:"bytes_per_conn"`
	Skipped      string  `json:"skipped,omitempty"`
	Error        string  `json:"error,omitempty"`
}

func (r idleResult) summary() string {
	switch {
	case r.Skipped != "":
		return "skipped: " + r.Skipped
	case r.Error != "":
		return "ERROR: " + r.Error
	}
	return fmt.Sprintf("%d conns: VmRSS %s before, %s after: %.0f bytes (%.1f KiB) per connection",
		r.Conns, mib(r.RSSBefore), mib(r.RSSAfter), r.BytesPerConn, r.BytesPerConn/1024)
}
