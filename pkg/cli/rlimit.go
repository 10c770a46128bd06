package cli

import (
	"log/slog"
	"syscall"
)

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit: every
// WebSocket is a file descriptor, and the usual soft limit (1024) would cap a
// node far below what it can serve. Failure is logged, not fatal.
func raiseFileLimit(log *slog.Logger) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("reading the open-file limit", "err", err)
		return
	}
	if rl.Cur < rl.Max {
		old := rl.Cur
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			log.Warn("raising the open-file limit", "from", old, "to", rl.Max, "err", err)
			return
		}
	}
	log.Info("open-file limit", "limit", rl.Cur)
}
