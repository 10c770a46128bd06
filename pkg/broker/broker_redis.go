package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/backoff"
	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/pkg/history"
)

// publishScript appends the frame to the room's history (when keep) and
// publishes it, in one atomic step: Redis runs scripts one at a time, so the
// order of the history list is the order in which every subscriber on every
// node receives the frames of a room.
//
// KEYS[1] history list; ARGV[1] channel, ARGV[2] frame, ARGV[3] "k" (keep) or
// "n", ARGV[4] history size.
var publishScript = redis.NewScript(publishSrc)

const publishSrc = `
if ARGV[3] == 'k' then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
end
return redis.call('PUBLISH', ARGV[1], ARGV[3] .. ARGV[2])
`

// spublishScript is publishScript for a Redis Cluster: the frame goes out
// with SPUBLISH on the room's sharded channel, which is also KEYS[2]. A
// script runs on the master of its keys' slot, and the channel must hash to
// that slot too (rediskeys gives the history list and the channel the same
// hash tag); Redis 7.0 accepts the channel as an ARGV as well, but declaring
// it as a key is what lets the cluster check the slot (and route the script).
//
// KEYS[1] history list, KEYS[2] channel; ARGV as publishScript's.
var spublishScript = redis.NewScript(shardedSrc(publishSrc))

// shardedSrc turns a script that ends with PUBLISH on ARGV[1] into one
// that SPUBLISHes on KEYS[2].
func shardedSrc(src string) string {
	out := strings.Replace(src, "redis.call('PUBLISH', ARGV[1],", "redis.call('SPUBLISH', KEYS[2],", 1)
	if out == src {
		panic("broker: script has no PUBLISH to shard")
	}
	return out
}

// publishCall is what one Publish asks of Redis: the broker's publish script
// (publishScript, or spublishScript on a cluster partition) with its keys and
// arguments. The batched and the unbatched path both run it, so it is the
// one place that names them.
func (b *Redis) publishCall(room string, frame []byte, flag byte) scriptCall {
	return scriptCall{script: b.script, keys: b.scriptKeys(room),
		args: []any{b.Channel(room), frame, string([]byte{flag}), b.size}}
}

// RedisOptions configure a Redis broker.
type RedisOptions struct {
	// Client is the connection to Redis: a *redis.Client, or a
	// *redis.ClusterClient with NewRedisCluster. Required; the broker does
	// not close it.
	Client redis.UniversalClient
	// Partitions is the number of partitions of a Redis Cluster's rooms
	// (NewRedisCluster; see internal/rediskeys). NewRedis ignores it.
	// Zero means 64.
	Partitions int
	// PartitionIdle is how long a cluster partition with no room
	// subscribed and nothing held keeps its broker and connection before
	// they are closed (NewRedisCluster; NewRedis ignores it). Zero means 1m.
	PartitionIdle time.Duration
	// KeyPrefix namespaces keys and channels: the history of room R is the
	// list KeyPrefix+"history:"+R (the Redis history store's key) and its
	// channel is KeyPrefix+"room:"+R — on a cluster with R's partition's
	// hash tag before R (rediskeys names them). Zero means no prefix.
	KeyPrefix string
	// HistorySize is the number of frames kept per room. Zero means 100.
	HistorySize int
	// Deliver hands frames to this node's members. Required.
	Deliver DeliverFunc
	// Direct hands direct messages to this node's members. Nil:
	// PublishDirect fails and direct messages from other nodes are dropped.
	Direct DirectFunc
	// Kick closes this node's connections a kick names. Nil: kicks that
	// reach this node do nothing.
	Kick KickFunc
	// Log receives the broker's logs. Nil: slog.Default().
	Log *slog.Logger

	// OnResubscribe is called when the subscription connection is back after
	// a failure (Redis restarted, connection dropped).
	OnResubscribe func()
	// OnRecovered is called with the number of frames read back from the
	// history after a resubscription and delivered locally.
	OnRecovered func(n int)
	// OnFallback is called for each publish delivered on this node only,
	// because Redis was unreachable.
	OnFallback func()
	// OnLag is called with now minus the envelope's ts of each frame received.
	OnLag func(time.Duration)

	// OutboxSize bounds the frames held while Redis cannot take them (see
	// the outbox in outbox_redis.go). When it is full the oldest held frame
	// is dropped, counted and announced (GapFrame). Zero means 10000.
	OutboxSize int
	// ReplaySettle is how long the subscription must have been back before
	// held frames are replayed, so that the other nodes have resubscribed
	// and receive them live. Zero means 2s.
	ReplaySettle time.Duration
	// ReplayRate bounds the held frames replayed per second. The other
	// nodes deliver them on top of live traffic, and a member whose send
	// queue fills up is cut off as too slow, so a backlog must not arrive at
	// once; and it must exceed this node's publish rate, or the outbox
	// (which new publishes queue behind) never empties. Zero means 1000.
	ReplayRate int
	// DrainTimeout bounds how long Close waits for held frames to be
	// replayed while Redis is reachable. Zero means 2s.
	DrainTimeout time.Duration
	// GapFrame builds the frame announcing that missed frames of room were
	// dropped from the outbox (it is kept, and delivered on every other
	// node); id is its envelope id. Nil: drops are counted and logged only.
	GapFrame func(room string, missed int) (id string, frame []byte)
	// OnOutboxDepth is called with the number of held frames when it
	// changes. It must be quick (a gauge's Set).
	OnOutboxDepth func(n int)
	// OnOutboxDropped is called with the number of held frames dropped
	// because the outbox was full (or still held at Close).
	OnOutboxDropped func(n int)
	// OnReplayed is called with the number of held frames Redis took.
	OnReplayed func(n int)

	// PublishBatch is the most publishes sent to Redis in one round trip:
	// publishes waiting at the same moment go out as one pipeline (see
	// publish_batch.go). Zero means 256.
	PublishBatch int
	// NoPublishBatch turns batching off: each Publish runs the publish
	// script itself, one round trip each (concurrent ones on the client's
	// pool), as before batching.
	NoPublishBatch bool
}

