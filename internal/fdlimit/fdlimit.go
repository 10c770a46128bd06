// Package fdlimit raises the open-file limit: every WebSocket is a file
// descriptor, and a soft limit of 1024 would cap a server, or a load
// generator, far below what it can hold.
package fdlimit

import "syscall"

// Raise lifts the soft RLIMIT_NOFILE to the hard limit and returns the new
// soft limit.
func Raise() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}
