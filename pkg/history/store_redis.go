package history

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/chatserver/chatserver/internal/backoff"
	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redisping"
)

// RedisOptions configure a Redis store. URL or Client is required.
type RedisOptions struct {
	// URL is a redis://, rediss:// or unix:// URL. An unparseable URL makes
	// NewRedis fail (a configuration error); an unreachable server does not.
	// Ignored when Client is set.
	URL string
	// Client, if set, is the client the store uses instead of dialling URL:
	// the server's one Redis client, shared with the broker. The store does
	// not close it; its owner closes it after Close returned. It should not
	// retry commands itself (MaxRetries -1): the writer retries, in order.
	// Nil: the store dials URL and closes that client on Close.
	Client redis.UniversalClient
	// KeyPrefix namespaces every key: room R lives in the LIST
	// KeyPrefix+"history:"+R. Empty means no prefix, as for the Redis broker,
	// which writes the same lists (the config's default is "chatserver:").
	KeyPrefix string
	// Partitions selects Redis Cluster key names (hash-tagged, see
	// internal/rediskeys) when positive; Client must then be a
	// *redis.ClusterClient. Zero means one Redis and the plain names.
	Partitions int
	// Size is the number of entries kept per room. Default 100.
	Size int
	// QueueSize bounds the entries waiting to be written (besides the one
	// batch being written, which returns to the queue, within the bound, if
	// the write fails). When it is full the OLDEST waiting entry is dropped:
	// it is the one a room's trim would evict first, and the newest messages
	// are the ones people are reading. Default 10000.
	QueueSize int
	// BatchSize is the most entries written in one round trip. Default 1000.
	BatchSize int
	// CloseTimeout bounds how long Close keeps trying to write what is
	// pending. Default 5s.
	CloseTimeout time.Duration
	// OpTimeout bounds one write batch, a read and a ping. Default 2s.
	OpTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries while Redis
	// is unreachable: each wait is drawn at random below a ceiling that
	// doubles from Min to Max (see internal/backoff), so the nodes that lost
	// Redis together do not all retry at once. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives retries, reconnections and drops. Nil: slog.Default().
	Logger *slog.Logger
	// OnDropped, if set, is called with the number of entries dropped
	// because the queue was full.
	OnDropped func(n int)
	// OnQueueDepth, if set, is called with the number of entries not yet
	// written (waiting or being written) whenever it changes. It is called
	// with the store's lock held, so it must be quick (a gauge's Set).
	OnQueueDepth func(depth int)
}

// Redis is a Store keeping each room's history in a Redis LIST of the raw
// envelopes (RPUSH, then LTRIM to the last Size — the seed's layout).
//
// Append never waits for Redis: it puts the entry on a bounded FIFO queue and
// a single writer goroutine, owned by the store, writes queued entries in
// batches — one MULTI/EXEC round trip per batch, with an RPUSH of all of a
// room's entries and its LTRIM, so each room's append-and-trim is atomic. While
// Redis is unreachable the writer retries with backoff, keeping the order;
// entries are written at least once (a batch whose reply was lost is written
// again). On a Redis Cluster (Partitions > 0) a batch is one MULTI/EXEC per
// partition of its rooms, sent together, and a partition whose master is
// down waits in the queue, with a backoff of its own, while the others are
// written without waiting (see write and park).
// Recent reads Redis and adds the entries of the room not yet written,
// so a reader sees its own writes; when Redis is down Recent fails rather than
// return a history with a hole in it.
type Redis struct {
	opts   RedisOptions
	client redis.UniversalClient
	owned  bool // client was dialled by the store, which closes it
	keys   rediskeys.Keys
	log    *slog.Logger
	addr   string

	mu       sync.Mutex
	queue    []pending // waiting, oldest first
	inflight []pending // the batch being written
	closing  bool
	// drained, when not nil, is closed (and set back to nil) once nothing
	// is left to write; Flush waits on it instead of polling the queue.
	drained chan struct{}
	// lostAtClose is what Close gave up on; a waiting Flush reports it.
	lostAtClose int
	dropLog     time.Time // last time a drop was logged
	dropN       int       // drops not yet logged

	wake    chan struct{} // cap 1: the writer has something to do
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the writer returns
	writeMu sync.Mutex    // held while a batch is written; Clear waits for it

	// parked holds, in a cluster, the partitions whose last write failed
	// (their master is down) with their own backoff: takeBatch leaves their
	// entries in the queue until their retry time, so a dead master's
	// backlog neither fills the batches nor makes the live partitions wait
	// out its backoff. Only the writer goroutine touches it.
	parked    map[int]*parkedPart
	closeOnce sync.Once
	closeErr  error
}