// Redis is the broker for several nodes: fan-out goes through Redis Pub/Sub,
// one channel per room, and each node subscribes only to the rooms it has
// local members in.
//
// A node delivers its own publishes only when they come back from its
// subscription, never by a local short-cut, so every member on every node gets
// each frame once and in the order Redis published it (which is also the
// history order, see publishScript).
//
// When the subscription connection fails, go-redis reconnects and resubscribes;
// the broker then reads each room's history after the last kept frame it
// delivered and delivers what it missed (deduplicated by envelope id). Frames
// that were not kept (online, offline) and were published while the
// connection was down are not recovered.
//
// When Redis cannot be reached at all, Publish delivers on this node and holds
// the frame in a bounded outbox, which is replayed in order once Redis is back
// (see outbox_redis.go): live chat on the node goes on, and the other nodes get
// every held frame live, exactly once, after the outage.
type Redis struct {
	opts RedisOptions
	rdb  redis.UniversalClient
	// psMu guards ps, which a cluster partition's receive replaces (see
	// renewPubSub) while control subscribes and Close closes.
	psMu sync.Mutex
	ps   *redis.PubSub
	// part is the cluster partition this broker serves (see RedisCluster),
	// or -1 for a single Redis: Pub/Sub, PUBLISH and publishScript.
	part int
	// script appends and publishes (publishScript, or spublishScript on a
	// cluster); its keys are scriptKeys(room), its ARGV publishScript's.
	script *redis.Script
	// replay is replayScript, or its sharded twin on a cluster.
	replay   *redis.Script
	log      *slog.Logger
	keys     rediskeys.Keys
	size     int
	seenSize int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// down is set while the subscription connection is failing; Publish then
	// skips Redis and falls back at once instead of waiting for timeouts.
	down atomic.Bool
	// upAt is when the subscription last came back (UnixNano; 0: never
	// lost): held frames are replayed ReplaySettle after it.
	upAt atomic.Int64

	ob      *outbox
	recent  recent          // what was published lately, for rehold
	batcher *publishBatcher // nil: NoPublishBatch
	token   string          // names this broker's replayed frames

	mu      sync.Mutex
	rooms   map[string]*redisRoom
	changed chan struct{} // capacity 1: rooms changed, the control goroutine applies it
}

// redisRoom is the state of one room this node subscribes to.
type redisRoom struct {
	// Guarded by Redis.mu.
	want      bool          // the hub has local members
	sent      bool          // SUBSCRIBE was sent
	active    chan struct{} // closed when Redis confirmed the subscription
	confirmed bool

	// mu serialises delivery for the room and guards what follows.
	mu       sync.Mutex
	lastKept string // id of the last kept frame delivered (or the history's tail at subscription)
	seen     idRing
}

