package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
)

// Refs make resends idempotent. A client names a frame with a ref; once the
// frame's pipeline completed, the ref is remembered (with the id of the
// envelope it produced) for websocket.ref_ttl, keyed by room, sender name and
// ref. A frame resent with that ref — typically after a reconnect, when the
// client cannot know whether the first copy arrived — is acknowledged again
// with the first id and not run, delivered or stored again.
//
// With broker.type redis the refs live in Redis with a TTL, so a resend to
// another node is recognised too; on one node they live in memory, bounded.
//
// A ref is claimed (marked pending) before its frame runs, so two copies
// racing each other do not both run: the second finds it pending (the server
// waits for the first copy's outcome, at most PendingTTL).
// While Redis is unreachable, claims fail open: the frame runs (live chat
// goes on) and its ref is not remembered.

// RefState is what a claim found.
type RefState int

const (
	RefNew      RefState = iota // not seen: the caller runs the frame
	RefAccepted                 // accepted before: ack it again with the id
	RefPending                  // another copy is running right now
)

// Refs remembers accepted refs.
type Refs interface {
	// Key is the store's key for ref sent by name in room.
	Key(room, name, ref string) string
	// Claim marks key pending unless it is known; for an accepted key it
	// returns the id it was accepted with.
	Claim(ctx context.Context, key string) (id string, st RefState)
	// Accept records that key's frame was accepted, producing id ("" for none).
	Accept(ctx context.Context, key, id string)
	// Release forgets a pending key whose frame was refused: a resend runs.
	Release(ctx context.Context, key string)
}

// refHash hides names and refs (any bytes) inside a fixed-size key.
func refHash(name, ref string) string {
	h := sha256.Sum256([]byte(name + "\x00" + ref))
	return hex.EncodeToString(h[:16])
}

// pendingID marks a claimed key whose frame is still running. An accepted
// frame's id is a UUID or empty, so it can never be this.
const pendingID = "\x00pending"

// MemoryRefs keeps refs in memory, at most max of them: when full, the
// oldest go first (they would expire first, every entry living ttl).
type MemoryRefs struct {
	ttl     time.Duration
	pending time.Duration // how long a claim waits for its frame's outcome
	max     int
	now     func() time.Time

	mu    sync.Mutex
	ids   map[string]memoryRef
	order []string // keys in the order they were claimed; may hold stale keys
}

type memoryRef struct {
	id      string
	expires time.Time
}

// DefaultMaxRefs bounds MemoryRefs (an entry is a key of ~90 bytes and an id).
const DefaultMaxRefs = 100_000

// NewMemoryRefs returns refs kept in memory: accepted ones for ttl, pending
// claims for pending (see PendingTTL), at most max entries (0: DefaultMaxRefs).
func NewMemoryRefs(ttl, pending time.Duration, max int) *MemoryRefs {
	if max <= 0 {
		max = DefaultMaxRefs
	}
	return &MemoryRefs{ttl: ttl, pending: pending, max: max, now: time.Now, ids: map[string]memoryRef{}}
}

// PendingTTL is how long a claimed ref stays pending: its frame's pipeline
// ends within plugins.timeout, so a claim older than that (plus a margin)
// belongs to a node that died mid-frame, and a resend may run. Zero timeout
// (none): ttl.
func PendingTTL(timeout, ttl time.Duration) time.Duration {
	if timeout <= 0 {
		return ttl
	}
	return min(timeout+5*time.Second, ttl)
}

// Key implements Refs.
func (m *MemoryRefs) Key(room, name, ref string) string { return room + "\x00" + refHash(name, ref) }

// Claim implements Refs.
func (m *MemoryRefs) Claim(_ context.Context, key string) (string, RefState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if r, ok := m.ids[key]; ok && now.Before(r.expires) {
		if r.id == pendingID {
			return "", RefPending
		}
		return r.id, RefAccepted
	}
	m.evict(now)
	m.ids[key] = memoryRef{id: pendingID, expires: now.Add(m.pending)}
	m.order = append(m.order, key)
	return "", RefNew
}

// evict drops expired entries from the front of order, and the oldest
// while the store is full. m.mu is held.
func (m *MemoryRefs) evict(now time.Time) {
	n := 0
	for ; n < len(m.order); n++ {
		k := m.order[n]
		r, ok := m.ids[k]
		if ok && now.Before(r.expires) && len(m.ids) < m.max {
			break
		}
		delete(m.ids, k)
	}
	if n > 0 {
		m.order = append(m.order[:0], m.order[n:]...)
	}
}

// Accept implements Refs.
func (m *MemoryRefs) Accept(_ context.Context, key, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.ids[key]; ok {
		m.ids[key] = memoryRef{id: id, expires: m.now().Add(m.ttl)}
	}
}

// Release implements Refs.
func (m *MemoryRefs) Release(_ context.Context, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.ids[key]; ok && r.id == pendingID {
		delete(m.ids, key)
	}
}

// RedisRefs keeps refs in Redis as PREFIX ref:ROOM:HASH → id, with a TTL, so
// every node of a cluster sees them.
type RedisRefs struct {
	rdb     redis.UniversalClient
	keys    rediskeys.Keys
	ttl     time.Duration
	pending time.Duration // see PendingTTL
	log     *slog.Logger
}

// NewRedisRefs returns refs kept in Redis under prefix: accepted ones for
// ttl, pending claims for pending (see PendingTTL). partitions selects a
// Redis Cluster's key names when positive (see RedisOptions.Partitions; rdb
// is then a *redis.ClusterClient). log gets the warnings of an unreachable
// Redis (nil: slog.Default()).
func NewRedisRefs(rdb redis.UniversalClient, prefix string, partitions int, ttl, pending time.Duration, log *slog.Logger) *RedisRefs {
	if log == nil {
		log = slog.Default()
	}
	return &RedisRefs{rdb: rdb, keys: rediskeys.Keys{Prefix: prefix, Partitions: partitions}, ttl: ttl, pending: pending, log: log}
}

// Key implements Refs.
func (r *RedisRefs) Key(room, name, ref string) string {
	return r.keys.Ref(room, refHash(name, ref))
}

// Claim implements Refs. With Redis unreachable the claim is granted (the
// frame runs without resend protection) and a warning logged.
func (r *RedisRefs) Claim(ctx context.Context, key string) (string, RefState) {
	var id string
	var err error
	for range 3 { // a key may expire between SETNX and GET: try again
		var ok bool
		if ok, err = r.rdb.SetNX(ctx, key, pendingID, r.pending).Result(); err == nil && ok {
			return "", RefNew
		}
		if err == nil {
			if id, err = r.rdb.Get(ctx, key).Result(); !errors.Is(err, redis.Nil) {
				break
			}
		}
	}
	if err != nil {
		r.log.Warn("refs: Redis unreachable; the frame runs without resend protection", "err", err)
		return "", RefNew
	}
	if id == pendingID {
		return "", RefPending
	}
	return id, RefAccepted
}

// Accept implements Refs.
func (r *RedisRefs) Accept(ctx context.Context, key, id string) {
	if err := r.rdb.Set(ctx, key, id, r.ttl).Err(); err != nil {
		r.log.Warn("refs: remembering an accepted ref failed; a resend would run again", "err", err)
	}
}

// releaseScript deletes a key only while it is still pending.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Release implements Refs: it deletes key only while it is still pending.
func (r *RedisRefs) Release(ctx context.Context, key string) {
	_ = releaseScript.Run(ctx, r.rdb, []string{key}, pendingID).Err()
}

var (
	_ Refs = (*MemoryRefs)(nil)
	_ Refs = (*RedisRefs)(nil)
)