type pending struct {
	room, id string
	frame    []byte
}

// parkedPart is a cluster partition whose writes fail: its backoff and the
// time it may be tried again.
type parkedPart struct {
	bo    backoff.Backoff
	until time.Time
}

// NewRedis returns a Redis store and starts its writer. It does not wait for
// Redis: the writer connects in the background, logging its retries.
func NewRedis(opts RedisOptions) (*Redis, error) {
	var ro *redis.Options
	if opts.Client == nil {
		var err error
		if ro, err = redis.ParseURL(opts.URL); err != nil {
			return nil, fmt.Errorf("redis url %q: %w", opts.URL, err)
		}
	}
	if opts.Size < 1 {
		opts.Size = 100
	}
	if opts.QueueSize < 1 {
		opts.QueueSize = 10000
	}
	if opts.BatchSize < 1 {
		opts.BatchSize = 1000
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = 5 * time.Second
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = 2 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	client := opts.Client
	owned := false
	if client == nil {
		// The writer does its own retrying, in order; go-redis must not retry
		// behind its back, nor wait long for a dead server.
		ro.MaxRetries = -1
		ro.DialerRetries = 1
		ro.DialTimeout = opts.OpTimeout
		ro.ReadTimeout = opts.OpTimeout
		ro.WriteTimeout = opts.OpTimeout
		ro.DisableIdentity = true
		ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		client, owned = redis.NewClient(ro), true
	}
	addr := clientAddr(client)
	r := &Redis{
		opts:   opts,
		client: client,
		owned:  owned,
		keys:   rediskeys.Keys{Prefix: opts.KeyPrefix, Partitions: opts.Partitions},
		log:    opts.Logger.With("store", "redis", "addr", addr),
		addr:   addr,
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		parked: map[int]*parkedPart{},
	}
	go r.run()
	return r, nil
}

// Key returns the Redis key holding room's history.
func (r *Redis) Key(room string) string { return r.keys.History(room) }

// Append implements Store. It never blocks on Redis: the entry is queued for
// the writer. On a full queue the oldest waiting entry is dropped, counted
// (OnDropped) and logged.
func (r *Redis) Append(_ context.Context, room, id string, frame []byte) error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return errors.New("history: redis store is closed")
	}
	dropped, logDrops := r.trimLocked(r.opts.QueueSize - 1)
	r.queue = append(r.queue, pending{room: room, id: id, frame: frame})
	r.depthLocked()
	r.mu.Unlock()
	r.reportDrops(dropped, logDrops)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// trimLocked drops the oldest waiting entries until at most keep wait. It
// returns how many it dropped and, at most once a second, how many drops to
// log (so a long outage logs a line a second, not one per message).
func (r *Redis) trimLocked(keep int) (dropped, toLog int) {
	if len(r.queue) <= keep {
		return 0, 0
	}
	dropped = len(r.queue) - keep
	clear(r.queue[:dropped])
	r.queue = r.queue[dropped:]
	r.dropN += dropped
	if now := time.Now(); now.Sub(r.dropLog) >= time.Second {
		toLog, r.dropN, r.dropLog = r.dropN, 0, now
	}
	return dropped, toLog
}

func (r *Redis) reportDrops(dropped, toLog int) {
	if dropped > 0 && r.opts.OnDropped != nil {
		r.opts.OnDropped(dropped)
	}
	if toLog > 0 {
		r.log.Error("history queue full: dropped the oldest unwritten messages",
			"dropped", toLog, "queue_size", r.opts.QueueSize)
	}
}