// NewRedis returns a Redis broker for one Redis and starts its goroutines;
// Close stops them.
func NewRedis(opts RedisOptions) *Redis {
	if opts.Client == nil || opts.Deliver == nil {
		panic("broker: NewRedis needs a Client and a Deliver function")
	}
	return newRedis(opts, -1)
}

// newRedis starts a broker for one Redis (part -1), or for partition part of
// a cluster's rooms (see RedisCluster).
func newRedis(opts RedisOptions, part int) *Redis {
	if opts.HistorySize <= 0 {
		opts.HistorySize = 100
	}
	if opts.OutboxSize <= 0 {
		opts.OutboxSize = 10000
	}
	if opts.ReplaySettle <= 0 {
		opts.ReplaySettle = 2 * time.Second
	}
	if opts.ReplayRate <= 0 {
		opts.ReplayRate = 1000
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 2 * time.Second
	}
	if opts.PublishBatch <= 0 {
		opts.PublishBatch = defaultPublishBatch
	}
	b := &Redis{
		opts:     opts,
		rdb:      opts.Client,
		log:      opts.Log,
		keys:     rediskeys.Keys{Prefix: opts.KeyPrefix},
		part:     part,
		script:   publishScript,
		replay:   replayScript,
		size:     opts.HistorySize,
		seenSize: max(2*opts.HistorySize, 256),
		rooms:    map[string]*redisRoom{},
		changed:  make(chan struct{}, 1),
		ob:       newOutbox(opts.OutboxSize),
		token:    newToken(),
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	if part >= 0 {
		b.log = b.log.With("partition", part)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if part < 0 {
		b.ps = b.rdb.Subscribe(b.ctx) // no channel yet: the connection is made lazily
	} else {
		b.keys.Partitions = opts.Partitions
		b.script, b.replay = spublishScript, sreplayScript
		// No channel yet, so no dial here (the caller may hold a lock, and
		// the master may be down): receive subscribes the partition's own
		// channel first (see there).
		b.ps = b.rdb.SSubscribe(b.ctx)
	}
	b.wg.Add(3)
	go b.control()
	go b.receive()
	go b.replayLoop()
	if !opts.NoPublishBatch {
		b.batcher = newPublishBatcher(b.rdb, opts.PublishBatch, b.direct, b.loadScript, b.ctx.Done())
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.batcher.loop() }()
	}
	return b
}

// HistoryKey is the list that holds room's history.
func (b *Redis) HistoryKey(room string) string { return b.keys.History(room) }

// Channel is the Pub/Sub channel of room.
func (b *Redis) Channel(room string) string { return b.keys.Channel(room) }

// sharded reports whether the broker serves a cluster partition (SPUBLISH,
// SSUBSCRIBE).
func (b *Redis) sharded() bool { return b.part >= 0 }

// scriptKeys are the KEYS of b.script and b.replay for room: the history
// list, and on a cluster the sharded channel too.
func (b *Redis) scriptKeys(room string) []string {
	if b.sharded() {
		return []string{b.HistoryKey(room), b.Channel(room)}
	}
	return []string{b.HistoryKey(room)}
}

// publishRaw publishes payload on room's channel (PUBLISH, or SPUBLISH on a
// cluster).
func (b *Redis) publishRaw(ctx context.Context, room string, payload any) error {
	if b.sharded() {
		return b.rdb.SPublish(ctx, b.Channel(room), payload).Err()
	}
	return b.rdb.Publish(ctx, b.Channel(room), payload).Err()
}

// Publish implements Broker. With Redis reachable and nothing held, the
// frame goes through publishScript (in one pipeline with the publishes
// waiting at the same moment, see publish_batch.go) and Publish returns once
// Redis has run it (appended to history when keep, and published): a frame
// acknowledged then survives this node. Otherwise the frame is delivered on this node and
// held in the outbox for replay (see outbox_redis.go), and Publish returns
// nil: the frame is accepted, but only this node's memory has it until the
// replay. Publish fails only when ctx ends during a direct publish.
func (b *Redis) Publish(ctx context.Context, room, id string, frame []byte, keep bool) error {
	flag := byte('n')
	if keep {
		flag = 'k'
	}
	tried := false
	if b.direct() {
		err := b.publishScriptCall(ctx, b.publishCall(room, frame, flag))
		if err == nil {
			if keep {
				b.recent.add(held{room: room, id: id, frame: frame, flag: flag, maybe: true, plain: true})
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publishing to room %s: %w", room, err)
		}
		// Not sent (errNotSent): it queues behind what is held, untried.
		if tried = !errors.Is(err, errNotSent); tried {
			b.log.Warn("redis publish failed; delivering on this node and holding the frame for replay", "room", room, "id", id, "err", err)
		}
	}
	b.hold(held{room: room, id: id, frame: frame, flag: flag, maybe: tried}, func(st *redisRoom) {
		// Not recorded in seen as a rule: its replay is dropped here by its
		// token, and seen must keep the ids delivered before the outage,
		// which replays of recent frames are checked against (see recent).
		// Except a kept frame whose publish was tried: Redis may have run
		// the script and lost only the reply, and then the frame comes
		// back on this node's own subscription without the token — before
		// this (then it is not delivered again here) or after (its id in
		// seen drops it there). One id per failed publish.
		if st != nil {
			deliverID := ""
			if keep {
				deliverID = id // only a kept frame's id is used, as in handle
				if tried && !st.seen.add(id) {
					return
				}
			}
			b.opts.Deliver(room, deliverID, frame, keep)
		}
	})
	return nil
}

// PublishDirect implements Broker. The frame travels on the room's channel
// (payload prefix 'd'), so it keeps its place among the room's frames; each
// node hands it to its own connections of the recipient and the sender.
// With Redis unreachable (or frames held) it is delivered on this node and
// held for replay, like Publish.
func (b *Redis) PublishDirect(ctx context.Context, room string, frame []byte, to string, from int64) error {
	if b.opts.Direct == nil {
		return errNoDirect
	}
	tried := false
	if b.direct() {
		tried = true
		err := b.publishRaw(ctx, room, append([]byte{'d'}, frame...))
		if err == nil {
			b.recent.add(held{room: room, id: history.IDOf(frame), frame: frame, flag: 'd', plain: true})
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publishing a direct message to room %s: %w", room, err)
		}
		b.log.Warn("redis publish failed; delivering on this node and holding the frame for replay", "room", room, "err", err)
	}
	id := history.IDOf(frame)
	b.hold(held{room: room, id: id, frame: frame, flag: 'd', maybe: tried}, func(*redisRoom) {
		b.opts.Direct(room, frame, to, from) // not recorded in seen, as in Publish
	})
	return nil
}

// directHeader is what a node reads of a direct message to deliver it.
type directHeader struct {
	To       string `json:"to"`
	ClientID int64  `json:"client_id"`
}

// Subscribe implements Broker. It does not block: the subscription is made by
// the broker's goroutine; WaitSubscribed waits for it.
func (b *Redis) Subscribe(_ context.Context, room string) error {
	b.mu.Lock()
	st := b.rooms[room]
	if st == nil {
		st = &redisRoom{active: make(chan struct{}), seen: idRing{cap: b.seenSize}}
		b.rooms[room] = st
	}
	st.want = true
	b.mu.Unlock()
	b.signal()
	return nil
}

// Unsubscribe implements Broker. It does not block.
func (b *Redis) Unsubscribe(_ context.Context, room string) error {
	b.mu.Lock()
	if st := b.rooms[room]; st != nil {
		st.want = false
	}
	b.mu.Unlock()
	b.signal()
	return nil
}

// errDown is WaitSubscribed's answer while Redis is unreachable.
var errDown = errors.New("broker: redis is unreachable")

// downPoll is how often WaitSubscribed looks whether Redis was found
// unreachable while it waits.
const downPoll = 50 * time.Millisecond

// WaitSubscribed waits until Redis confirmed the subscription to room (or ctx
// ends). The server calls it after a client joined and before it reads the
// history, so that nothing published in between is missed. While Redis is
// unreachable it returns errDown at once, and as soon as Redis is found
// unreachable while it waits: there is nothing to wait for.
func (b *Redis) WaitSubscribed(ctx context.Context, room string) error {
	b.mu.Lock()
	st := b.rooms[room]
	b.mu.Unlock()
	if st == nil {
		return nil
	}
	// Redis may also be found unreachable while we wait (a partition's
	// broker that starts while its master is down learns it only when its
	// first dial fails): look again every downPoll instead of waiting for
	// ctx, which would hold the joiner for the server's whole join timeout.
	var poll *time.Timer
	for {
		if b.down.Load() {
			select {
			case <-st.active:
				return nil
			default:
				return errDown
			}
		}
		if poll == nil {
			poll = time.NewTimer(downPoll)
			defer poll.Stop()
		} else {
			poll.Reset(downPoll)
		}
		select {
		case <-st.active:
		case <-poll.C:
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		break
	}
	// Frames of the room held in the outbox were delivered here before
	// the joiner came, and their echo will be dropped here: wait until
	// they are replayed, and so in the history the joiner reads.
	if !b.ob.holds(room) {
		return nil
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for b.ob.holds(room) {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the frames held for room %s to be replayed: %w", room, ctx.Err())
		}
	}
	return nil
}

// Ping implements Broker.
func (b *Redis) Ping(ctx context.Context) error { return b.rdb.Ping(ctx).Err() }

// Close implements Broker: it gives the outbox up to DrainTimeout to be
// replayed (while Redis is reachable), stops the goroutines and waits for
// them. Frames still held then are counted as dropped and logged. It is
// idempotent. The Redis client stays open (its owner closes it).
func (b *Redis) Close() error {
	b.once.Do(func() {
		deadline := time.Now().Add(b.opts.DrainTimeout)
		for b.ob.n.Load() > 0 && !b.down.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		b.cancel()
		// After cancel: a renewPubSub that comes later makes none.
		b.psMu.Lock()
		_ = b.ps.Close()
		b.psMu.Unlock()
		b.wg.Wait()
		if n := int(b.ob.n.Load()); n > 0 {
			if b.opts.OnOutboxDropped != nil {
				b.opts.OnOutboxDropped(n)
			}
			b.log.Error("broker closed with frames Redis never took: other nodes miss them", "held", n)
		}
	})
	return nil
}

func (b *Redis) signal() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *Redis) room(name string) *redisRoom {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rooms[name]
}

// control applies room changes: SUBSCRIBE for rooms that got local members,
// UNSUBSCRIBE for rooms that lost them.
func (b *Redis) control() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.changed:
		}
		var sub, unsub []string
		b.mu.Lock()
		for name, st := range b.rooms {
			switch {
			case st.want && !st.sent:
				st.sent = true
				sub = append(sub, b.Channel(name))
			case !st.want:
				if st.sent {
					unsub = append(unsub, b.Channel(name))
				}
				delete(b.rooms, name)
			}
		}
		b.mu.Unlock()
		// go-redis records the channels even when the command fails, and
		// resubscribes to them when it reconnects.
		// Read after the rooms were marked sent: a PubSub that receive
		// renews after that subscribes them itself (renewPubSub).
		ps := b.pubsub()
		unsubscribe, subscribe := ps.Unsubscribe, ps.Subscribe
		if b.sharded() {
			unsubscribe, subscribe = ps.SUnsubscribe, ps.SSubscribe
		}
		if len(unsub) > 0 {
			if err := unsubscribe(b.ctx, unsub...); err != nil && b.ctx.Err() == nil {
				b.log.Warn("redis unsubscribe failed", "channels", unsub, "err", err)
			}
		}
		if len(sub) > 0 {
			if err := subscribe(b.ctx, sub...); err != nil && b.ctx.Err() == nil {
				b.log.Warn("redis subscribe failed; will retry on reconnect", "channels", sub, "err", err)
			}
		}
	}
}

