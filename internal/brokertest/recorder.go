// Package brokertest holds what the tests of brokers share: a record of what
// a broker delivered, and a join that waits for the room's subscription.
package brokertest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/history"
)

// Recorder records the ids a broker delivers, per room, in delivery order:
// what the hub of one chatserver node would have received. Its Deliver and
// Direct are a broker's DeliverFunc and DirectFunc. The zero value is ready.
type Recorder struct {
	mu  sync.Mutex
	got map[string][]string
}

// Deliver records id among room's frames.
func (r *Recorder) Deliver(room, id string, _ []byte, _ bool) { r.add(room, id) }

// Direct records a direct message among room's frames, as "d:ID".
func (r *Recorder) Direct(room string, frame []byte, _ string, _ int64) {
	r.add(room, "d:"+history.IDOf(frame))
}

func (r *Recorder) add(room, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = map[string][]string{}
	}
	r.got[room] = append(r.got[room], id)
}

// IDs returns what was delivered in room so far.
func (r *Recorder) IDs(room string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[room])
}

// Subscriber is the part of a broker Join uses.
type Subscriber interface {
	Subscribe(ctx context.Context, room string) error
	WaitSubscribed(ctx context.Context, room string) error
}

// Join subscribes b to room and waits (5 s at most) until the subscription
// is confirmed, as the server does when a member joins.
func Join(t testing.TB, b Subscriber, room string) {
	t.Helper()
	_ = b.Subscribe(context.Background(), room)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.WaitSubscribed(ctx, room); err != nil {
		t.Fatalf("subscribing to %s: %v", room, err)
	}
}
