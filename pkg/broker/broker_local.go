package broker

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sync"

	"github.com/chatserver/chatserver/pkg/history"
)

// stripes is the number of locks publishes are spread over by room; rooms that
// share a stripe only share ordering, never correctness.
const stripes = 64

// Local is the single-node broker: a publish appends to history and delivers to
// the hub under one per-room lock, so history order is delivery order.
type Local struct {
	store   history.Store
	deliver DeliverFunc
	log     *slog.Logger
	// OnStoreError, if set, is called when a history append fails (the frame
	// is still delivered: live chat never waits for storage).
	OnStoreError func(room string, err error)
	// Direct delivers direct messages. Nil: PublishDirect fails.
	Direct DirectFunc
	// OnKick closes the local connections Kick names. Nil: Kick does nothing.
	OnKick KickFunc

	seed  maphash.Seed
	locks [stripes]sync.Mutex
}

// NewLocal returns a Local broker that keeps history in store and delivers
// through deliver.
func NewLocal(store history.Store, deliver DeliverFunc, log *slog.Logger) *Local {
	if log == nil {
		log = slog.Default()
	}
	return &Local{store: store, deliver: deliver, log: log, seed: maphash.MakeSeed()}
}

// Publish implements Broker. A failed history append is logged and reported
// to OnStoreError; the frame is delivered all the same.
func (l *Local) Publish(ctx context.Context, room, id string, frame []byte, keep bool) error {
	mu := &l.locks[maphash.String(l.seed, room)%stripes]
	mu.Lock()
	defer mu.Unlock()
	if keep && l.store != nil {
		if err := l.store.Append(ctx, room, id, frame); err != nil {
			l.log.Error("history append failed; message delivered but not kept", "room", room, "id", id, "err", err)
			if l.OnStoreError != nil {
				l.OnStoreError(room, err)
			}
		}
	}
	l.deliver(room, id, frame, keep && l.store != nil)
	return nil
}

// Kick implements Broker: one node, so the kick is local, under the room's
// lock like its frames.
func (l *Local) Kick(_ context.Context, room, username string) error {
	if l.OnKick == nil {
		return nil
	}
	mu := &l.locks[maphash.String(l.seed, room)%stripes]
	mu.Lock()
	defer mu.Unlock()
	l.OnKick(room, username)
	return nil
}

// PublishDirect implements Broker.
func (l *Local) PublishDirect(_ context.Context, room string, frame []byte, to string, from int64) error {
	if l.Direct == nil {
		return errNoDirect
	}
	mu := &l.locks[maphash.String(l.seed, room)%stripes]
	mu.Lock()
	defer mu.Unlock()
	l.Direct(room, frame, to, from)
	return nil
}

// Subscribe implements Broker; a single node has nothing to subscribe to.
func (l *Local) Subscribe(context.Context, string) error { return nil }

// Unsubscribe implements Broker.
func (l *Local) Unsubscribe(context.Context, string) error { return nil }

// Ping implements Broker.
func (l *Local) Ping(context.Context) error { return nil }

// Close implements Broker.
func (l *Local) Close() error { return nil }

var _ Broker = (*Local)(nil)