// pubsub returns the current subscription connection.
func (b *Redis) pubsub() *redis.PubSub {
	b.psMu.Lock()
	defer b.psMu.Unlock()
	return b.ps
}

// renewPubSub replaces a cluster partition's PubSub with a new one
// subscribed to the partition's channel and every room sent to Redis, after
// asking the cluster client to reload its slot map, and closes the old one.
// go-redis reconnects a PubSub only when its connection breaks, and always
// to the node it had: after the partition's slot moved (resharding, a
// failover, a master that died and was replaced) the connection may be
// healthy and subscribed to nothing, or refused with MOVED, and only a new
// PubSub dials the slot's new master. The reload is lazy: a PubSub made
// before it lands may reach the old node again and fail, and receive then
// renews it again after a backoff. With owner (after the slot moved: see
// slotOwner) the PubSub dials that node instead of the one the slot map
// names when it dials. It returns nil once the broker is closing.
func (b *Redis) renewPubSub(owner *redis.Client) *redis.PubSub {
	if cc, ok := b.rdb.(*redis.ClusterClient); ok {
		cc.ReloadState(b.ctx)
	}
	b.psMu.Lock()
	if b.ctx.Err() != nil {
		b.psMu.Unlock()
		return nil
	}
	channels := []string{b.keys.PartitionChannel(b.part)}
	b.mu.Lock()
	for name, st := range b.rooms {
		if st.want && st.sent {
			channels = append(channels, b.Channel(name))
		}
	}
	b.mu.Unlock()
	old := b.ps
	var ps *redis.PubSub // no channel yet: no dial under psMu
	if owner != nil {
		ps = owner.SSubscribe(b.ctx) // that node, whatever the slot map says by now
	} else {
		ps = b.rdb.SSubscribe(b.ctx)
	}
	b.ps = ps
	b.psMu.Unlock()
	_ = old.Close()
	// Every channel is of the partition's slot, so the one connection
	// this dials takes them all.
	if err := ps.SSubscribe(b.ctx, channels...); err != nil && b.ctx.Err() == nil {
		b.log.Warn("redis subscribe failed; will retry", "channels", len(channels), "err", err)
	}
	return ps
}

