package server

import (
	"sync"
	"time"
)

// flushClock paces the writers of a busy node (websocket.write_delay).
//
// Without it, a writer wakes and makes one write syscall for every message
// its client gets; in a big room that is one wake-up and one syscall per
// delivery, most of fan-out's cost. With it, a writer woken less than a
// period after its last write waits for the next tick of this clock, shared
// by every writer, and then writes everything queued by then in one syscall:
// at R messages/s and a period of T, each write carries about R·T frames,
// and a delivery waits at most T longer. A writer that was quiet for a
// period writes at once, so a quiet room pays neither latency nor a second
// wake-up.
//
// The clock runs only while writers wait on it: the first waiter of a
// period arms one timer, and its firing wakes them all by closing a channel.
type flushClock struct {
	period time.Duration
	mu     sync.Mutex
	ch     chan struct{} // closed at the next tick; nil when no timer is armed
}

// next returns a channel closed at the next tick.
func (fc *flushClock) next() <-chan struct{} {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.ch == nil {
		ch := make(chan struct{})
		fc.ch = ch
		time.AfterFunc(fc.period, func() {
			fc.mu.Lock()
			fc.ch = nil
			fc.mu.Unlock()
			close(ch)
		})
	}
	return fc.ch
}
