package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
)

// RedisBans keeps bans in Redis, so every node of a cluster enforces them:
// the ban of NAME in ROOM is the string P+"ban:"+ROOM+":"+NAME (P the key
// prefix; a room name holds no ':', so the key is unambiguous), set with the
// ban's duration as its TTL — Redis forgets it when it ends.
type RedisBans struct {
	rdb  redis.UniversalClient
	keys rediskeys.Keys
}

// NewRedisBans returns bans kept under prefix in rdb (not closed by it);
// partitions selects a Redis Cluster's key names when positive (see
// RedisOptions.Partitions).
func NewRedisBans(rdb redis.UniversalClient, prefix string, partitions int) *RedisBans {
	return &RedisBans{rdb: rdb, keys: rediskeys.Keys{Prefix: prefix, Partitions: partitions}}
}

// Key is the key of the ban of username in room.
func (b *RedisBans) Key(room, username string) string {
	return b.keys.Ban(room, username)
}

// Ban implements Bans.
func (b *RedisBans) Ban(ctx context.Context, room, username string, d time.Duration) error {
	if err := b.rdb.Set(ctx, b.Key(room, username), "1", d).Err(); err != nil {
		return fmt.Errorf("broker: banning in room %s: %w", room, err)
	}
	return nil
}

// Banned implements Bans.
func (b *RedisBans) Banned(ctx context.Context, room, username string) (bool, error) {
	n, err := b.rdb.Exists(ctx, b.Key(room, username)).Result()
	if err != nil {
		return false, fmt.Errorf("broker: reading bans of room %s: %w", room, err)
	}
	return n == 1, nil
}

var _ Bans = (*RedisBans)(nil)
