//go:build !linux

package pipeline

// fdRoom is unknown off Linux (Windows has no RLIMIT_NOFILE; its limit is the ephemeral ports,
// which --probe.concurrency caps).
func fdRoom() (limit, open int, ok bool) { return 0, 0, false }
