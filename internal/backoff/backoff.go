// Package backoff paces the retries of the loops that wait for Redis to come
// back (the history store's writer, the broker's subscription and outbox
// replay): exponential, capped, with full jitter.
//
// Jitter matters because Redis going away is an event every node sees at
// once: without it every node (and every loop on a node) retries on the same
// schedule, and a Redis that comes back meets them all in the same instant.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff gives the waits between the attempts of one retry loop: the n-th
// wait since the last Reset is drawn uniformly from [0, min(Max, Min·2ⁿ⁻¹)]
// ("full jitter"). The zero value is not useful: set Min and Max. A Backoff
// is used by one goroutine.
type Backoff struct {
	// Min is the ceiling of the first wait. It must be positive.
	Min time.Duration
	// Max caps the ceiling. Values below Min mean Min.
	Max time.Duration

	attempt int
	// rand returns a value in [0, n); nil means math/rand/v2's Int64N.
	rand func(n int64) int64
}

// Next returns the wait before the next attempt and raises the ceiling for
// the one after.
func (b *Backoff) Next() time.Duration {
	c := b.Ceiling()
	b.attempt++
	draw := rand.Int64N
	if b.rand != nil {
		draw = b.rand
	}
	return time.Duration(draw(int64(c) + 1))
}

// Ceiling is the most the next call to Next can return.
func (b *Backoff) Ceiling() time.Duration {
	hi := max(b.Max, b.Min)
	c := b.Min
	for i := 0; i < b.attempt && c < hi; i++ {
		c *= 2
	}
	return min(c, hi)
}

// Reset starts over from Min, after an attempt succeeded.
func (b *Backoff) Reset() { b.attempt = 0 }
