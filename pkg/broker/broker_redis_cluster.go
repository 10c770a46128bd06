package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redisping"
)

// RedisCluster is the Redis broker on a Redis Cluster (redis.cluster_addrs).
// It keeps every promise of Redis — one order per room for every member on
// every node, history in that order, recovery after a resubscription, the
// outbox while Redis cannot take a frame — with sharded Pub/Sub (SPUBLISH,
// SSUBSCRIBE, Redis 7), so that each room's traffic stays on the master of
// its slot and adding masters adds capacity.
//
// Rooms are spread over Partitions partitions (rediskeys: a room's keys and
// channel carry its partition's hash tag, so a partition is one slot), and
// each partition is served by a Redis broker of its own: one sharded Pub/Sub
// connection to the partition's master, its own outbox, its own up/down
// state. One connection cannot serve rooms of several slots: go-redis dials a
// cluster PubSub to the master of its first channel's slot and resubscribes
// all its channels with one SSUBSCRIBE, which Redis refuses (CROSSSLOT) when
// they span slots. So a master that dies is a Redis outage for the rooms of
// its partitions only: their publishes are delivered on their node and held,
// and replayed when it is back; rooms on the other masters carry on.
//
// This follows centrifugal/centrifuge's Redis broker in cluster mode
// (RedisBrokerConfig.NumShardedPubSubPartitions: channels mapped to a fixed
// number of partitions whose hash tag is the bare partition index, one
// sharded PUB/SUB connection each).
//
// A partition's broker (and its connection and goroutines) is started the
// first time one of its rooms is subscribed to or published in, and closed
// once it has been idle — no room subscribed, nothing held, no call in
// progress — for PartitionIdle: at most Partitions connections per node, and
// only for the partitions the node has members in.
type RedisCluster struct {
	opts RedisOptions
	keys rediskeys.Keys

	mu     sync.Mutex
	parts  map[int]*clusterPart
	closed bool
	once   sync.Once

	stop chan struct{} // closed by Close: the janitor returns
	done chan struct{} // closed when the janitor has returned

	// depths are the outbox depths the partitions last reported: the
	// node's OnOutboxDepth gets their sum (see partOpts). Own lock, taken
	// only in the partitions' callbacks, so no lock order with mu.
	depthMu sync.Mutex
	depths  map[int]int
}

// clusterPart is a partition's broker and what the janitor needs to know
// before it closes it. Guarded by RedisCluster.mu.
type clusterPart struct {
	b *Redis
	// calls in progress on b (acquire/release): a broker is never closed
	// under a caller, whose Subscribe would reach no goroutine or whose
	// held frame would never be replayed.
	calls     int
	idleSince time.Time // zero while busy
}

