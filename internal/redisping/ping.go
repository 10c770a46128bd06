// Package redisping answers "is Redis there?" for one Redis and for a Redis
// Cluster alike, for readiness checks and the history writer's probe.
package redisping

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Ping PINGs rdb. On a *redis.ClusterClient it pings every master and
// succeeds when one answers: a keyless PING would go to a random slot's
// master and fail at random while one master is down, and a dead master is an
// outage for the rooms of its slots only (their frames are held and replayed),
// not for the node — taking every node out of a load balancer would stop the
// rooms on the other masters too.
func Ping(ctx context.Context, rdb redis.UniversalClient) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return rdb.Ping(ctx).Err()
	}
	var up atomic.Int32
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		if err := m.Ping(ctx).Err(); err != nil {
			return err
		}
		up.Add(1)
		return nil
	})
	if up.Load() > 0 {
		return nil
	}
	if err == nil {
		err = errors.New("no master known")
	}
	return fmt.Errorf("redis cluster: no master answers: %w", err)
}