// depthLocked reports the depth after every change to the queue, and wakes
// the Flush callers when it reaches zero: every change ends here, so no
// drain goes unsignalled.
func (r *Redis) depthLocked() {
	n := len(r.queue) + len(r.inflight)
	if r.opts.OnQueueDepth != nil {
		r.opts.OnQueueDepth(n)
	}
	if n == 0 && r.drained != nil {
		close(r.drained)
		r.drained = nil
	}
}

// Recent implements Store: the room's list in Redis followed by its entries
// not yet written, trimmed to Size, then to limit. It fails when Redis does
// not answer.
func (r *Redis) Recent(ctx context.Context, room string, limit int) ([]Entry, error) {
	// Snapshot the unwritten entries first. Entries are written in append
	// order, so if LRANGE holds one of them, it holds (or has trimmed) every
	// one before it too: keep only those after the last one LRANGE has.
	r.mu.Lock()
	var unwritten []pending
	for _, q := range [2][]pending{r.inflight, r.queue} {
		for _, p := range q {
			if p.room == room {
				unwritten = append(unwritten, p)
			}
		}
	}
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, r.opts.OpTimeout)
	defer cancel()
	frames, err := r.client.LRange(ctx, r.Key(room), int64(-r.opts.Size), -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis history store %s: %w", r.addr, err)
	}
	out := make([]Entry, 0, len(frames)+len(unwritten))
	seen := make(map[string]struct{}, len(frames))
	for _, f := range frames {
		e := Entry{ID: IDOf([]byte(f)), Frame: []byte(f)}
		if e.ID != "" {
			seen[e.ID] = struct{}{}
		}
		out = append(out, e)
	}
	for i := len(unwritten) - 1; i >= 0; i-- {
		if _, ok := seen[unwritten[i].id]; ok && unwritten[i].id != "" {
			unwritten = unwritten[i+1:]
			break
		}
	}
	for _, p := range unwritten {
		out = append(out, Entry{ID: p.id, Frame: p.frame})
	}
	if n := r.opts.Size; len(out) > n {
		out = out[len(out)-n:]
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// Clear implements Store: it drops the room's unwritten entries and deletes
// its key. It waits for a batch being written, so nothing of the room written
// before Clear survives it.
func (r *Redis) Clear(ctx context.Context, room string) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.mu.Lock()
	kept := r.queue[:0]
	for _, p := range r.queue {
		if p.room != room {
			kept = append(kept, p)
		}
	}
	clear(r.queue[len(kept):])
	r.queue = kept
	r.depthLocked()
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.opts.OpTimeout)
	defer cancel()
	if err := r.client.Del(ctx, r.Key(room)).Err(); err != nil {
		return fmt.Errorf("redis history store %s: %w", r.addr, err)
	}
	return nil
}

// Delete implements Store. An entry still waiting to be written leaves the
// queue; a written one is found with LRANGE and removed with one LREM of its
// exact bytes (every copy of them), so the list is never rewritten and appends racing the delete
// (the broker's publish script pushes into the same list) are not lost. Like
// Clear, it waits for a batch being written.
func (r *Redis) Delete(ctx context.Context, room, id string) error {
	if id == "" {
		return ErrNotFound
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.mu.Lock()
	for i, p := range r.queue {
		if p.room == room && p.id == id {
			r.queue = append(r.queue[:i:i], r.queue[i+1:]...)
			r.depthLocked()
			r.mu.Unlock()
			return nil
		}
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.opts.OpTimeout)
	defer cancel()
	key := r.Key(room)
	frames, err := r.client.LRange(ctx, key, 0, -1).Result()
	if err != nil {
		return fmt.Errorf("redis history store %s: reading %s: %w", r.addr, key, err)
	}
	for i := len(frames) - 1; i >= 0; i-- {
		if IDOf([]byte(frames[i])) != id {
			continue
		}
		// Count 0: every copy of those bytes (a batch whose reply was lost
		// is written twice; see Redis).
		n, err := r.client.LRem(ctx, key, 0, frames[i]).Result()
		if err != nil {
			return fmt.Errorf("redis history store %s: removing from %s: %w", r.addr, key, err)
		}
		if n == 0 {
			return ErrNotFound // trimmed away between LRANGE and LREM
		}
		return nil
	}
	return ErrNotFound
}

// Ping implements Store: PING, bounded by OpTimeout.
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.OpTimeout)
	defer cancel()
	if err := redisping.Ping(ctx, r.client); err != nil {
		return fmt.Errorf("redis history store %s: %w", r.addr, err)
	}
	return nil
}

