package server

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/config"
)

// TestOneRedisClient checks the server makes one Redis client, that the
// history store writes through it, that refs and bans live in Redis only
// with broker redis, and that Shutdown closes the client.
func TestOneRedisClient(t *testing.T) {
	tests := []struct {
		name       string
		brokerType string
		wantShared bool // refs and bans in Redis
		cluster    bool // on the shared Redis Cluster (redistest.ClusterAddrs)
	}{
		{"store redis, broker local", "local", false, false},
		{"store redis, broker redis", "redis", true, false},
		{"cluster, broker redis", "redis", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Load("", nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg.History.Store = "redis"
			cfg.Broker.Type = tt.brokerType
			cfg.Redis.URL = redistest.SharedURL
			cfg.Redis.KeyPrefix = redistest.Prefix(t)
			keys := rediskeys.Keys{Prefix: cfg.Redis.KeyPrefix}
			if tt.cluster {
				_, cfg.Redis.KeyPrefix = redistest.ClusterClient(t) // its keys are deleted at the end
				cfg.Redis.URL = config.DefaultRedisURL
				cfg.Redis.ClusterAddrs = redistest.ClusterAddrs(t)
				keys = rediskeys.Keys{Prefix: cfg.Redis.KeyPrefix, Partitions: cfg.Redis.ClusterPartitions}
			}
			s, err := New(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.rdb == nil {
				t.Fatal("no Redis client")
			}
			if _, ok := s.rdb.(*redis.ClusterClient); ok != tt.cluster {
				t.Fatalf("the server's client is a %T", s.rdb)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Count the commands that pass through the server's client; pool
			// statistics cannot tell, since connections are reused.
			var seen commandLog
			s.rdb.AddHook(&seen)
			if err := s.store.Append(ctx, "lobby", "id-1", []byte(`{"id":"id-1"}`)); err != nil {
				t.Fatal(err)
			}
			if err := s.store.(interface{ Flush(context.Context) error }).Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if n, err := s.rdb.LLen(ctx, keys.History("lobby")).Result(); err != nil || n != 1 {
				t.Fatalf("LLEN through the server's client = %d, %v; want 1", n, err)
			}
			if !seen.has("rpush") {
				t.Fatalf("the server's client ran %v; the store's RPUSH did not go through it", seen.names())
			}
			_, redisRefs := s.refs.(*broker.RedisRefs)
			_, redisBans := s.bans.(*broker.RedisBans)
			if redisRefs != tt.wantShared || redisBans != tt.wantShared {
				t.Fatalf("refs in Redis %v, bans in Redis %v; want %v", redisRefs, redisBans, tt.wantShared)
			}
			if err := s.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := s.rdb.Ping(context.Background()).Err(); !errors.Is(err, redis.ErrClosed) {
				t.Fatalf("Ping after Shutdown: %v, want redis.ErrClosed", err)
			}
		})
	}
}

// commandLog is a redis.Hook that records the names of the commands run.
type commandLog struct {
	mu   sync.Mutex
	cmds []string
}

func (l *commandLog) record(cmds ...redis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cmds {
		l.cmds = append(l.cmds, c.Name())
	}
}

func (l *commandLog) names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.cmds...)
}

func (l *commandLog) has(name string) bool {
	return slices.Contains(l.names(), name)
}

func (l *commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.record(cmd)
		return next(ctx, cmd)
	}
}

func (l *commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.record(cmds...)
		return next(ctx, cmds)
	}
}
