package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/pkg/history"
)

// publishScript appends the frame to the room's history (when keep) and
// publishes it, in one atomic step: Redis runs scripts one at a time, so the
// order of the history list is the order in which every subscriber on every
// node receives the frames of a room.
//
// KEYS[1] history list; ARGV[1] channel, ARGV[2] frame, ARGV[3] "k" (keep) or
// "n", ARGV[4] history size.
var publishScript = redis.NewScript(`
if ARGV[3] == 'k' then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
end
return redis.call('PUBLISH', ARGV[1], ARGV[3] .. ARGV[2])
`)

// RedisOptions configure a Redis broker.
type RedisOptions struct {
	// Client is the connection to Redis. Required; the broker does not close it.
	Client *redis.Client
	// KeyPrefix namespaces keys and channels: the history of room R is the
	// list KeyPrefix+"history:"+R (the Redis history store's key) and its
	// channel is KeyPrefix+"room:"+R. Zero means no prefix.
	KeyPrefix string
	// HistorySize is the number of frames kept per room. Zero means 100.
	HistorySize int
	// Store is the configured history store. When Redis cannot be reached,
	// Publish appends kept frames through it (the Redis store queues them
	// until Redis is back). Nil: such frames are not kept.
	Store history.Store
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
	// OnStoreError is called when a fallback history append fails.
	OnStoreError func(room string, err error)
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
// When Redis cannot be reached at all, Publish falls back to delivering on this
// node and appending through the history store, so live chat on one node goes
// on; other nodes get those frames from the history when they recover.
type Redis struct {
	opts       RedisOptions
	rdb        *redis.Client
	ps         *redis.PubSub
	log        *slog.Logger
	histPrefix string
	chanPrefix string
	size       int
	seenSize   int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// down is set while the subscription connection is failing; Publish then
	// skips Redis and falls back at once instead of waiting for timeouts.
	down atomic.Bool

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

// NewRedis returns a Redis broker and starts its goroutines; Close stops them.
func NewRedis(opts RedisOptions) *Redis {
	if opts.Client == nil || opts.Deliver == nil {
		panic("broker: NewRedis needs a Client and a Deliver function")
	}
	if opts.HistorySize <= 0 {
		opts.HistorySize = 100
	}
	b := &Redis{
		opts:       opts,
		rdb:        opts.Client,
		log:        opts.Log,
		histPrefix: opts.KeyPrefix + "history:",
		chanPrefix: opts.KeyPrefix + "room:",
		size:       opts.HistorySize,
		seenSize:   max(2*opts.HistorySize, 256),
		rooms:      map[string]*redisRoom{},
		changed:    make(chan struct{}, 1),
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.ps = b.rdb.Subscribe(b.ctx) // no channel yet: the connection is made lazily
	b.wg.Add(2)
	go b.control()
	go b.receive()
	return b
}

// HistoryKey is the list that holds room's history.
func (b *Redis) HistoryKey(room string) string { return b.histPrefix + room }

// Channel is the Pub/Sub channel of room.
func (b *Redis) Channel(room string) string { return b.chanPrefix + room }

// Publish implements Broker.
func (b *Redis) Publish(ctx context.Context, room, id string, frame []byte, keep bool) error {
	flag := "n"
	if keep {
		flag = "k"
	}
	if !b.down.Load() {
		err := publishScript.Run(ctx, b.rdb, []string{b.HistoryKey(room)},
			b.Channel(room), frame, flag, b.size).Err()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		b.log.Warn("redis publish failed; delivering on this node only", "room", room, "id", id, "err", err)
	}
	// Redis is unreachable: live chat on this node goes on.
	if b.opts.OnFallback != nil {
		b.opts.OnFallback()
	}
	kept := keep && b.opts.Store != nil
	st := b.room(room)
	if st != nil {
		// Append and deliver under the room's lock, so that two publishes
		// to the room are kept in the order they are delivered (as the
		// publish script keeps them on the Redis path).
		st.mu.Lock()
		defer st.mu.Unlock()
	}
	if kept {
		if err := b.opts.Store.Append(ctx, room, id, frame); err != nil {
			b.log.Error("history append failed; message delivered but not kept", "room", room, "id", id, "err", err)
			if b.opts.OnStoreError != nil {
				b.opts.OnStoreError(room, err)
			}
		}
	}
	if st != nil && st.seen.add(id) {
		b.opts.Deliver(room, id, frame, kept)
	}
	return nil
}

// PublishDirect implements Broker. The frame travels on the room's channel
// (payload prefix 'd'), so it keeps its place among the room's frames; each
// node hands it to its own connections of the recipient and the sender.
// With Redis unreachable it is delivered on this node only.
func (b *Redis) PublishDirect(ctx context.Context, room string, frame []byte, to string, from int64) error {
	if b.opts.Direct == nil {
		return errNoDirect
	}
	if !b.down.Load() {
		err := b.rdb.Publish(ctx, b.Channel(room), append([]byte{'d'}, frame...)).Err()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		b.log.Warn("redis publish failed; delivering on this node only", "room", room, "err", err)
	}
	if b.opts.OnFallback != nil {
		b.opts.OnFallback()
	}
	if st := b.room(room); st != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		if !st.seen.add(history.IDOf(frame)) {
			return nil
		}
	}
	b.opts.Direct(room, frame, to, from)
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

// WaitSubscribed waits until Redis confirmed the subscription to room (or ctx
// ends). The server calls it after a client joined and before it reads the
// history, so that nothing published in between is missed. While Redis is
// unreachable it returns at once: there is nothing to wait for.
func (b *Redis) WaitSubscribed(ctx context.Context, room string) error {
	b.mu.Lock()
	st := b.rooms[room]
	b.mu.Unlock()
	if st == nil {
		return nil
	}
	if b.down.Load() {
		select {
		case <-st.active:
			return nil
		default:
			return errDown
		}
	}
	select {
	case <-st.active:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ping implements Broker.
func (b *Redis) Ping(ctx context.Context) error { return b.rdb.Ping(ctx).Err() }

// Close implements Broker: it stops the goroutines and waits for them. It is
// idempotent. The Redis client stays open (its owner closes it).
func (b *Redis) Close() error {
	b.once.Do(func() {
		b.cancel()
		_ = b.ps.Close()
		b.wg.Wait()
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
		if len(unsub) > 0 {
			if err := b.ps.Unsubscribe(b.ctx, unsub...); err != nil && b.ctx.Err() == nil {
				b.log.Warn("redis unsubscribe failed", "channels", unsub, "err", err)
			}
		}
		if len(sub) > 0 {
			if err := b.ps.Subscribe(b.ctx, sub...); err != nil && b.ctx.Err() == nil {
				b.log.Warn("redis subscribe failed; will retry on reconnect", "channels", sub, "err", err)
			}
		}
	}
}

// receive is the subscription's only reader: it delivers messages, notices
// confirmations and reconnections, and recovers missed frames.
func (b *Redis) receive() {
	defer b.wg.Done()
	backoff := 50 * time.Millisecond
	failed := false
	for {
		msg, err := b.ps.ReceiveTimeout(b.ctx, 5*time.Second)
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet: make sure the connection is alive (a reply, or an
				// error that makes go-redis reconnect).
				_ = b.ps.Ping(b.ctx)
				continue
			}
			if !failed {
				b.log.Warn("redis subscription connection lost; reconnecting", "err", err)
			}
			failed = true
			b.down.Store(true)
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if failed {
			failed = false
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
			if room, ok := strings.CutPrefix(m.Channel, b.chanPrefix); ok && m.Kind == "subscribe" {
				b.confirmed(room)
			}
		}
	}
}

// handle delivers one published frame to the local members.
func (b *Redis) handle(m *redis.Message) {
	room, ok := strings.CutPrefix(m.Channel, b.chanPrefix)
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
	kept, direct := m.Payload[0] == 'k', m.Payload[0] == 'd'
	frame := []byte(m.Payload[1:])
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
	raw, err := b.rdb.LRange(b.ctx, b.HistoryKey(room), 0, -1).Result()
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