// Flush waits until every entry appended so far is written, or ctx ends.
// It fails, too, when the store closes with entries it could not write. The
// writer wakes it when the queue drains (see depthLocked).
func (r *Redis) Flush(ctx context.Context) error {
	for {
		r.mu.Lock()
		n := len(r.queue) + len(r.inflight)
		lost := r.lostAtClose
		if n == 0 {
			r.mu.Unlock()
			if lost > 0 {
				return fmt.Errorf("history: store closed with %d entries not written", lost)
			}
			return nil
		}
		if r.drained == nil {
			r.drained = make(chan struct{})
		}
		drained := r.drained
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("history: %d entries not written: %w", r.depth(), ctx.Err())
		case <-drained: // check again: more may have been appended since
		case <-r.done:
			// The writer stopped (Close): what it left, Close drops.
			r.mu.Lock()
			left := max(len(r.queue)+len(r.inflight), r.lostAtClose)
			r.mu.Unlock()
			if left == 0 {
				return nil
			}
			return fmt.Errorf("history: store closed with %d entries not written", left)
		}
	}
}

// Close implements Store: it refuses new appends, gives the writer up to
// CloseTimeout to write what is pending, waits for it and closes the
// client if the store dialled it (a RedisOptions.Client is its owner's to
// close). Entries still unwritten then are counted as dropped and logged.
// Close is idempotent.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()
		close(r.stop)
		<-r.done
		r.mu.Lock()
		lost := len(r.queue) + len(r.inflight)
		r.queue, r.inflight = nil, nil
		r.lostAtClose = lost
		r.depthLocked()
		r.mu.Unlock()
		if lost > 0 {
			if r.opts.OnDropped != nil {
				r.opts.OnDropped(lost)
			}
			r.log.Error("history store closed before Redis took every message", "lost", lost)
			r.closeErr = fmt.Errorf("redis history store %s: %d messages not written at close", r.addr, lost)
		}
		if !r.owned {
			return // the client's owner closes it
		}
		if err := r.client.Close(); err != nil && r.closeErr == nil {
			r.closeErr = fmt.Errorf("redis history store %s: closing client: %w", r.addr, err)
		}
	})
	return r.closeErr
}