// receive is the subscription's only reader: it delivers messages, notices
// confirmations and reconnections, and recovers missed frames.
//
// On a cluster it also notices that the partition's slot left the node it
// is connected to: Redis then sends SUNSUBSCRIBE for the slot's channels
// (the partition's own channel among them, which the broker never
// unsubscribes itself) and keeps the connection, so nothing else would show
// that no frame reaches this node any more. That is handled as a lost
// connection: frames published lately are held again, publishes are held
// until the subscription is back, the PubSub is renewed on the slot's new
// master, and each room reads what it missed from its history (confirmed).
func (b *Redis) receive() {
	defer b.wg.Done()
	ps := b.pubsub()
	if b.sharded() {
		// Before anything reads or pings: a cluster PubSub with no channel
		// dials a random node, where SSUBSCRIBE of this partition's rooms
		// would be refused (MOVED); with a channel it dials the master of
		// that channel's slot, this partition's, and redials it after a
		// reconnection. go-redis records the channel even when this fails
		// (the master is down): the loop below then dials the right master.
		if err := ps.SSubscribe(b.ctx, b.keys.PartitionChannel(b.part)); err != nil && b.ctx.Err() == nil {
			b.log.Warn("redis subscribe failed; will retry on reconnect", "channels", b.keys.PartitionChannel(b.part), "err", err)
		}
	}
	// Waits between reconnection attempts: jittered, so the nodes that lost
	// Redis together do not come back in one burst.
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	failed := false
	// lost handles a subscription that stopped delivering; false when the
	// broker is closing.
	lost := func(err error) bool {
		if !failed {
			b.log.Warn("redis subscription connection lost; reconnecting", "err", err)
			b.rehold()
		}
		failed = true
		b.down.Store(true)
		if b.sharded() {
			// Before the backoff, so that the slot map is likely fresh
			// when the PubSub is renewed.
			if cc, ok := b.rdb.(*redis.ClusterClient); ok {
				cc.ReloadState(b.ctx)
			}
		}
		var owner *redis.Client
		if errors.Is(err, errSlotMoved) {
			owner = b.slotOwner()
		}
		select {
		case <-b.ctx.Done():
			return false
		case <-time.After(bo.Next()):
		}
		if b.sharded() {
			if ps = b.renewPubSub(owner); ps == nil {
				return false
			}
		}
		return true
	}
	for {
		msg, err := ps.ReceiveTimeout(b.ctx, 5*time.Second)
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet: make sure the connection is alive (a reply, or an
				// error that makes go-redis reconnect).
				_ = ps.Ping(b.ctx)
				continue
			}
			if !lost(err) {
				return
			}
			continue
		}
		bo.Reset()
		if failed {
			failed = false
			b.upAt.Store(time.Now().UnixNano())
			b.down.Store(false)
			b.log.Info("redis subscription connection is back; resubscribed")
			if b.opts.OnResubscribe != nil {
				b.opts.OnResubscribe()
			}
		}
		switch m := msg.(type) {
		case *redis.Message:
			b.handle(m)
		case *redis.Subscription:
			if b.sharded() && m.Kind == "sunsubscribe" && m.Channel == b.keys.PartitionChannel(b.part) {
				if !lost(errSlotMoved) {
					return
				}
				continue
			}
			if room, ok := b.keys.RoomOfChannel(m.Channel); ok && (m.Kind == "subscribe" || m.Kind == "ssubscribe") {
				b.confirmed(room)
			}
		}
	}
}

