package broker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/brokertest"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/history"
)

// node is one Redis broker with a recording deliver function: what the hub of
// one chatserver node would have received.
type node struct {
	*broker.Redis
	brokertest.Recorder
	resubs    atomic.Int64
	recovered atomic.Int64
	fallbacks atomic.Int64
}

func newNode(t *testing.T, rdb *redis.Client, prefix string, tweak ...func(*broker.RedisOptions)) *node {
	t.Helper()
	n := &node{}
	opts := broker.RedisOptions{
		Client: rdb, KeyPrefix: prefix, HistorySize: 1000,
		Deliver: n.Deliver,
		// Direct messages are recorded among the room's frames, as "d:ID".
		Direct:        n.Direct,
		OnResubscribe: func() { n.resubs.Add(1) },
		OnRecovered:   func(k int) { n.recovered.Add(int64(k)) },
		OnFallback:    func() { n.fallbacks.Add(1) },
	}
	for _, f := range tweak {
		f(&opts)
	}
	n.Redis = broker.NewRedis(opts)
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// publishN publishes count kept frames to room from n and returns their ids.
func publishN(t *testing.T, n *node, room string, count int) []string {
	t.Helper()
	ids := make([]string, count)
	for i := range ids {
		ids[i] = uuid.NewString()
		if err := n.Publish(context.Background(), room, ids[i], frameOf(ids[i], i), true); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	return ids
}

func historyIDs(t *testing.T, rdb *redis.Client, key string) []string {
	t.Helper()
	raw, err := rdb.LRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(raw))
	for i, r := range raw {
		out[i] = idOf(r)
	}
	return out
}

func idOf(frame string) string { return history.IDOf([]byte(frame)) }

// Three nodes publish concurrently into one room: every node delivers every
// frame exactly once (its own included, only from the subscription), all in
// one order, and that order is the history's.
func TestRedisFanOutExactlyOnceSameOrder(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	nodes := []*node{newNode(t, rdb, prefix), newNode(t, rdb, prefix), newNode(t, rdb, prefix)}
	for _, n := range nodes {
		brokertest.Join(t, n, "lobby")
	}
	const per = 60
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); publishN(t, n, "lobby", per) }()
	}
	wg.Wait()
	total := per * len(nodes)
	for i, n := range nodes {
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("node %d to receive %d frames", i, total), func() bool {
			return len(n.IDs("lobby")) >= total
		})
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would arrive now
	want := nodes[0].IDs("lobby")
	if len(want) != total {
		t.Fatalf("node 0 got %d frames, want %d", len(want), total)
	}
	seen := map[string]bool{}
	for _, id := range want {
		if seen[id] {
			t.Fatalf("frame %s delivered twice", id)
		}
		seen[id] = true
	}
	for i, n := range nodes[1:] {
		if got := n.IDs("lobby"); !slices.Equal(got, want) {
			t.Errorf("node %d's order differs from node 0's", i+1)
		}
	}
	if h := historyIDs(t, rdb, nodes[0].HistoryKey("lobby")); !slices.Equal(h, want) {
		t.Errorf("history order differs from delivery order (%d vs %d entries)", len(h), len(want))
	}
}

// A node receives only rooms it has members in; after Unsubscribe nothing
// more arrives; frames not kept stay out of the history.
func TestRedisSubscribeOnlyWhatIsServed(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	a, b := newNode(t, rdb, prefix), newNode(t, rdb, prefix)
	brokertest.Join(t, a, "one")
	brokertest.Join(t, b, "two")
	id := uuid.NewString()
	if err := b.Publish(context.Background(), "one", id, frameOf(id, 0), false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "a to get the frame", func() bool { return len(a.IDs("one")) == 1 })
	if len(b.IDs("one")) != 0 {
		t.Fatal("b got a frame of a room it does not serve")
	}
	if n, _ := rdb.LLen(context.Background(), a.HistoryKey("one")).Result(); n != 0 {
		t.Fatalf("a frame published with keep=false is in the history (%d entries)", n)
	}
	// Redis itself must see each room with exactly the nodes that serve it;
	// the broker's own filtering of foreign rooms would hide a subscription
	// that was never dropped.
	numsub := func(room string) int64 {
		m, err := rdb.PubSubNumSub(context.Background(), prefix+"room:"+room).Result()
		if err != nil {
			t.Fatal(err)
		}
		return m[prefix+"room:"+room]
	}
	if one, two := numsub("one"), numsub("two"); one != 1 || two != 1 {
		t.Fatalf("subscribers in Redis: one=%d two=%d, want 1 and 1", one, two)
	}
	_ = a.Unsubscribe(context.Background(), "one")
	testutil.Eventually(t, 5*time.Second, "Redis to drop a's subscription to one", func() bool { return numsub("one") == 0 })
	publishN(t, b, "one", 3)
	time.Sleep(200 * time.Millisecond)
	if got := len(a.IDs("one")); got != 1 {
		t.Fatalf("a got %d frames after unsubscribing, want 1 (from before)", got)
	}
	if n, _ := rdb.LLen(context.Background(), a.HistoryKey("one")).Result(); n != 3 {
		t.Fatalf("history has %d entries, want 3", n)
	}
}

