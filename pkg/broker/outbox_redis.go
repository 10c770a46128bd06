package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/backoff"
)

// The outbox: what a Redis broker accepted while Redis could not take it.
//
// When a publish cannot reach Redis, the frame is delivered to this node's
// members at once (live chat on the node goes on) and held in the outbox, in
// the order it was delivered. Once Redis is back and the node has been
// resubscribed for ReplaySettle (time for the other nodes to resubscribe
// too), the replay goroutine publishes the held frames, oldest first, at most
// ReplayRate a second, through replayScript: kept frames land in history
// then, once, in this node's delivery order, and every other node receives
// them live. While the outbox holds anything, new publishes queue behind it
// (and are delivered here at once), so each sender's frames reach the other
// nodes in the order sent.
//
// The outbox is the only path to history for the frames it holds: the
// history store's own write queue is not used for them, so nothing is
// written twice. A replayed frame travels with payloadOutbox and this
// broker's token: this node drops it (its members have it already); the
// others deliver it and drop ids they delivered already (idRing), so a frame
// that reached them through recovery from history is not delivered twice.
//
// The outbox is bounded (OutboxSize). When it is full, the oldest frame not
// being replayed is dropped: counted (OnOutboxDropped), logged at most once a
// second, and announced: before the frames that follow the hole, the replay
// publishes a kept frame built by GapFrame saying how many frames of the
// room were lost, so the members of other nodes — and history readers — are
// told rather than left with a silent hole.
//
// The outbox lives in memory: a node killed while its outbox holds frames
// loses them (they were delivered on that node only). A frame that is not
// kept (online, offline, direct) whose direct publish failed after it may
// have reached Redis can be delivered twice on other nodes (only kept
// frames are checked against the history, and direct ones are deduplicated
// by id); a node that resubscribes more than ReplaySettle after the others
// gets kept frames replayed meanwhile from history (recover) but not the
// others.

// payloadOutbox starts a replayed frame on a room's channel: 'o', the
// publishing broker's token (tokenLen bytes), the frame's own flag ('k',
// 'n' or 'd'), then the frame.
const payloadOutbox = 'o'

// tokenLen is the length of a broker's token (hex).
const tokenLen = 16

// replayBatchSize is the most frames one replay round trip publishes; a
// round trip publishes ReplayRate/20 (a 20th of a second's worth) at most.
const replayBatchSize = 256

// replayScript is publishScript for a frame replayed from an outbox: the
// published payload starts with ARGV[5] (payloadOutbox, the token and the
// flag) instead of the bare flag. When ARGV[6] is not empty (the frame's
// direct publish failed after it may have reached Redis), a kept frame whose
// id prefix ARGV[6] is among the history's last ARGV[4] entries is neither
// appended nor published again.
//
// KEYS[1] history list; ARGV[1] channel, ARGV[2] frame, ARGV[3] 'k' (keep),
// 'n' or 'd', ARGV[4] history size, ARGV[5] payload header, ARGV[6] "" or
// `{"id":"ID"`.
var replayScript = redis.NewScript(replaySrc)

// sreplayScript is replayScript for a Redis Cluster: SPUBLISH on KEYS[2],
// the room's sharded channel (see spublishScript).
var sreplayScript = redis.NewScript(shardedSrc(replaySrc))

const replaySrc = `
if ARGV[3] == 'k' then
  if ARGV[6] ~= '' then
    local tail = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[4]), -1)
    for i = #tail, 1, -1 do
      if string.sub(tail[i], 1, #ARGV[6]) == ARGV[6] then return 0 end
    end
  end
  redis.call('RPUSH', KEYS[1], ARGV[2])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
end
return redis.call('PUBLISH', ARGV[1], ARGV[5] .. ARGV[2])
`

// held is one frame in the outbox.
type held struct {
	room, id string
	frame    []byte
	flag     byte // 'k' kept, 'n' not kept, 'd' direct
	// maybe: a publish of it failed after it may have reached Redis; the
	// replay checks the history before appending it again.
	maybe bool
	// plain: published before the outage (see recent); replayed with its
	// bare flag, so every node, this one too, delivers it unless it has.
	plain bool
}

