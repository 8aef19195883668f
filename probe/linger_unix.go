//go:build unix

package probe

import "syscall"

// setLingerZero sets SO_LINGER {on, 0} on a socket before it connects (see lingerZero).
func setLingerZero(fd uintptr) error {
	return syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
}