// The history list is trimmed to the configured size.
func TestRedisHistoryTrimmed(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	b := broker.NewRedis(broker.RedisOptions{Client: rdb, KeyPrefix: prefix, HistorySize: 5,
		Deliver: func(string, string, []byte, bool) {}})
	defer b.Close()
	for i := range 12 {
		id := uuid.NewString()
		if err := b.Publish(context.Background(), "r", id, frameOf(id, i), true); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := rdb.LLen(context.Background(), b.HistoryKey("r")).Result(); n != 5 {
		t.Fatalf("history has %d entries, want 5", n)
	}
}

// When the subscription connections drop (here: killed by Redis, in the same
// transaction that publishes), the nodes resubscribe and recover the frames
// published meanwhile from the history: exactly once, in order.
func TestRedisRecoversAfterConnectionDrop(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	a, b := newNode(t, rdb, "p:"), newNode(t, rdb, "p:")
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")
	before := publishN(t, a, "lobby", 3)
	testutil.Eventually(t, 5*time.Second, "live frames", func() bool { return len(b.IDs("lobby")) == 3 })

	// One transaction: drop every pub/sub connection, then append 5 frames
	// to the history that no subscriber gets live.
	ctx := context.Background()
	var missed []string
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub")
		for i := range 5 {
			id := uuid.NewString()
			missed = append(missed, id)
			p.RPush(ctx, a.HistoryKey("lobby"), frameOf(id, i))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(before), missed...)
	for name, n := range map[string]*node{"a": a, "b": b} {
		testutil.Eventually(t, 10*time.Second, name+" to recover", func() bool { return len(n.IDs("lobby")) >= len(want) })
		if got := n.IDs("lobby"); !slices.Equal(got, want) {
			t.Fatalf("%s delivered %v, want %v", name, got, want)
		}
		if n.resubs.Load() < 1 || n.recovered.Load() != int64(len(missed)) {
			t.Errorf("%s: resubscribes %d (want >= 1), recovered %d (want %d)", name, n.resubs.Load(), n.recovered.Load(), len(missed))
		}
	}
	// Live delivery goes on, still exactly once.
	after := publishN(t, b, "lobby", 2)
	want = append(want, after...)
	for name, n := range map[string]*node{"a": a, "b": b} {
		testutil.Eventually(t, 5*time.Second, name+" to get live frames", func() bool { return len(n.IDs("lobby")) >= len(want) })
		time.Sleep(50 * time.Millisecond)
		if got := n.IDs("lobby"); !slices.Equal(got, want) {
			t.Fatalf("%s delivered %v, want %v", name, got, want)
		}
	}
}

// Redis killed (SIGKILL) and restarted on the same port: publishing during the
// outage falls back to local delivery without waiting long, and afterwards the
// nodes resubscribe and fan-out works again across nodes.
func TestRedisRestart(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
	defer rdb.Close()
	a, b := newNode(t, rdb, "p:"), newNode(t, rdb, "p:")
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")
	publishN(t, a, "lobby", 2)
	testutil.Eventually(t, 5*time.Second, "live frames", func() bool { return len(b.IDs("lobby")) == 2 })

	srv.Kill()
	start := time.Now()
	down := publishN(t, a, "lobby", 3)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("3 publishes with Redis down took %v", d)
	}
	if got := a.IDs("lobby"); !slices.Equal(got[2:], down) || a.fallbacks.Load() != 3 {
		t.Errorf("with Redis down a delivered %v locally (fallbacks %d), want %v", got[2:], a.fallbacks.Load(), down)
	}

	// A room first joined while Redis is down does not keep its joiner
	// waiting for a confirmation that cannot come.
	testutil.Eventually(t, 5*time.Second, "the broker to notice Redis is down", func() bool {
		_ = b.Subscribe(context.Background(), "new")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		return b.WaitSubscribed(ctx, "new") != nil && time.Since(start) < time.Second
	})

	srv.Start()
	for name, n := range map[string]*node{"a": a, "b": b} {
		testutil.Eventually(t, 10*time.Second, name+" to resubscribe", func() bool { return n.resubs.Load() >= 1 })
	}
	var last string
	testutil.Eventually(t, 10*time.Second, "fan-out across nodes after the restart", func() bool {
		last = publishN(t, b, "lobby", 1)[0]
		time.Sleep(50 * time.Millisecond)
		ids := a.IDs("lobby")
		return ids[len(ids)-1] == last
	})
	if got := b.IDs("lobby"); got[len(got)-1] != last {
		t.Errorf("b did not get its own frame back after the restart")
	}
}

// Close stops every goroutine the broker started.
func TestRedisCloseLeavesNoGoroutines(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := broker.NewRedis(broker.RedisOptions{Client: rdb, KeyPrefix: prefix, Deliver: func(string, string, []byte, bool) {}})
	_ = b.Subscribe(context.Background(), "r")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.WaitSubscribed(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	_ = b.Unsubscribe(context.Background(), "r")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_ = b.Close() // idempotent
}
