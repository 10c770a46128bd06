package server

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/pkg/config"
)

// checkPartitions makes the cluster's data remember its
// redis.cluster_partitions (SETNX of rediskeys' ClusterPartitions key by the
// first node) and refuses a node configured with another number: rooms map
// to partitions by that number, so two nodes that disagree put a room's
// channel and keys in different slots and silently split it, and a changed
// number strands every room's history. The mismatch is a config error (the
// CLI exits 2). When the cluster does not answer within timeout the node
// starts all the same, as it does without Redis, with a warning: the check
// then waits for the next start.
func checkPartitions(rdb redis.UniversalClient, cfg *config.Config, timeout time.Duration, log *slog.Logger) error {
	keys := rediskeys.Keys{Prefix: cfg.Redis.KeyPrefix, Partitions: cfg.Redis.ClusterPartitions}
	key := keys.ClusterPartitions()
	want := strconv.Itoa(cfg.Redis.ClusterPartitions)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// SET NX GET: sets it if absent, and returns what was there either way.
	got, err := rdb.SetArgs(ctx, key, want, redis.SetArgs{Mode: "NX", Get: true}).Result()
	switch {
	case err == redis.Nil: // we set it: the first node on this data
		return nil
	case err != nil:
		log.Warn("redis cluster unreachable at start: redis.cluster_partitions not checked against the cluster's data",
			"key", key, "err", err)
		return nil
	case got != want:
		return &config.Error{Source: cfg.Source, Key: "redis.cluster_partitions", Err: fmt.Errorf(
			"is %s, but the cluster's data was written with %s (key %s): nodes that disagree split every room, and changing it strands the data; set %s, or delete the key and the old data to start over",
			want, got, key, got)}
	}
	return nil
}