// run is the writer: it connects (retrying with backoff), then writes queued
// batches in order until Close, and then flushes within CloseTimeout.
func (r *Redis) run() {
	defer close(r.done)
	var deadline <-chan time.Time // set once stopping
	stopping := r.stop
	bo := backoff.Backoff{Min: r.opts.MinBackoff, Max: r.opts.MaxBackoff}
	wait := time.Duration(0)       // before the next attempt
	down, connected := true, false // probe first: log at startup whether Redis is there
	attempt := 0
	for {
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-stopping:
				stopping, deadline = nil, r.closeDeadline()
			case <-deadline:
				return
			}
		}
		if down && r.depth() == 0 {
			// Nothing to write: probe, so the log follows the server and the
			// first write after it returns is fast.
			if err := r.probe(); err != nil {
				if deadline != nil {
					return
				}
				attempt++
				wait = bo.Next()
				r.log.Warn("redis unreachable; retrying", "attempt", attempt, "retry_in", wait, "err", err)
				continue
			}
			r.reachable(&connected, attempt)
			down, attempt = false, 0
			bo.Reset()
		}
		r.writeMu.Lock()
		batch, retryAt := r.takeBatch(time.Now())
		if batch == nil && !retryAt.IsZero() {
			// Cluster: only parked partitions have entries waiting. Sleep
			// until the first may be retried, or an append (perhaps to a
			// live partition) arrives.
			r.writeMu.Unlock()
			select {
			case <-time.After(time.Until(retryAt)):
			case <-r.wake:
			case <-stopping:
				stopping, deadline = nil, r.closeDeadline()
			case <-deadline:
				return
			}
			wait = 0
			continue
		}
		if batch == nil {
			r.writeMu.Unlock()
			if deadline != nil {
				return
			}
			select {
			case <-r.wake:
			case <-stopping:
				stopping, deadline = nil, r.closeDeadline()
			}
			wait = 0
			bo.Reset()
			continue
		}
		failed, err := r.write(batch)
		var dropped, logDrops int
		r.mu.Lock()
		if err != nil {
			// Back at the head of the queue: the order is kept, and so is
			// the bound (the oldest go first).
			r.queue = append(append(make([]pending, 0, len(failed)+len(r.queue)), failed...), r.queue...)
			dropped, logDrops = r.trimLocked(r.opts.QueueSize)
		}
		r.inflight = nil
		r.depthLocked()
		r.mu.Unlock()
		r.writeMu.Unlock()
		r.reportDrops(dropped, logDrops)
		if r.keys.Cluster() {
			// The failed partitions are parked with their own backoff (see
			// park); the next batch is taken at once from the others. Park
			// reads the batch's rooms: it is cleared after.
			r.park(batch, failed, err)
			clear(batch)
			if down && len(failed) < len(batch) {
				r.reachable(&connected, attempt)
				down, attempt = false, 0
			}
			wait = 0
			continue
		}
		clear(batch)
		if err != nil {
			attempt++
			wait = bo.Next()
			down = true
			r.log.Warn("redis unreachable; history writes queued, retrying", "attempt", attempt,
				"retry_in", wait, "pending", r.depth(), "err", err)
			continue
		}
		if down {
			r.reachable(&connected, attempt)
			down, attempt = false, 0
		}
		wait = 0
		bo.Reset()
	}
}

func (r *Redis) reachable(connected *bool, attempts int) {
	if !*connected {
		*connected = true
		r.log.Info("redis connected", "failed_attempts", attempts)
		return
	}
	r.log.Info("redis reachable again; writing queued history", "failed_attempts", attempts, "pending", r.depth())
}

func (r *Redis) closeDeadline() <-chan time.Time { return time.After(r.opts.CloseTimeout) }

func (r *Redis) depth() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue) + len(r.inflight)
}

// park updates, in a cluster, the parked partitions after batch was
// written: a partition with failed entries is parked (or stays parked) until
// its own backoff's next wait has passed, and one written is unparked. It
// logs a partition's first failure and its recovery, and while partitions
// stay down, at most one line per round.
func (r *Redis) park(batch, failed []pending, err error) {
	now := time.Now()
	failedParts := map[int]bool{}
	for _, p := range failed {
		failedParts[r.keys.Partition(p.room)] = true
	}
	var parked []int
	var retryIn time.Duration
	for n := range failedParts {
		pp := r.parked[n]
		if pp == nil {
			pp = &parkedPart{bo: backoff.Backoff{Min: r.opts.MinBackoff, Max: r.opts.MaxBackoff}}
			r.parked[n] = pp
		}
		wait := pp.bo.Next()
		pp.until = now.Add(wait)
		parked = append(parked, n)
		retryIn = max(retryIn, wait)
	}
	var recovered []int
	for _, p := range batch {
		n := r.keys.Partition(p.room)
		if _, ok := r.parked[n]; ok && !failedParts[n] {
			delete(r.parked, n)
			recovered = append(recovered, n)
		}
	}
	if len(parked) > 0 {
		slices.Sort(parked)
		r.log.Warn("redis cluster partitions unreachable; their history writes queued, retrying",
			"partitions", parked, "retry_in_max", retryIn, "pending", r.depth(), "err", err)
	}
	if len(recovered) > 0 {
		slices.Sort(recovered)
		r.log.Info("redis cluster partitions reachable again; writing their queued history",
			"partitions", recovered, "pending", r.depth())
	}
}

