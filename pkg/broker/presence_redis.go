package broker

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
)

// Member is one connection in a room, as presence lists it.
type Member struct {
	ClientID int64  `json:"client_id"`
	Username string `json:"username"`
}

// ClientIDSpan is the number of client ids a node has: node N numbers its
// connections N*ClientIDSpan+1, +2, … — unique across the cluster and below
// 2^53, so JavaScript reads them exactly (node numbers up to 9,000,000).
const ClientIDSpan = 1_000_000_000

// RedisPresenceOptions configure RedisPresence.
type RedisPresenceOptions struct {
	// Client is the connection to Redis (a *redis.ClusterClient for a
	// cluster). Required; not closed by presence.
	Client redis.UniversalClient
	// KeyPrefix namespaces the keys. Zero means no prefix.
	KeyPrefix string
	// Partitions selects Redis Cluster key names when positive (see
	// internal/rediskeys); the broker's RedisOptions.Partitions. Zero: one Redis.
	Partitions int
	// TTL is how long a node's heartbeat key lives; it is refreshed every
	// TTL/3, and a node silent for TTL is dead: its members are removed and
	// `offline` goes out for them. Zero means 10s.
	TTL time.Duration
	// OnExpired is called, from presence's goroutine, for each member of a
	// dead node that this node reaped. The server publishes `offline` for it.
	OnExpired func(room string, m Member)
	// Log receives presence's logs. Nil: slog.Default().
	Log *slog.Logger
}

// RedisPresence keeps the members of every room across nodes in Redis.
//
// Its keys (P+"nodes", P+"node:"+N, P+"members:"+ROOM…) are listed and
// named in internal/rediskeys. On a Redis Cluster the members hashes are
// spread over the masters with their rooms while the node keys share one
// slot (so a master restarting empty loses a heartbeat only with the set of
// nodes naming it, and no live node is reaped): every command touches one
// key, pipelines are plain (split per master by go-redis), and a heartbeat
// that cannot be read (its master is down) counts as alive.
//
// Add and Remove never block on Redis: they update the node's local view and
// queue the write for presence's goroutine. Members lists this node's members
// from the local view and the other nodes' from Redis, leaving out nodes whose
// heartbeat expired. Any node reaps a dead node (one reaper per dead node, by
// SET NX): it deletes its members and reports each through OnExpired.
type RedisPresence struct {
	opts RedisPresenceOptions
	rdb  redis.UniversalClient
	keys rediskeys.Keys
	log  *slog.Logger
	node int64
	ttl  time.Duration

	mu    sync.Mutex
	local map[string]map[int64]Member // room → client → member
	ops   []presenceOp
	wake  chan struct{}

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type presenceOp struct {
	room   string
	m      Member
	remove bool
}

// NewRedisPresence numbers this node (INCR; a random number if Redis is
// unreachable at start, so the server starts all the same), and starts the
// heartbeat and reaper goroutine; Close stops it.
func NewRedisPresence(opts RedisPresenceOptions) *RedisPresence {
	if opts.Client == nil {
		panic("broker: NewRedisPresence needs a Client")
	}
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
	}
	p := &RedisPresence{
		opts:  opts,
		rdb:   opts.Client,
		keys:  rediskeys.Keys{Prefix: opts.KeyPrefix, Partitions: opts.Partitions},
		log:   opts.Log,
		ttl:   opts.TTL,
		local: map[string]map[int64]Member{},
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	n, err := p.claimNumber()
	if err != nil || n <= 0 || n >= 9_000_000 {
		r, rerr := rand.Int(rand.Reader, big.NewInt(8_000_000))
		if rerr != nil {
			r = big.NewInt(time.Now().UnixNano() % 8_000_000)
		}
		n = 1_000_000 + r.Int64()
		p.log.Warn("redis unreachable at start: this node took a random node number", "node", n, "err", err)
	}
	p.node = n
	go p.run()
	return p
}

// claimNumber takes the next node number whose heartbeat key is free (it
// could be taken if Redis lost nodes:seq, e.g. restarted without persistence;
// live nodes also push nodes:seq back above their numbers, see bumpSeq).
func (p *RedisPresence) claimNumber() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		n, err := p.rdb.Incr(ctx, p.keys.NodeSeq()).Result()
		if err != nil {
			return 0, err
		}
		ok, err := p.rdb.SetNX(ctx, p.keys.Node(strconv.FormatInt(n, 10)), "1", p.ttl).Result()
		if err != nil || ok {
			return n, err
		}
	}
}

// bumpSeq raises nodes:seq to at least ARGV[1].
var bumpSeq = redis.NewScript(`
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
`)

// Node is this node's number.
func (p *RedisPresence) Node() int64 { return p.node }

