package server

import (
	"sync"
	"time"
)

// flushClock paces the writers that are behind (websocket.write_delay).
//
// A writer that writes every frame as it comes makes one wake-up and one
// write syscall per delivery; in a big, busy room that is most of fan-out's
// cost. So a writer whose last write carried more than one frame — frames
// are coming faster than it writes them one by one — waits for the next tick
// of this clock, shared by every writer, and then writes everything queued by
// then in one syscall: at R messages/s and a period of T, each write carries
// about R·T frames, and a delivery waits at most T longer. A writer that is
// keeping up writes at once (see client.pace), so a quiet room pays neither
// latency nor a second wake-up.
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
		fc.ch = make(chan struct{})
		time.AfterFunc(fc.period, fc.tick)
	}
	return fc.ch
}

// tick wakes every writer waiting for the clock. The timer next arms calls
// it; a test may call it early (a timer that fires after an early tick ends
// the following period early, which only makes a write come sooner).
func (fc *flushClock) tick() {
	fc.mu.Lock()
	ch := fc.ch
	fc.ch = nil
	fc.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// armed reports whether a writer waits for the next tick.
func (fc *flushClock) armed() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.ch != nil
}
