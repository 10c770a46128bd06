package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	}{
		{"store redis, broker local", "local", false},
		{"store redis, broker redis", "redis", true},
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
			s, err := New(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.rdb == nil {
				t.Fatal("no Redis client")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.store.Append(ctx, "lobby", "id-1", []byte(`{"id":"id-1"}`)); err != nil {
				t.Fatal(err)
			}
			if err := s.store.(interface{ Flush(context.Context) error }).Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if n, err := s.rdb.LLen(ctx, cfg.Redis.KeyPrefix+"history:lobby").Result(); err != nil || n != 1 {
				t.Fatalf("LLEN through the server's client = %d, %v; want 1", n, err)
			}
			if hits := s.rdb.PoolStats().Hits + s.rdb.PoolStats().Misses; hits < 2 {
				t.Fatalf("the server's client served %d commands; the store's writes did not go through it", hits)
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
