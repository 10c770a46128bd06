package server

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/pkg/config"
)

// needsRedis reports whether the server talks to Redis itself: for the
// history store or the broker the config selects (not ones given in opts).
func needsRedis(cfg *config.Config, opts Options) bool {
	return (opts.Store == nil && cfg.History.Store == "redis") ||
		(opts.NewBroker == nil && cfg.Broker.Type == "redis")
}

// newRedisClient dials (lazily) the server's one Redis client, from
// redis.url. The history store, broker, presence, refs and bans all use it;
// Shutdown closes it once they have stopped.
func newRedisClient(cfg *config.Config) (*redis.Client, error) {
	opt, err := redis.ParseURL(cfg.Redis.URL)
	if err != nil {
		return nil, &config.Error{Source: cfg.Source, Key: "redis.url", Err: err}
	}
	// Short timeouts: a publish waits at most this long before it is
	// delivered locally and held in the broker's outbox when Redis is gone.
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = time.Second, 2*time.Second, 2*time.Second
	// No retries: a publish whose reply timed out may have run, and a retry
	// would run it again (twice in history). A failed publish is held in the
	// broker's outbox instead, and its replay checks the history first.
	// The history store's writer retries its batches itself, in order.
	// Presence, refs and bans treat a failed command as they treat Redis
	// being away (resync later, fail open).
	opt.MaxRetries = -1
	return redis.NewClient(opt), nil
}
