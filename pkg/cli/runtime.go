package cli

import (
	"os"
	"strings"
)

// smallStacks turns off the runtime's adaptive initial goroutine stack size
// (GODEBUG=adaptivestackstart=0) unless GODEBUG already sets it.
//
// Why: an idle connection is one goroutine parked in the server's reader, and
// its stack is half of what the connection costs. That wait fits in the
// minimum stack, 2 KB (see server's batchConn.waitReadable), but with
// adaptive starts a goroutine begins with the average stack size seen at the
// last GC — 4 or 8 KB on a busy server — and a parked goroutine's stack is
// shrunk only while it uses less than a quarter of it, which the reader's
// wait does not. Goroutines that need more grow as they always did.
//
// It must run before the first garbage collection (the first thing Main
// does): the runtime re-reads GODEBUG when it is set, and from then on keeps
// the starting size it had, which before any GC is the minimum.
func smallStacks() {
	cur := os.Getenv("GODEBUG")
	if strings.Contains(cur, "adaptivestackstart=") {
		return
	}
	if cur != "" {
		cur += ","
	}
	_ = os.Setenv("GODEBUG", cur+"adaptivestackstart=0")
}
