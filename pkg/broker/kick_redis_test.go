package broker_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/broker"
)

// ctlNode records what a Redis broker hands to its hub: frames and kicks.
type ctlNode struct {
	*broker.Redis
	mu     sync.Mutex
	frames []string // "ID FRAME" in delivery order
	kicks  []string // "ROOM/NAME"
}

func newCtlNode(t *testing.T, rdb *redis.Client, prefix string) *ctlNode {
	t.Helper()
	n := &ctlNode{}
	n.Redis = broker.NewRedis(broker.RedisOptions{
		Client: rdb, KeyPrefix: prefix,
		Deliver: func(_, id string, frame []byte, _ bool) {
			n.mu.Lock()
			n.frames = append(n.frames, id+" "+string(frame))
			n.mu.Unlock()
		},
		Kick: func(room, name string) {
			n.mu.Lock()
			n.kicks = append(n.kicks, room+"/"+name)
			n.mu.Unlock()
		},
	})
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func (n *ctlNode) subscribe(t *testing.T, room string) {
	t.Helper()
	_ = n.Subscribe(context.Background(), room)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.WaitSubscribed(ctx, room); err != nil {
		t.Fatal(err)
	}
}

func (n *ctlNode) got() (frames, kicks []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.frames), slices.Clone(n.kicks)
}

// A kick reaches every node with members in the room, the kicking node
// included, and no node without; it is never delivered as a frame.
func TestRedisKickReachesEveryNode(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	a, b, c := newCtlNode(t, rdb, prefix), newCtlNode(t, rdb, prefix), newCtlNode(t, rdb, prefix)
	a.subscribe(t, "lobby")
	b.subscribe(t, "lobby")
	c.subscribe(t, "elsewhere")
	if err := a.Kick(context.Background(), "lobby", "bob:the builder"); err != nil {
		t.Fatal(err)
	}
	// A frame published after the kick arrives after it: once it is there,
	// the kick would have been too.
	if err := a.Publish(context.Background(), "elsewhere", "f1", frameOf("f1", 1), false); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]*ctlNode{"a": a, "b": b} {
		testutil.Eventually(t, 5*time.Second, name+" to get the kick", func() bool {
			_, kicks := n.got()
			return slices.Equal(kicks, []string{"lobby/bob:the builder"})
		})
	}
	testutil.Eventually(t, 5*time.Second, "c to get the frame published after the kick", func() bool {
		frames, _ := c.got()
		return len(frames) == 1
	})
	if frames, kicks := c.got(); len(kicks) != 0 || len(frames) != 1 {
		t.Fatalf("node c, not in lobby, got kicks %v frames %v", kicks, frames)
	}
	for _, n := range []*ctlNode{a, b} {
		if frames, _ := n.got(); len(frames) != 0 {
			t.Fatalf("a kick was delivered as a frame: %v", frames)
		}
	}
}

// A frame that is not kept is delivered even when it names the id of a frame
// delivered before (a delete frame carries the id of the message it deletes),
// and its delivery carries no id, so no joiner drops it as a history duplicate.
func TestRedisDeleteFrameIsNotADuplicate(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	a, b := newCtlNode(t, rdb, prefix), newCtlNode(t, rdb, prefix)
	a.subscribe(t, "lobby")
	b.subscribe(t, "lobby")
	const id = "0b7d6f36-2c1e-4bb5-9f0e-000000000001"
	msg := frameOf(id, 1)
	del := []byte(`{"type":"delete","room":"lobby","id":"` + id + `"}`)
	if err := a.Publish(context.Background(), "lobby", id, msg, true); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(context.Background(), "lobby", "", del, false); err != nil {
		t.Fatal(err)
	}
	want := []string{id + " " + string(msg), " " + string(del)}
	for name, n := range map[string]*ctlNode{"a": a, "b": b} {
		testutil.Eventually(t, 5*time.Second, name+" to get the message and its delete", func() bool {
			frames, _ := n.got()
			return slices.Equal(frames, want)
		})
	}
}

// With one node (broker local) a kick calls the hub directly.
func TestLocalKick(t *testing.T) {
	var got []string
	l := broker.NewLocal(nil, func(string, string, []byte, bool) {}, nil)
	l.OnKick = func(room, name string) { got = append(got, room+"/"+name) }
	if err := l.Kick(context.Background(), "lobby", "bob"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"lobby/bob"}) {
		t.Fatalf("kicks %v", got)
	}
}
