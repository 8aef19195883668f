package pipeline

import (
	"os"
	"syscall"
)

// fdRoom returns the soft RLIMIT_NOFILE and how many descriptors are open now.
func fdRoom() (limit, open int, ok bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, false
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, false
	}
	if rl.Cur > 1<<30 {
		rl.Cur = 1 << 30
	}
	return int(rl.Cur), len(ents), true
}