// takeBatch moves up to BatchSize entries from the head of the queue to
// inflight; nil when the queue is empty. The caller holds writeMu until the
// batch is written or back in the queue, so Clear never races a batch.
//
// In a cluster it skips the entries of partitions parked until after now
// (they stay in the queue, in order, so each room's order is kept), and when
// only such entries wait it returns nil and the earliest time one of their
// partitions may be retried.
func (r *Redis) takeBatch(now time.Time) ([]pending, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.parked) > 0 {
		return r.takeUnparkedLocked(now)
	}
	n := min(len(r.queue), r.opts.BatchSize)
	if n == 0 {
		return nil, time.Time{}
	}
	batch := make([]pending, n)
	copy(batch, r.queue)
	clear(r.queue[:n])
	r.queue = r.queue[n:]
	if len(r.queue) == 0 {
		r.queue = nil // let the backing array go
	}
	r.inflight = batch
	return batch, time.Time{}
}

// takeUnparkedLocked is takeBatch with partitions parked: it takes the
// first BatchSize entries of partitions not parked until after now.
func (r *Redis) takeUnparkedLocked(now time.Time) ([]pending, time.Time) {
	var batch, rest []pending
	var retryAt time.Time
	for i, p := range r.queue {
		if len(batch) == r.opts.BatchSize {
			rest = append(rest, r.queue[i:]...)
			break
		}
		if pp := r.parked[r.keys.Partition(p.room)]; pp != nil && pp.until.After(now) {
			if retryAt.IsZero() || pp.until.Before(retryAt) {
				retryAt = pp.until
			}
			rest = append(rest, p)
			continue
		}
		batch = append(batch, p)
	}
	if len(batch) == 0 {
		return nil, retryAt
	}
	r.queue = rest
	r.inflight = batch
	return batch, time.Time{}
}

// write sends batch in one MULTI/EXEC: per room, in order of first
// appearance, an RPUSH of its entries and an LTRIM to the last Size. In a
// Redis Cluster a MULTI cannot span slots, so each partition's rooms (one
// slot, see rediskeys) get a MULTI/EXEC of their own, all sent at once; it
// returns the entries of the partitions that failed (a dead master's), in
// order, which go back in the queue while the others are written.
func (r *Redis) write(batch []pending) ([]pending, error) {
	if !r.keys.Cluster() {
		if err := r.writeTx(batch); err != nil {
			return batch, err
		}
		return nil, nil
	}
	var parts []int
	byPart := map[int][]pending{}
	for _, p := range batch {
		n := r.keys.Partition(p.room)
		if _, ok := byPart[n]; !ok {
			parts = append(parts, n)
		}
		byPart[n] = append(byPart[n], p)
	}
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, n := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.writeTx(byPart[n])
		}()
	}
	wg.Wait()
	var failed []pending
	var first error
	for _, p := range batch { // the batch's order, for the queue
		if i := slices.Index(parts, r.keys.Partition(p.room)); errs[i] != nil {
			failed = append(failed, p)
			first = cmp.Or(first, errs[i])
		}
	}
	return failed, first
}

// writeTx writes entries (of one slot, in a cluster) in one MULTI/EXEC.
func (r *Redis) writeTx(batch []pending) error {
	var rooms []string
	byRoom := map[string][]any{}
	for _, p := range batch {
		if _, ok := byRoom[p.room]; !ok {
			rooms = append(rooms, p.room)
		}
		byRoom[p.room] = append(byRoom[p.room], p.frame)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.OpTimeout)
	defer cancel()
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, room := range rooms {
			key := r.Key(room)
			p.RPush(ctx, key, byRoom[room]...)
			p.LTrim(ctx, key, int64(-r.opts.Size), -1)
		}
		return nil
	})
	return err
}

// clientAddr names the Redis a client talks to, for logs and errors.
func clientAddr(c redis.UniversalClient) string {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return "cluster " + strings.Join(c.Options().Addrs, ",")
	}
	return "redis"
}

func (r *Redis) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.OpTimeout)
	defer cancel()
	return redisping.Ping(ctx, r.client)
}

var _ Store = (*Redis)(nil)