func (p *RedisPresence) field(clientID int64) string {
	return strconv.FormatInt(p.node, 10) + ":" + strconv.FormatInt(clientID, 10)
}

// Add records m as a member of room (also after a rename). It does not block.
func (p *RedisPresence) Add(room string, m Member) {
	p.mu.Lock()
	r := p.local[room]
	if r == nil {
		r = map[int64]Member{}
		p.local[room] = r
	}
	r[m.ClientID] = m
	p.ops = append(p.ops, presenceOp{room: room, m: m})
	p.mu.Unlock()
	p.signal()
}

// Remove forgets clientID in room. It does not block.
func (p *RedisPresence) Remove(room string, clientID int64) {
	p.mu.Lock()
	if r := p.local[room]; r != nil {
		delete(r, clientID)
		if len(r) == 0 {
			delete(p.local, room)
		}
	}
	p.ops = append(p.ops, presenceOp{room: room, m: Member{ClientID: clientID}, remove: true})
	p.mu.Unlock()
	p.signal()
}

// Members lists the members of room on every live node, by client id.
func (p *RedisPresence) Members(ctx context.Context, room string) ([]Member, error) {
	p.mu.Lock()
	out := make([]Member, 0, len(p.local[room]))
	for _, m := range p.local[room] {
		out = append(out, m)
	}
	p.mu.Unlock()

	all, err := p.rdb.HGetAll(ctx, p.keys.Members(room)).Result()
	if err != nil {
		return out, err
	}
	me := strconv.FormatInt(p.node, 10)
	byNode := map[string][]Member{}
	for f, v := range all {
		node, _, ok := strings.Cut(f, ":")
		if !ok || node == me {
			continue
		}
		var m Member
		if json.Unmarshal([]byte(v), &m) == nil {
			byNode[node] = append(byNode[node], m)
		}
	}
	if len(byNode) > 0 {
		pipe := p.rdb.Pipeline()
		alive := map[string]*redis.IntCmd{}
		for node := range byNode {
			alive[node] = pipe.Exists(ctx, p.keys.Node(node))
		}
		if _, err := pipe.Exec(ctx); err != nil && !p.keys.Cluster() {
			return out, err
		}
		for node, ms := range byNode {
			// On a cluster a node's heartbeat may live on a master that is
			// down while the room's is up: such a node is taken as alive,
			// as the reaper does (it reaps only a heartbeat known gone).
			if c := alive[node]; c.Val() == 1 || c.Err() != nil {
				out = append(out, ms...)
			}
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return out, nil
}

// Close stops the goroutine, waits for it, and removes this node from Redis
// (its heartbeat and what is left of its members). It is idempotent.
func (p *RedisPresence) Close() error {
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.flush(ctx)
		me := strconv.FormatInt(p.node, 10)
		rooms, _ := p.rdb.SMembers(ctx, p.keys.NodeRooms(me)).Result()
		// One MULTI on one Redis. A cluster's MULTI cannot span slots, and
		// these keys are spread over them: a plain pipeline there (go-redis
		// splits it per master). Nothing needs the removal to be atomic:
		// what a failure leaves, the reaper removes once the heartbeat is gone.
		pipe := p.rdb.TxPipeline()
		if p.keys.Cluster() {
			pipe = p.rdb.Pipeline()
		}
		for _, room := range rooms {
			p.mu.Lock()
			for id := range p.local[room] {
				pipe.HDel(ctx, p.keys.Members(room), p.field(id))
			}
			p.mu.Unlock()
		}
		pipe.Del(ctx, p.keys.Node(me)) // one DEL per key: a DEL of both would be CROSSSLOT
		pipe.Del(ctx, p.keys.NodeRooms(me))
		pipe.SRem(ctx, p.keys.Nodes(), me)
		_, _ = pipe.Exec(ctx)
	})
	return nil
}

func (p *RedisPresence) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run writes queued changes, beats the heart and reaps dead nodes.
func (p *RedisPresence) run() {
	defer close(p.done)
	tick := time.NewTicker(p.ttl / 3)
	defer tick.Stop()
	ctx := context.Background()
	resync := false
	reapAfter := time.Time{}
	beat := func() {
		c, cancel := context.WithTimeout(ctx, p.ttl/3)
		defer cancel()
		me := strconv.FormatInt(p.node, 10)
		err := p.rdb.SetArgs(c, p.keys.Node(me), "1", redis.SetArgs{TTL: p.ttl, Get: true}).Err()
		switch {
		case err == redis.Nil:
			// The key was missing: first beat, or we were cut off longer than
			// the TTL and others may have reaped us. Write our members again.
			resync = true
			reapAfter = time.Now().Add(p.ttl)
		case err != nil:
			resync = true
			reapAfter = time.Now().Add(p.ttl)
			return
		}
		_ = p.rdb.SAdd(c, p.keys.Nodes(), me).Err()
		if resync {
			// Redis may have lost nodes:seq too: keep new nodes off our number.
			_ = bumpSeq.Run(c, p.rdb, []string{p.keys.NodeSeq()}, p.node).Err()
			if p.resync(c) == nil {
				resync = false
			}
		}
		if time.Now().After(reapAfter) {
			p.reap(c)
		}
	}
	beat()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
			beat()
		case <-p.wake:
			c, cancel := context.WithTimeout(ctx, p.ttl/3)
			if !p.flush(c) {
				resync = true
			}
			cancel()
		}
	}
}

