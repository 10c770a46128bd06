package broker

import (
	"context"
	"sync"
	"time"
)

// Bans remembers who may not join which room, until when (the server API's
// kick with a ban). Implementations are safe for concurrent use. A ban of a
// name that is already banned replaces the old one (it may shorten it).
type Bans interface {
	// Ban refuses username in room for d (d > 0).
	Ban(ctx context.Context, room, username string, d time.Duration) error
	// Banned reports whether username is refused in room now.
	Banned(ctx context.Context, room, username string) (bool, error)
}

// DefaultMaxBans bounds MemoryBans when NewMemoryBans is given 0.
const DefaultMaxBans = 100_000

// MemoryBans keeps bans in this process: the bans of a single node (broker
// local). It holds at most max bans; when full, expired bans go first, then
// the one that would expire soonest, so a flood of bans cannot grow memory
// without bound and the longest bans are the last to go.
type MemoryBans struct {
	mu   sync.Mutex
	max  int
	bans map[banKey]time.Time // → expiry
	now  func() time.Time
}

type banKey struct{ room, username string }

// NewMemoryBans returns an empty MemoryBans holding at most max bans (0:
// DefaultMaxBans).
func NewMemoryBans(max int) *MemoryBans {
	if max <= 0 {
		max = DefaultMaxBans
	}
	return &MemoryBans{max: max, bans: map[banKey]time.Time{}, now: time.Now}
}

// Ban implements Bans.
func (m *MemoryBans) Ban(_ context.Context, room, username string, d time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	k := banKey{room, username}
	if _, ok := m.bans[k]; !ok && len(m.bans) >= m.max {
		m.evictLocked(now)
	}
	m.bans[k] = now.Add(d)
	return nil
}

// evictLocked makes room for one ban: every expired one goes, or else the
// one expiring soonest.
func (m *MemoryBans) evictLocked(now time.Time) {
	var soonest banKey
	var soonestAt time.Time
	for k, until := range m.bans {
		if !until.After(now) {
			delete(m.bans, k)
			continue
		}
		if soonestAt.IsZero() || until.Before(soonestAt) {
			soonest, soonestAt = k, until
		}
	}
	if len(m.bans) >= m.max {
		delete(m.bans, soonest)
	}
}

// Banned implements Bans; an expired ban is forgotten here.
func (m *MemoryBans) Banned(_ context.Context, room, username string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := banKey{room, username}
	until, ok := m.bans[k]
	if !ok {
		return false, nil
	}
	if !until.After(m.now()) {
		delete(m.bans, k)
		return false, nil
	}
	return true, nil
}

var _ Bans = (*MemoryBans)(nil)