// outbox is the bounded FIFO of held frames. front holds the frames put back
// by rehold (at most recentMax; replayed first, never dropped); q the frames
// held since, at most max, the oldest dropped when full. The batch the
// replay goroutine is publishing is the first inflight frames of front (when
// fromFront) or of q: it is never dropped.
type outbox struct {
	max  int
	n    atomic.Int64 // len(front)+len(q), read without the lock by Publish
	wake chan struct{}

	mu        sync.Mutex
	front     []held
	q         []held
	inflight  int
	fromFront bool
	rooms     map[string]int // held frames per room (WaitSubscribed)
	gaps      map[string]int // frames dropped per room, not yet announced
	own       idRing         // ids of kept frames held here: recovery skips them
	dropLog   time.Time
	dropN     int
}

func newOutbox(max int) *outbox {
	return &outbox{
		max:   max,
		wake:  make(chan struct{}, 1),
		rooms: map[string]int{},
		gaps:  map[string]int{},
		own:   idRing{cap: max},
	}
}

func (o *outbox) countLocked() { o.n.Store(int64(len(o.front) + len(o.q))) }

// push appends h, dropping the oldest frame of q not in flight when full. It
// returns how many frames were dropped and, at most once a second, how many
// drops to log.
func (o *outbox) push(h held) (dropped, toLog int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.q) >= o.max {
		busy := 0 // q's frames in flight
		if !o.fromFront {
			busy = o.inflight
		}
		victim, self := h, true // when everything held is in flight, the new frame goes
		if busy < len(o.q) {
			self = false
			victim = o.q[busy]
			if busy == 0 {
				o.q[0] = held{}
				o.q = o.q[1:]
			} else {
				o.q = slices.Delete(o.q, busy, busy+1)
			}
			o.rooms[victim.room]--
			if o.rooms[victim.room] == 0 {
				delete(o.rooms, victim.room)
			}
		}
		o.gaps[victim.room]++
		dropped = 1
		o.dropN++
		if now := time.Now(); now.Sub(o.dropLog) >= time.Second {
			toLog, o.dropN, o.dropLog = o.dropN, 0, now
		}
		if self {
			o.countLocked()
			return dropped, toLog
		}
	}
	o.q = append(o.q, h)
	o.rooms[h.room]++
	if h.flag == 'k' {
		o.own.add(h.id)
	}
	o.countLocked()
	return dropped, toLog
}

// take marks up to max frames at the head (of front, else of q) as in flight
// and returns copies of them, with the gaps to announce first (taken out of
// the outbox).
func (o *outbox) take(max int) (batch []held, gaps map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fromFront = len(o.front) > 0
	src := o.q
	if o.fromFront {
		src = o.front
	}
	o.inflight = min(len(src), max)
	batch = slices.Clone(src[:o.inflight])
	if len(o.gaps) > 0 {
		gaps, o.gaps = o.gaps, map[string]int{}
	}
	return batch, gaps
}

// finish removes the first done frames of the batch in flight; the rest of
// it stays at the head, marked maybe when failed, and unannounced gaps go
// back.
func (o *outbox) finish(done int, failed bool, gaps map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	src := &o.q
	if o.fromFront {
		src = &o.front
	}
	for _, h := range (*src)[:done] {
		o.rooms[h.room]--
		if o.rooms[h.room] == 0 {
			delete(o.rooms, h.room)
		}
	}
	if failed {
		for i := done; i < o.inflight; i++ {
			(*src)[i].maybe = true
		}
	}
	clear((*src)[:done])
	*src = (*src)[done:]
	if len(*src) == 0 {
		*src = nil // let the backing array go
	}
	o.inflight, o.fromFront = 0, false
	for room, n := range gaps {
		o.gaps[room] += n
	}
	o.countLocked()
}

func (o *outbox) holds(room string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rooms[room] > 0
}

func (o *outbox) isOwn(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.own.set[id]
	return ok
}

// Held returns the number of frames in the outbox: accepted while Redis
// could not take them, not yet replayed.
func (b *Redis) Held() int { return int(b.ob.n.Load()) }

// recentWindow is how far back the frames a node published are held again
// when its subscription fails (see recent).
const recentWindow = time.Second

// recentMax bounds the frames recent remembers: well under the dedupe ring
// (seenSize, at least 256), which must still hold their ids when their
// replays arrive.
const recentMax = 64

// recent remembers the kept and direct frames this node published in the
// last recentWindow. When Redis dies it may not have written them to every
// subscriber yet: a node whose subscription lost them recovers kept frames
// from history — unless Redis comes back empty. So when the subscription
// fails, they go back in the outbox, ahead of what is held, to be replayed
// with their bare flag and a history check: a node that has one drops it by
// id (held frames are not recorded in seen, so the ids delivered before the
// outage are still there), and a kept one still in history is neither
// appended nor published again. Frames that are not kept (presence) are not
// remembered: they have no id to be deduplicated by.
type recent struct {
	mu     sync.Mutex
	frames []recentFrame // oldest first
}