// flush writes the queued changes; on failure they are dropped and the caller
// resyncs the whole local view later. It reports success.
func (p *RedisPresence) flush(ctx context.Context) bool {
	p.mu.Lock()
	ops := p.ops
	p.ops = nil
	p.mu.Unlock()
	if len(ops) == 0 {
		return true
	}
	me := strconv.FormatInt(p.node, 10)
	// Rooms this node has no member in any more leave its rooms set (the
	// candidates of Rooms), so the set does not grow with every room ever
	// joined.
	p.mu.Lock()
	left := map[string]bool{}
	for _, op := range ops {
		if op.remove && len(p.local[op.room]) == 0 {
			left[op.room] = true
		}
	}
	p.mu.Unlock()
	pipe := p.rdb.Pipeline()
	for _, op := range ops {
		h := p.keys.Members(op.room)
		if op.remove {
			pipe.HDel(ctx, h, p.field(op.m.ClientID))
			if left[op.room] {
				pipe.SRem(ctx, p.keys.NodeRooms(me), op.room)
			}
			continue
		}
		v, _ := json.Marshal(op.m)
		pipe.HSet(ctx, h, p.field(op.m.ClientID), v)
		pipe.SAdd(ctx, p.keys.NodeRooms(me), op.room)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		p.log.Warn("presence: writing members failed; will resync", "err", err)
		return false
	}
	return true
}

// resync rewrites this node's members in Redis from the local view.
func (p *RedisPresence) resync(ctx context.Context) error {
	me := strconv.FormatInt(p.node, 10)
	roomsKey := p.keys.NodeRooms(me)
	rooms, err := p.rdb.SMembers(ctx, roomsKey).Result()
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ops = nil // the local view below includes them
	local := make(map[string][]Member, len(p.local))
	for room, ms := range p.local {
		for _, m := range ms {
			local[room] = append(local[room], m)
		}
	}
	p.mu.Unlock()
	pipe := p.rdb.Pipeline()
	for _, room := range rooms {
		all, err := p.rdb.HKeys(ctx, p.keys.Members(room)).Result()
		if err != nil {
			return err
		}
		for _, f := range all {
			if strings.HasPrefix(f, me+":") {
				pipe.HDel(ctx, p.keys.Members(room), f)
			}
		}
	}
	for room, ms := range local {
		for _, m := range ms {
			v, _ := json.Marshal(m)
			pipe.HSet(ctx, p.keys.Members(room), p.field(m.ClientID), v)
		}
		pipe.SAdd(ctx, roomsKey, room)
	}
	_, err = pipe.Exec(ctx)
	return err
}

// reap removes the members of nodes whose heartbeat expired and reports them.
func (p *RedisPresence) reap(ctx context.Context) {
	me := strconv.FormatInt(p.node, 10)
	nodes, err := p.rdb.SMembers(ctx, p.keys.Nodes()).Result()
	if err != nil {
		return
	}
	for _, n := range nodes {
		if n == me {
			continue
		}
		if alive, err := p.rdb.Exists(ctx, p.keys.Node(n)).Result(); err != nil || alive == 1 {
			continue
		}
		ok, err := p.rdb.SetNX(ctx, p.keys.Reap(n), me, time.Minute).Result()
		if err != nil || !ok {
			continue // another node reaps it
		}
		rooms, _ := p.rdb.SMembers(ctx, p.keys.NodeRooms(n)).Result()
		gone := 0
		for _, room := range rooms {
			h := p.keys.Members(room)
			all, err := p.rdb.HGetAll(ctx, h).Result()
			if err != nil {
				continue
			}
			for f, v := range all {
				if !strings.HasPrefix(f, n+":") {
					continue
				}
				if removed, _ := p.rdb.HDel(ctx, h, f).Result(); removed != 1 {
					continue
				}
				var m Member
				if json.Unmarshal([]byte(v), &m) == nil && p.opts.OnExpired != nil {
					p.opts.OnExpired(room, m)
				}
				gone++
			}
		}
		p.rdb.Del(ctx, p.keys.NodeRooms(n))
		p.rdb.SRem(ctx, p.keys.Nodes(), n)
		p.log.Info("reaped a dead node's members", "node", n, "members", gone)
	}
}
