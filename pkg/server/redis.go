package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
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

// Timeouts of the server's Redis client. Short: a publish waits at most
// this long before it is delivered locally and held in the broker's outbox
// when Redis (or, in a cluster, the master of its room) is gone.
const (
	redisDialTimeout = time.Second
	redisIOTimeout   = 2 * time.Second
	// redisClusterReload bounds how stale a cluster client's slot map gets
	// while it has traffic (see newRedisClusterClient).
	redisClusterReload = 2 * time.Second
)

// NewRedisClient dials (lazily) the server's one Redis client: a
// redis.ClusterClient when redis.cluster_addrs is set, else a client of
// redis.url. The history store, broker, presence, refs and bans all use it
// (and `chatserver history`); the server's Shutdown closes it once they have
// stopped.
//
// No retries (MaxRetries -1): a publish whose reply timed out may have run,
// and a retry would run it again (twice in history). A failed publish is held
// in the broker's outbox instead, and its replay checks the history first.
// The history store's writer retries its batches itself, in order. Presence,
// refs and bans treat a failed command as they treat Redis being away
// (resync later, fail open). A cluster client does not retry either (see
// newRedisClusterClient).
func NewRedisClient(cfg *config.Config) (redis.UniversalClient, error) {
	if cfg.Redis.Cluster() {
		return newRedisClusterClient(cfg)
	}
	opt, err := redis.ParseURL(cfg.Redis.URL)
	if err != nil {
		return nil, &config.Error{Source: cfg.Source, Key: "redis.url", Err: err}
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
	opt.MaxRetries = -1
	return redis.NewClient(opt), nil
}

// newRedisClusterClient is NewRedisClient for redis.cluster_addrs. User,
// password and TLS come from the addresses given as URLs (config.Validate
// checked they agree), as redis.url gives them for one Redis; TLS verifies
// the nodes' certificates with the system roots, as ParseURL does.
func newRedisClusterClient(cfg *config.Config) (*redis.ClusterClient, error) {
	opt := &redis.ClusterOptions{
		DialTimeout: redisDialTimeout, ReadTimeout: redisIOTimeout, WriteTimeout: redisIOTimeout,
		MaxRetries: -1,
		// No redirects or retries (-1 is go-redis's "none"): the cluster
		// client's own loop, which MaxRedirects bounds (3 by default), also
		// retries a command whose reply timed out or whose connection died
		// (EOF) after the command reached Redis, so a publish script could
		// run twice and its frame be kept twice. A MOVED now fails the
		// command (the broker holds the frame and its replay checks the
		// history first) and makes the client reload its slot map, so the
		// next command, and the replay, go to the slot's new master.
		MaxRedirects: -1,
		// The slot map is reloaded on MOVED and READONLY only, or when it
		// is older than this as a command asks for it. A master that died
		// answers neither: without a short interval the client keeps
		// dialing it for a minute (go-redis's default) after its replica
		// took over. The broker also asks for a reload when a partition's
		// subscription fails (pkg/broker).
		ClusterStateReloadInterval: redisClusterReload,
		// One dial per command: a dead master refuses at once, and the
		// frames of its rooms must fall back to the outbox at once, not
		// after go-redis's five dials with backoff (each frame of such a
		// room also claims and accepts its ref there).
		DialerRetries: 1,
	}
	for i, s := range cfg.Redis.ClusterAddrs {
		a, err := config.ParseClusterAddr(s)
		if err != nil {
			return nil, &config.Error{Source: cfg.Source, Key: fmt.Sprintf("redis.cluster_addrs[%d]", i), Err: err}
		}
		opt.Addrs = append(opt.Addrs, a.Addr)
		if a.URL {
			opt.Username, opt.Password = a.Username, a.Password
			if a.TLS {
				// No ServerName: crypto/tls takes each node's host from the
				// address it dials, so nodes found through CLUSTER SLOTS
				// are verified under their own names.
				opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
		}
	}
	c := redis.NewClusterClient(opt)
	c.OnNewNode(func(n *redis.Client) { n.AddHook(reloadOnDialError{c}) })
	return c, nil
}

// reloadOnDialError asks the cluster client to reload its slot map when a
// node cannot be dialed: the node is most likely a master that died, whose
// replica is taking over, and go-redis itself reloads only on MOVED and
// READONLY replies (which a dead master never sends) or every
// ClusterStateReloadInterval. The reload is lazy (one at a time, in the
// background), so a burst of failed dials costs one CLUSTER SLOTS.
type reloadOnDialError struct{ c *redis.ClusterClient }

func (h reloadOnDialError) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		cn, err := next(ctx, network, addr)
		if err != nil {
			h.c.ReloadState(ctx)
		}
		return cn, err
	}
}

func (reloadOnDialError) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (reloadOnDialError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