type recentFrame struct {
	h  held
	at time.Time
}

func (r *recent) add(h held) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for i < len(r.frames) && (now.Sub(r.frames[i].at) > recentWindow || len(r.frames)-i >= recentMax) {
		i++
	}
	if i > 0 {
		clear(r.frames[:i])
		r.frames = r.frames[i:]
	}
	r.frames = append(r.frames, recentFrame{h: h, at: now})
}

// take returns the frames of the last recentWindow and forgets them all.
func (r *recent) take() []held {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []held
	for _, f := range r.frames {
		if now.Sub(f.at) <= recentWindow {
			out = append(out, f.h)
		}
	}
	r.frames = nil
	return out
}

// unshift puts hs at the head of the outbox (in front, after a batch in
// flight from it).
func (o *outbox) unshift(hs []held) {
	if len(hs) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	busy := 0
	if o.fromFront {
		busy = o.inflight
	}
	f := make([]held, 0, len(o.front)+len(hs))
	o.front = append(append(append(f, o.front[:busy]...), hs...), o.front[busy:]...)
	for _, h := range hs {
		o.rooms[h.room]++
	}
	o.countLocked()
}

// rehold puts the frames published in the last recentWindow back in the
// outbox (the subscription just failed, or a publish did). Those whose echo
// has not come back yet are delivered to this node's members now, before
// anything held after them, so each sender's order holds here too; their
// ids go in seen, so their replay or recovery is dropped here.
func (b *Redis) rehold() {
	hs := b.recent.take()
	if len(hs) == 0 {
		return
	}
	for _, h := range hs {
		st := b.room(h.room)
		if st == nil {
			continue
		}
		st.mu.Lock()
		if st.seen.add(h.id) {
			switch h.flag {
			case 'k':
				b.opts.Deliver(h.room, h.id, h.frame, true)
			case 'd':
				var dh directHeader
				if b.opts.Direct != nil && json.Unmarshal(h.frame, &dh) == nil {
					b.opts.Direct(h.room, h.frame, dh.To, dh.ClientID)
				}
			}
		}
		st.mu.Unlock()
	}
	b.ob.unshift(hs)
	b.outboxChanged(0, 0)
	select {
	case b.ob.wake <- struct{}{}:
	default:
	}
}

