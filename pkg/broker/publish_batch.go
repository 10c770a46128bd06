package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Batched publishes: many rooms, one round trip.
//
// Without batching every Publish is one EVALSHA round trip to Redis, so a
// node's ingress is bounded by round trips (and by the syscalls each costs
// the node and Redis), not by what Redis can run. The batcher gathers the
// publishes that are waiting at the same moment into one pipeline: its
// goroutine takes one request, then every other one already waiting (up to
// PublishBatch), sends them as one pipeline of EVALSHA, and hands each caller
// the result of its own command. Under light
// load a batch is one publish and costs what it did; under heavy load a
// round trip carries many.
//
// What stays as it was:
//   - Publish returns only once Redis has run the caller's script (the frame
//     is in history and published), or failed: an ack still means Redis has
//     the frame.
//   - Order: a pipeline's commands run in the order sent, each script
//     atomically, so a room's history order is the order every subscriber
//     receives, as before. A sender's frames stay in the order sent because
//     its Publish returns before it publishes the next.
//   - Failure: a caller whose command failed falls back to the outbox exactly
//     as an unbatched publish that failed (maybe reached Redis: replayed with
//     the history check). A request the batcher did not send because Redis is
//     down or frames are held (direct() turned false while it waited) is
//     answered errNotSent, and Publish holds it as not tried: it queues behind
//     what is held, as a publish that came a moment later would.

// defaultPublishBatch is the most publishes one round trip carries by default.
const defaultPublishBatch = 256

// publishBatchTimeout bounds one batch's round trips (the client's own read
// and write timeouts are usually shorter).
const publishBatchTimeout = 5 * time.Second

// errNotSent answers a request the batcher did not send to Redis: Redis is
// down or frames are held, so it must queue behind them.
var errNotSent = errors.New("broker: publish not sent: redis is down or frames are held")

// scriptCall is one script run: what a publish asks of Redis.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// run runs the call alone: EVALSHA, and EVAL when Redis does not know the
// script yet (go-redis' Script.Run).
func (c scriptCall) run(ctx context.Context, rdb redis.Scripter) error {
	return c.script.Run(ctx, rdb, c.keys, c.args...).Err()
}

// publishReq is one Publish waiting for the batcher.
type publishReq struct {
	ctx  context.Context
	call scriptCall
	done chan error // capacity 1: the batcher never blocks on a caller that gave up
}

// publishBatcher owns the goroutine that sends publishes in batches (loop),
// one batch in flight at a time: a round trip that Redis holds up delays
// every publish of the node (of the partition, on a cluster). More senders
// were measured on a 2-core machine (BENCHMARKS.md, "Many small rooms"): they
// cost CPU at saturation (smaller batches) without removing the stalls they
// were meant to shorten. reqs holds the waiting requests (up to max): the
// loop answers every request it takes; one never taken (the loop returned
// first) is answered by publish itself once stopped is closed.
type publishBatcher struct {
	rdb    redis.UniversalClient
	max    int
	direct func() bool // may a request still go to Redis (see Redis.direct)
	// load loads a script where the batch runs (see Redis.loadScript).
	load    func(context.Context, *redis.Script) error
	reqs    chan *publishReq
	stop    <-chan struct{}
	stopped chan struct{} // closed when loop returned
}

func newPublishBatcher(rdb redis.UniversalClient, max int, direct func() bool,
	load func(context.Context, *redis.Script) error, stop <-chan struct{}) *publishBatcher {
	return &publishBatcher{rdb: rdb, max: max, direct: direct, load: load, reqs: make(chan *publishReq, max),
		stop: stop, stopped: make(chan struct{})}
}

// publish hands call to the batcher and waits for its result, or for ctx to
// end (the call may then still reach Redis, as an unbatched command whose
// reply was not awaited may). After the batcher stopped it returns
// errClosed for a call that was never sent.
func (p *publishBatcher) publish(ctx context.Context, call scriptCall) error {
	r := &publishReq{ctx: ctx, call: call, done: make(chan error, 1)}
	select {
	case p.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.stop:
		return errClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-p.stopped:
		select {
		case err := <-r.done: // taken and answered before the batcher stopped
			return err
		default:
			return errClosed
		}
	}
}

// loop is the batcher's goroutine (the broker's WaitGroup owns it; closing
// stop ends it): it takes one request, then whatever else is waiting up to
// max, and sends them as one round trip. It answers every request it took
// before returning.
func (p *publishBatcher) loop() {
	defer close(p.stopped)
	batch := make([]*publishReq, 0, p.max)
	for {
		select {
		case <-p.stop:
			return
		case r := <-p.reqs:
			batch = append(batch[:0], r)
		}
	drain:
		for len(batch) < p.max {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		p.send(batch)
		clear(batch)
	}
}

// send runs batch as one pipeline and answers each request. Requests whose
// caller gave up are dropped unsent; while Redis is down or frames are held,
// the rest are answered errNotSent.
func (p *publishBatcher) send(batch []*publishReq) {
	live := batch[:0:0]
	for _, r := range batch {
		switch {
		case r.ctx.Err() != nil:
			r.done <- r.ctx.Err()
		case !p.direct():
			r.done <- errNotSent
		default:
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishBatchTimeout)
	defer cancel()
	if len(live) == 1 {
		live[0].done <- live[0].call.run(ctx, p.rdb)
		return
	}
	errs := p.exec(ctx, live)
	// Commands Redis refused with NOSCRIPT did not run: load the scripts
	// and send those again, in their order (after the ones that ran: they
	// come from different callers, whose relative order is not defined).
	var again []*publishReq
	var againIdx []int
	for i, err := range errs {
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			again = append(again, live[i])
			againIdx = append(againIdx, i)
		}
	}
	if len(again) > 0 {
		loaded := map[*redis.Script]error{}
		for _, r := range again {
			if _, ok := loaded[r.call.script]; !ok {
				loaded[r.call.script] = p.load(ctx, r.call.script)
			}
		}
		var resend []*publishReq
		var resendIdx []int
		for k, r := range again {
			if err := loaded[r.call.script]; err != nil {
				errs[againIdx[k]] = fmt.Errorf("loading the publish script: %w", err)
				continue
			}
			resend = append(resend, r)
			resendIdx = append(resendIdx, againIdx[k])
		}
		if len(resend) > 0 {
			for k, err := range p.exec(ctx, resend) {
				errs[resendIdx[k]] = err
			}
		}
	}
	for i, r := range live {
		r.done <- errs[i]
	}
}

// exec sends reqs as one pipeline of EVALSHA and returns each command's error.
func (p *publishBatcher) exec(ctx context.Context, reqs []*publishReq) []error {
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(reqs))
	for i, r := range reqs {
		cmds[i] = pipe.EvalSha(ctx, r.call.script.Hash(), r.call.keys, r.call.args...)
	}
	_, err := pipe.Exec(ctx) // each command carries its own error too
	errs := make([]error, len(reqs))
	for i, c := range cmds {
		errs[i] = c.Err()
		if errs[i] == nil && err != nil && c.Val() == nil {
			errs[i] = err // not run: the pipeline failed before it
		}
	}
	return errs
}

// publishScriptCall runs call through the batcher, or alone when batching is
// off.
func (b *Redis) publishScriptCall(ctx context.Context, call scriptCall) error {
	if b.batcher != nil {
		err := b.batcher.publish(ctx, call)
		if !errors.Is(err, errClosed) {
			return err
		}
		// After Close (a server's last leave events): alone, as before.
	}
	return call.run(ctx, b.rdb)
}