// slotMoveWait bounds slotOwner.
const slotMoveWait = 5 * time.Second

// slotOwner returns the client of the master that serves the partition's
// slot, once the cluster client's slot map names one that does (a keyed
// command sent to it is not refused with MOVED), waiting up to slotMoveWait;
// nil if none did by then, or the broker is closing. A failing-over master
// unsubscribes the slot's channels while the map (even a reloaded one) still
// names it, and a map loaded from a node that has no owner for the slot names
// a random node: a PubSub renewed on either subscribes where the new master's
// frames never arrive, and the rooms' recovery reads the history before the
// frames published meanwhile are in it — they are lost to this node. The
// renewed PubSub dials exactly this node (renewPubSub). Publishes wait in the
// outbox meanwhile (the subscription is down).
func (b *Redis) slotOwner() *redis.Client {
	cc, ok := b.rdb.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	anchor := b.keys.PartitionChannel(b.part)
	deadline := time.Now().Add(slotMoveWait)
	for {
		if m, err := cc.MasterForKey(b.ctx, anchor); err == nil && m != nil {
			ctx, cancel := context.WithTimeout(b.ctx, time.Second)
			err = m.Exists(ctx, anchor).Err() // a replica or another master: MOVED
			cancel()
			if err == nil {
				return m
			}
		}
		if time.Now().After(deadline) {
			b.log.Warn("no master found serving the partition's slot; resubscribing where the slot map says")
			return nil
		}
		cc.ReloadState(b.ctx)
		select {
		case <-b.ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// errSlotMoved is why a cluster partition's subscription was lost when
// Redis unsubscribed it: its slot moved to another master.
var errSlotMoved = errors.New("redis unsubscribed the partition's channel: its slot moved to another master")

// handle delivers one published frame to the local members.
func (b *Redis) handle(m *redis.Message) {
	room, ok := b.keys.RoomOfChannel(m.Channel)
	if !ok || len(m.Payload) < 2 {
		return
	}
	st := b.room(room)
	if st == nil {
		return // unsubscribed meanwhile
	}
	if m.Payload[0] == payloadKick {
		if b.opts.Kick != nil {
			b.opts.Kick(room, m.Payload[1:])
		}
		return
	}
	flag, frame := m.Payload[0], []byte(m.Payload[1:])
	if flag == payloadOutbox {
		if len(m.Payload) < 2+tokenLen+1 {
			return
		}
		flag, frame = m.Payload[1+tokenLen], []byte(m.Payload[2+tokenLen:])
		if m.Payload[1:1+tokenLen] == b.token {
			// Replayed from this node's outbox: its members have it. A
			// kept one marks the history position recovery starts from.
			if flag == 'k' {
				id := history.IDOf(frame)
				st.mu.Lock()
				st.seen.add(id)
				st.lastKept = id
				st.mu.Unlock()
			}
			return
		}
	}
	kept, direct := flag == 'k', flag == 'd'
	if direct {
		id := history.IDOf(frame)
		var h directHeader
		if b.opts.Direct == nil || json.Unmarshal(frame, &h) != nil || h.To == "" {
			return
		}
		st.mu.Lock()
		if st.seen.add(id) {
			b.opts.Direct(room, frame, h.To, h.ClientID)
		}
		st.mu.Unlock()
		return
	}
	// Only a kept frame's id is used: ids serve recovery and a joiner's
	// dedup against its history, which concern kept frames only, and a
	// frame that is not kept may name another message's id (a delete frame
	// carries the id of the message it deletes) that must not be taken for
	// its own — its delivery would be dropped as a duplicate.
	var id string
	if kept {
		id = history.IDOf(frame)
	}
	if b.opts.OnLag != nil {
		if ts := frameTS(frame); ts > 0 {
			b.opts.OnLag(time.Since(time.UnixMilli(ts)))
		}
	}
	st.mu.Lock()
	if st.seen.add(id) {
		if kept {
			st.lastKept = id
		}
		b.opts.Deliver(room, id, frame, kept)
	}
	st.mu.Unlock()
}

// confirmed handles Redis's confirmation of a subscription: the first one
// activates the room (and notes the history's tail, the point recovery starts
// from); a later one means go-redis resubscribed after a reconnection, so the
// room recovers what it missed.
func (b *Redis) confirmed(room string) {
	b.mu.Lock()
	st := b.rooms[room]
	first := st != nil && !st.confirmed
	if first {
		st.confirmed = true
	}
	b.mu.Unlock()
	if st == nil {
		return
	}
	if first {
		tail, err := b.rdb.LIndex(b.ctx, b.HistoryKey(room), -1).Bytes()
		st.mu.Lock()
		if err == nil && st.lastKept == "" {
			st.lastKept = history.IDOf(tail)
		}
		st.mu.Unlock()
		close(st.active)
		return
	}
	b.recover(room, st)
}

// recover delivers the kept frames of room published after the last one this
// node delivered.
func (b *Redis) recover(room string, st *redisRoom) {
	raw, err := b.recoveryRead(room)
	if err != nil {
		b.log.Warn("recovering a room after resubscription: reading history failed", "room", room, "err", err)
		return
	}
	entries := make([]history.Entry, len(raw))
	for i, r := range raw {
		entries[i] = history.Entry{ID: history.IDOf([]byte(r)), Frame: []byte(r)}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lastKept == "" {
		// Never saw the history (Redis was down when the room was
		// subscribed): start from its tail now.
		if len(entries) > 0 {
			st.lastKept = entries[len(entries)-1].ID
		}
		return
	}
	missed, _ := history.Since(entries, st.lastKept)
	n := 0
	for _, e := range missed {
		// Not this node's own held frames: they were delivered here when
		// held, and seen may have forgotten them since.
		if b.ob.isOwn(e.ID) {
			st.seen.add(e.ID)
			st.lastKept = e.ID
			continue
		}
		if st.seen.add(e.ID) {
			b.opts.Deliver(room, e.ID, e.Frame, true)
			n++
		}
		st.lastKept = e.ID
	}
	if n > 0 {
		b.log.Info("recovered frames missed while disconnected", "room", room, "frames", n)
	}
	if b.opts.OnRecovered != nil {
		b.opts.OnRecovered(n)
	}
}

// recoveryAttempts and recoveryRetry bound recoveryRead's retries: about 2 s.
const (
	recoveryAttempts = 10
	recoveryRetry    = 200 * time.Millisecond
)

// recoveryRead reads room's history for recover. A read that fails right
// after a resubscription is tried again for a while: after a slot moved (a
// failover, resharding) the cluster client reloads its slot map lazily, and
// a first read may still go to the old master and meet MOVED, which the
// client does not follow (no redirects, see the server's client options).
func (b *Redis) recoveryRead(room string) ([]string, error) {
	var err error
	for attempt := range recoveryAttempts {
		if attempt > 0 {
			if cc, ok := b.rdb.(*redis.ClusterClient); ok {
				cc.ReloadState(b.ctx)
			}
			select {
			case <-time.After(recoveryRetry):
			case <-b.ctx.Done():
				return nil, b.ctx.Err()
			}
		}
		var raw []string
		if raw, err = b.rdb.LRange(b.ctx, b.HistoryKey(room), 0, -1).Result(); err == nil {
			return raw, nil
		}
	}
	return nil, err
}

// frameTS returns the envelope's ts (Unix ms), or 0. ts is the last field.
func frameTS(frame []byte) int64 {
	i := bytes.LastIndex(frame, []byte(`"ts":`))
	if i < 0 {
		return 0
	}
	rest := frame[i+5:]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	ts, _ := strconv.ParseInt(string(rest[:j]), 10, 64)
	return ts
}

// idRing is a bounded set of recently delivered ids: it makes delivery
// idempotent when recovery and live frames overlap.
type idRing struct {
	ids  []string
	set  map[string]struct{}
	next int
	cap  int
}

// add records id and reports whether it was new. An empty id is always new.
func (r *idRing) add(id string) bool {
	if id == "" {
		return true
	}
	if r.set == nil {
		if r.cap == 0 {
			r.cap = 512
		}
		r.set = make(map[string]struct{})
	}
	if _, dup := r.set[id]; dup {
		return false
	}
	if len(r.ids) < r.cap {
		r.ids = append(r.ids, id)
	} else {
		delete(r.set, r.ids[r.next])
		r.ids[r.next] = id
		r.next = (r.next + 1) % r.cap
	}
	r.set[id] = struct{}{}
	return true
}

var _ Broker = (*Redis)(nil)