// newToken returns a random token naming this broker in replayed payloads.
func newToken() string {
	b := make([]byte, tokenLen/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// direct reports whether a publish may go straight to Redis: Redis is
// reachable and nothing is held (else the frame queues behind what is, to
// keep each sender's order).
func (b *Redis) direct() bool { return !b.down.Load() && b.ob.n.Load() == 0 }

// hold delivers a frame Redis did not take to this node's members (deliver,
// called with the room's lock held, st nil when the node has no members in
// room) and puts it in the outbox, in that same order.
func (b *Redis) hold(h held, deliver func(st *redisRoom)) {
	if b.opts.OnFallback != nil {
		b.opts.OnFallback()
	}
	b.rehold() // the publish failed: what went before it comes first
	st := b.room(h.room)
	if st != nil {
		st.mu.Lock()
	}
	dropped, toLog := b.ob.push(h)
	deliver(st)
	if st != nil {
		st.mu.Unlock()
	}
	b.outboxChanged(dropped, toLog)
	select {
	case b.ob.wake <- struct{}{}:
	default:
	}
}

func (b *Redis) outboxChanged(dropped, toLog int) {
	if b.opts.OnOutboxDepth != nil {
		b.opts.OnOutboxDepth(int(b.ob.n.Load()))
	}
	if dropped > 0 && b.opts.OnOutboxDropped != nil {
		b.opts.OnOutboxDropped(dropped)
	}
	if toLog > 0 {
		b.log.Error("broker outbox full: dropped the oldest frames Redis has not taken; other nodes miss them and will be told",
			"dropped", toLog, "outbox_size", b.ob.max)
	}
}

// settled reports whether held frames may be replayed: Redis is reachable and
// the subscription has been back for ReplaySettle, time for the other nodes
// (which retry at least once a second) to have resubscribed too.
func (b *Redis) settled() bool {
	return !b.down.Load() && time.Since(time.Unix(0, b.upAt.Load())) >= b.opts.ReplaySettle
}

// replayLoop publishes held frames in order whenever Redis takes them. It
// is owned by the broker (Close stops it).
func (b *Redis) replayLoop() {
	defer b.wg.Done()
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	failing := false // the last replay failed (its warning was logged)
	for {
		if b.ob.n.Load() > 0 && b.settled() {
			n, err := b.replayBatch()
			if err == nil {
				failing = false
				bo.Reset()
				// Paced: the other nodes' members get the held frames
				// on top of live traffic, and a member whose send queue
				// fills is cut off as too slow.
				select {
				case <-b.ctx.Done():
					return
				case <-time.After(time.Duration(n) * time.Second / time.Duration(b.opts.ReplayRate)):
				}
				continue
			}
			if !failing {
				b.log.Warn("replaying the broker outbox failed; retrying", "held", b.ob.n.Load(), "err", err)
			}
			failing = true
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(bo.Next()):
			}
			continue
		}
		var poll <-chan time.Time
		if b.ob.n.Load() > 0 {
			poll = time.After(50 * time.Millisecond) // waiting to settle
		}
		select {
		case <-b.ctx.Done():
			return
		case <-b.ob.wake:
		case <-poll:
		}
	}
}

// replayBatch publishes the gaps to announce and then up to replayBatchSize
// held frames, in one pipeline, and removes from the outbox what Redis took.
func (b *Redis) replayBatch() (int, error) {
	batch, gaps := b.ob.take(min(replayBatchSize, max(1, b.opts.ReplayRate/20)))
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if err := b.loadScript(ctx, b.replay); err != nil {
		b.ob.finish(0, true, gaps)
		return 0, fmt.Errorf("loading the replay script: %w", err)
	}
	pipe := b.rdb.Pipeline()
	var gapRooms []string
	if b.opts.GapFrame != nil {
		for room, n := range gaps {
			id, frame := b.opts.GapFrame(room, n)
			gapRooms = append(gapRooms, room)
			b.replayCmd(ctx, pipe, held{room: room, id: id, frame: frame, flag: 'k'})
		}
	} else {
		gaps = nil
	}
	for _, h := range batch {
		b.replayCmd(ctx, pipe, h)
	}
	cmds, err := pipe.Exec(ctx)
	unsent := map[string]int{}
	for i, room := range gapRooms {
		if i >= len(cmds) || cmds[i].Err() != nil {
			unsent[room] = gaps[room]
		}
	}
	done := 0
	for _, c := range cmds[min(len(gapRooms), len(cmds)):] {
		if c.Err() != nil {
			break
		}
		done++
	}
	b.ob.finish(done, err != nil, unsent)
	b.outboxChanged(0, 0)
	if done > 0 && b.opts.OnReplayed != nil {
		b.opts.OnReplayed(done)
	}
	if err != nil {
		return done, fmt.Errorf("replaying %d held frames (%d taken): %w", len(batch), done, err)
	}
	if b.ob.n.Load() == 0 {
		b.log.Info("broker outbox replayed: the other nodes have every frame this node held")
	}
	return done + len(gapRooms), nil
}

func (b *Redis) replayCmd(ctx context.Context, pipe redis.Pipeliner, h held) {
	check := ""
	if h.maybe && h.flag == 'k' {
		check = `{"id":"` + h.id + `"`
	}
	header := string([]byte{payloadOutbox}) + b.token + string([]byte{h.flag})
	if h.plain {
		header = string([]byte{h.flag})
	}
	pipe.EvalSha(ctx, b.replay.Hash(), b.scriptKeys(h.room),
		b.Channel(h.room), h.frame, string([]byte{h.flag}), b.size, header, check)
}

// loadScript loads script where this broker runs it: on one Redis, or on a
// cluster on the master of this partition's slot only — a cluster-wide
// SCRIPT LOAD would fail while any other master is down, and this
// partition's publishes and replay must not wait for those.
func (b *Redis) loadScript(ctx context.Context, script *redis.Script) error {
	if cc, ok := b.rdb.(*redis.ClusterClient); ok && b.sharded() {
		master, err := cc.MasterForKey(ctx, b.keys.PartitionChannel(b.part))
		if err != nil {
			return fmt.Errorf("finding the master of partition %d: %w", b.part, err)
		}
		return script.Load(ctx, master).Err()
	}
	return script.Load(ctx, b.rdb).Err()
}