// NewRedisCluster returns a Redis broker for a Redis Cluster; opts.Client
// must be a *redis.ClusterClient (and the presence, refs, bans and history
// store given the same Partitions). Close stops it.
func NewRedisCluster(opts RedisOptions) *RedisCluster {
	if opts.Client == nil || opts.Deliver == nil {
		panic("broker: NewRedisCluster needs a Client and a Deliver function")
	}
	if _, ok := opts.Client.(*redis.ClusterClient); !ok {
		panic("broker: NewRedisCluster needs a *redis.ClusterClient")
	}
	if opts.Partitions <= 0 {
		opts.Partitions = 64
	}
	if opts.PartitionIdle <= 0 {
		opts.PartitionIdle = time.Minute
	}
	c := &RedisCluster{
		opts:   opts,
		keys:   rediskeys.Keys{Prefix: opts.KeyPrefix, Partitions: opts.Partitions},
		parts:  map[int]*clusterPart{},
		depths: map[int]int{},
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go c.janitor()
	return c
}

// errClosed is the answer of a closed RedisCluster, and of a closed Redis's
// batcher for a publish it never sent.
var errClosed = errors.New("broker: closed")

// acquire returns the broker of room's partition, starting it if needed,
// and counts a call in progress on it until release; nil once the cluster
// broker is closed.
func (c *RedisCluster) acquire(room string) *Redis {
	n := c.keys.Partition(room)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	p := c.parts[n]
	if p == nil {
		p = &clusterPart{b: newRedis(c.partOpts(n), n)}
		c.parts[n] = p
	}
	p.calls++
	p.idleSince = time.Time{}
	return p.b
}

// partOpts are the options of partition n's broker: the cluster's, with
// OnOutboxDepth reporting the sum over every partition. Each partition has
// an outbox of its own (OutboxSize and ReplayRate apply per partition), but
// the gauge it feeds is the node's: with each partition setting it to its
// own depth, the last one to change would win.
func (c *RedisCluster) partOpts(n int) RedisOptions {
	o := c.opts
	if report := c.opts.OnOutboxDepth; report != nil {
		o.OnOutboxDepth = func(depth int) {
			c.depthMu.Lock()
			defer c.depthMu.Unlock()
			if depth == 0 {
				delete(c.depths, n)
			} else {
				c.depths[n] = depth
			}
			sum := 0
			for _, d := range c.depths {
				sum += d
			}
			report(sum) // under depthMu: the sums reach the gauge in order
		}
	}
	return o
}

// started is acquire for a partition that runs already: nil if it does not.
func (c *RedisCluster) started(room string) *Redis {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.parts[c.keys.Partition(room)]
	if p == nil {
		return nil
	}
	p.calls++
	p.idleSince = time.Time{}
	return p.b
}

// release ends a call begun by acquire or started.
func (c *RedisCluster) release(room string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.parts[c.keys.Partition(room)]; p != nil {
		p.calls--
	}
}

// janitor closes the partitions idle for PartitionIdle. It is owned by the
// cluster broker (Close stops it).
func (c *RedisCluster) janitor() {
	defer close(c.done)
	t := time.NewTicker(max(c.opts.PartitionIdle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			for _, b := range c.idle(now) {
				_ = b.Close()
			}
		}
	}
}

// idle takes out of the map and returns the partitions that have been idle
// for PartitionIdle at now; it marks the newly idle ones.
func (c *RedisCluster) idle(now time.Time) []*Redis {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Redis
	for n, p := range c.parts {
		if p.calls > 0 || !p.b.idle() {
			p.idleSince = time.Time{}
			continue
		}
		if p.idleSince.IsZero() {
			p.idleSince = now
			continue
		}
		if now.Sub(p.idleSince) >= c.opts.PartitionIdle {
			delete(c.parts, n)
			out = append(out, p.b)
		}
	}
	return out
}

// HistoryKey is the list that holds room's history.
func (c *RedisCluster) HistoryKey(room string) string { return c.keys.History(room) }

// Channel is the sharded Pub/Sub channel of room.
func (c *RedisCluster) Channel(room string) string { return c.keys.Channel(room) }

// Publish implements Broker (see Redis.Publish).
func (c *RedisCluster) Publish(ctx context.Context, room, id string, frame []byte, keep bool) error {
	b := c.acquire(room)
	if b == nil {
		return errClosed
	}
	defer c.release(room)
	return b.Publish(ctx, room, id, frame, keep)
}

// PublishDirect implements Broker (see Redis.PublishDirect).
func (c *RedisCluster) PublishDirect(ctx context.Context, room string, frame []byte, to string, from int64) error {
	b := c.acquire(room)
	if b == nil {
		return errClosed
	}
	defer c.release(room)
	return b.PublishDirect(ctx, room, frame, to, from)
}

// Subscribe implements Broker. It does not block (see Redis.Subscribe).
func (c *RedisCluster) Subscribe(ctx context.Context, room string) error {
	b := c.acquire(room)
	if b == nil {
		return errClosed
	}
	defer c.release(room)
	return b.Subscribe(ctx, room)
}

// Unsubscribe implements Broker. It does not block.
func (c *RedisCluster) Unsubscribe(ctx context.Context, room string) error {
	if b := c.started(room); b != nil {
		defer c.release(room)
		return b.Unsubscribe(ctx, room)
	}
	return nil
}

// WaitSubscribed waits until the subscription to room is confirmed (see
// Redis.WaitSubscribed); it returns at once while room's master is
// unreachable.
func (c *RedisCluster) WaitSubscribed(ctx context.Context, room string) error {
	if b := c.started(room); b != nil {
		defer c.release(room)
		return b.WaitSubscribed(ctx, room)
	}
	return nil
}

// Kick implements Broker (see Redis.Kick).
func (c *RedisCluster) Kick(ctx context.Context, room, username string) error {
	b := c.acquire(room)
	if b == nil {
		return errClosed
	}
	defer c.release(room)
	return b.Kick(ctx, room, username)
}

// Ping implements Broker: it succeeds when at least one master answers
// (see redisping.Ping: a dead master is an outage for its rooms only, shown
// by the outbox and fallback metrics and the logs, not by readiness).
func (c *RedisCluster) Ping(ctx context.Context) error { return redisping.Ping(ctx, c.opts.Client) }

// Held returns the frames held in every partition's outbox.
func (c *RedisCluster) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.parts {
		n += p.b.Held()
	}
	return n
}

// Close implements Broker: it closes every partition's broker, together
// (each gives its outbox up to DrainTimeout), and waits for them. It is
// idempotent. The Redis client stays open.
func (c *RedisCluster) Close() error {
	c.once.Do(func() {
		close(c.stop)
		<-c.done // the janitor closes nothing from now on
		c.mu.Lock()
		c.closed = true
		parts := c.parts
		c.mu.Unlock()
		var wg sync.WaitGroup
		for _, p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = p.b.Close()
			}()
		}
		wg.Wait()
	})
	return nil
}

var _ Broker = (*RedisCluster)(nil)

// idle reports whether the broker has nothing to keep its connection for:
// no room wanted or still subscribed, nothing held, Redis reachable.
func (b *Redis) idle() bool {
	b.mu.Lock()
	rooms := len(b.rooms)
	b.mu.Unlock()
	return rooms == 0 && b.ob.n.Load() == 0 && !b.down.Load()
}
