package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/brokertest"
	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/broker"
)

// cnode is one cluster broker with a recording deliver function (see node).
type cnode struct {
	*broker.RedisCluster
	brokertest.Recorder
}

func newClusterNode(t *testing.T, rdb *redis.ClusterClient, prefix string, partitions int, tweak ...func(*broker.RedisOptions)) *cnode {
	t.Helper()
	n := &cnode{}
	opts := broker.RedisOptions{
		Client: rdb, KeyPrefix: prefix, HistorySize: 1000, Partitions: partitions,
		Deliver: n.Deliver,
		Direct:  n.Direct,
		// Short settle: the test's nodes resubscribe together.
		ReplaySettle: 500 * time.Millisecond,
	}
	for _, f := range tweak {
		f(&opts)
	}
	n.RedisCluster = broker.NewRedisCluster(opts)
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// roomsOnDistinctMasters returns count rooms whose keys live on count
// different masters of the cluster c reaches (with partitions partitions).
func roomsOnDistinctMasters(t *testing.T, c *redis.ClusterClient, prefix string, partitions, count int) []string {
	t.Helper()
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	byMaster := map[string]string{}
	var rooms []string
	for i := 0; len(rooms) < count && i < 1000; i++ {
		room := fmt.Sprintf("room-%d", i)
		m, err := c.MasterForKey(context.Background(), keys.History(room))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := byMaster[m.Options().Addr]; !ok {
			byMaster[m.Options().Addr] = room
			rooms = append(rooms, room)
		}
	}
	if len(rooms) < count {
		t.Fatalf("found rooms on %d masters, want %d", len(rooms), count)
	}
	return rooms
}

func clusterHistoryIDs(t *testing.T, rdb redis.UniversalClient, key string) []string {
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

// On a Redis Cluster, three nodes publish concurrently into rooms on three
// different masters: every node delivers every frame of every room exactly
// once, in one order per room, which is the room's history order; direct
// messages travel the same sharded channels.
func TestRedisClusterFanOutExactlyOnceSameOrder(t *testing.T) {
	rdb, prefix := redistest.ClusterClient(t)
	const partitions = 16
	rooms := roomsOnDistinctMasters(t, rdb, prefix, partitions, 3)
	nodes := []*cnode{
		newClusterNode(t, rdb, prefix, partitions),
		newClusterNode(t, rdb, prefix, partitions),
		newClusterNode(t, rdb, prefix, partitions),
	}
	for _, n := range nodes {
		for _, room := range rooms {
			brokertest.Join(t, n, room)
		}
	}
	const per = 30
	var wg sync.WaitGroup
	for _, n := range nodes {
		for _, room := range rooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					id := uuid.NewString()
					if err := n.Publish(context.Background(), room, id, frameOf(id, i), true); err != nil {
						t.Errorf("publish: %v", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	dm := uuid.NewString()
	if err := nodes[1].PublishDirect(context.Background(), rooms[2],
		fmt.Appendf(nil, `{"id":%q,"type":"message","to":"bob","client_id":7}`, dm), "bob", 7); err != nil {
		t.Fatal(err)
	}
	total := per * len(nodes)
	for i, n := range nodes {
		for _, room := range rooms {
			want := total
			if room == rooms[2] {
				want++ // the direct message
			}
			testutil.Eventually(t, 10*time.Second, fmt.Sprintf("node %d to receive %d frames of %s", i, want, room), func() bool {
				return len(n.IDs(room)) >= want
			})
		}
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would arrive now
	for _, room := range rooms {
		want := nodes[0].IDs(room)
		kept := slices.DeleteFunc(slices.Clone(want), func(id string) bool { return id == "d:"+dm })
		if len(kept) != total {
			t.Fatalf("%s: node 0 got %d frames, want %d", room, len(kept), total)
		}
		seen := map[string]bool{}
		for _, id := range want {
			if seen[id] {
				t.Fatalf("%s: frame %s delivered twice", room, id)
			}
			seen[id] = true
		}
		for i, n := range nodes[1:] {
			if got := n.IDs(room); !slices.Equal(got, want) {
				t.Errorf("%s: node %d's order differs from node 0's", room, i+1)
			}
		}
		if h := clusterHistoryIDs(t, rdb, nodes[0].HistoryKey(room)); !slices.Equal(h, kept) {
			t.Errorf("%s: history order differs from delivery order (%d vs %d entries)", room, len(h), len(kept))
		}
	}
	if !slices.Contains(nodes[0].IDs(rooms[2]), "d:"+dm) {
		t.Error("the direct message did not arrive")
	}
	// Sharded: each room's channel has its subscribers on its own master
	// (PUBSUB SHARDNUMSUB is answered per slot).
	for _, room := range rooms {
		if got := shardSubscribers(t, rdb, nodes[0].Channel(room)); got != 3 {
			t.Errorf("%s: %d shard subscribers, want 3", room, got)
		}
	}
}

// A master of a private cluster is killed with SIGKILL mid-chat: the rooms
// on the other master carry on across nodes; the room on the dead master
// goes on on each node (its publishes delivered there and held), and once
// the master is started again from its folder every node has every frame of
// that room exactly once, and its history holds each once.
func TestRedisClusterMasterDown(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	const prefix, partitions = "t:", 16
	rooms := roomsOnDistinctMasters(t, rdb, prefix, partitions, 2)
	down, up := rooms[0], rooms[1]
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	victim := cl.MasterOf(t, keys.History(down))

	a, b := newClusterNode(t, rdb, prefix, partitions), newClusterNode(t, rdb, prefix, partitions)
	for _, n := range []*cnode{a, b} {
		brokertest.Join(t, n, down)
		brokertest.Join(t, n, up)
	}
	var sent sync.Map // room → []id, per node
	publish := func(n *cnode, name, room string, count int) {
		for i := range count {
			id := uuid.NewString()
			if err := n.Publish(context.Background(), room, id, frameOf(id, i), true); err != nil {
				t.Errorf("publish: %v", err)
			}
			v, _ := sent.LoadOrStore(name+room, &[]string{})
			p := v.(*[]string)
			*p = append(*p, id)
		}
	}
	publish(a, "a", down, 5)
	publish(b, "b", down, 5)
	testutil.Eventually(t, 5*time.Second, "both nodes to have the first 10 frames", func() bool {
		return len(a.IDs(down)) == 10 && len(b.IDs(down)) == 10
	})

	victim.Kill()
	// A node that starts now, with a member in each room: the dead
	// master's partition starts without blocking anything (no dial under
	// a lock), and the other room is subscribed at once.
	c := newClusterNode(t, rdb, prefix, partitions)
	start := time.Now()
	_ = c.Subscribe(context.Background(), down)
	// Its members' join does not wait out its timeout: the partition's
	// broker finds the master unreachable (its first dial fails) while
	// the join waits, and the wait ends then.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c.WaitSubscribed(wctx, down)
	wcancel()
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for the subscription to the dead master's room: %v, want the broker's \"unreachable\" before the join's timeout", err)
	}
	brokertest.Join(t, c, up)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("joining a room on a live master took %v while another master is down", d)
	}
	publish(a, "a", down, 10)
	publish(b, "b", down, 10)
	// Past cluster-node-timeout (2s): the other masters mark the dead one
	// FAIL, and (cluster-require-full-coverage no) go on serving their slots.
	time.Sleep(3 * time.Second)
	publish(a, "a", up, 10)
	publish(b, "b", up, 10)
	// The other master's room carries on across nodes at once.
	testutil.Eventually(t, 10*time.Second, "the room on the live master to reach both nodes", func() bool {
		return len(a.IDs(up)) == 20 && len(b.IDs(up)) == 20
	})
	// The dead master's room: each node has its own frames only, for now.
	if got := len(a.IDs(down)); got != 20 {
		t.Fatalf("node a delivered %d frames of the room on the dead master, want its own 10 on top of 10", got)
	}
	if a.Held() == 0 || b.Held() == 0 {
		t.Fatalf("held frames: a=%d b=%d, want both > 0", a.Held(), b.Held())
	}

	victim.Start()
	cl.WaitOK()
	testutil.Eventually(t, 30*time.Second, "both nodes to have all 30 frames of the room on the restarted master", func() bool {
		return len(a.IDs(down)) >= 30 && len(b.IDs(down)) >= 30 && a.Held() == 0 && b.Held() == 0
	})
	// The late node's partition of the restarted master subscribed too.
	brokertest.Join(t, c, down)
	last := uuid.NewString()
	if err := a.Publish(context.Background(), down, last, frameOf(last, 99), true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the late node to get a frame of the restarted master's room", func() bool {
		return slices.Contains(c.IDs(down), last)
	})
	if got := len(c.IDs(up)); got != 20 {
		t.Errorf("the late node got %d frames of the live master's room, want 20", got)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	mine := func(name, room string) []string {
		v, _ := sent.Load(name + room)
		return *(v.(*[]string))
	}
	all := append(slices.Clone(mine("a", down)), mine("b", down)...)
	for name, n := range map[string]*cnode{"a": a, "b": b} {
		got := slices.DeleteFunc(n.IDs(down), func(id string) bool { return id == last })
		if len(got) != 30 {
			t.Errorf("node %s delivered %d frames, want 30", name, len(got))
		}
		for _, id := range all {
			if c := countOf(got, id); c != 1 {
				t.Errorf("node %s delivered frame %s %d times", name, id, c)
			}
		}
		// Each sender's frames in the order sent.
		for _, from := range []string{"a", "b"} {
			if !isSubsequence(mine(from, down), got) {
				t.Errorf("node %s: %s's frames out of order", name, from)
			}
		}
	}
	h := clusterHistoryIDs(t, rdb, keys.History(down))
	for _, id := range all {
		if c := countOf(h, id); c != 1 {
			t.Errorf("history holds frame %s %d times", id, c)
		}
	}
}

func countOf(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// isSubsequence reports whether want appears in got in order.
func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// A partition's connection is opened when one of its rooms gets a member and
// closed once none has, after PartitionIdle; a room of it joined again gets a
// new one and its frames flow again.
func TestRedisClusterClosesIdlePartitions(t *testing.T) {
	rdb, prefix := redistest.ClusterClient(t)
	const partitions = 16
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	idle := func(o *broker.RedisOptions) { o.PartitionIdle = 200 * time.Millisecond }
	a, b := newClusterNode(t, rdb, prefix, partitions, idle), newClusterNode(t, rdb, prefix, partitions, idle)
	anchor := keys.PartitionChannel(keys.Partition("lobby"))
	conns := func() int64 { return shardSubscribers(t, rdb, anchor) }
	brokertest.Join(t, a, "lobby")
	if n := conns(); n != 1 {
		t.Fatalf("%d connections on the partition's channel after a joined, want 1", n)
	}
	_ = a.Unsubscribe(context.Background(), "lobby")
	testutil.Eventually(t, 5*time.Second, "the idle partition's connection to close", func() bool { return conns() == 0 })

	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")
	id := uuid.NewString()
	if err := b.Publish(context.Background(), "lobby", id, frameOf(id, 0), true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "a to get b's frame on the partition opened again", func() bool {
		return slices.Equal(a.IDs("lobby"), []string{id})
	})
	if n := conns(); n != 2 {
		t.Fatalf("%d connections on the partition's channel, want 2 (a and b)", n)
	}
}

// shardSubscribers is PUBSUB SHARDNUMSUB of ch, asked of the master of its
// slot (another node answers 0: shard channels live on their slot's shard).
func shardSubscribers(t *testing.T, rdb *redis.ClusterClient, ch string) int64 {
	t.Helper()
	m, err := rdb.MasterForKey(context.Background(), ch)
	if err != nil {
		t.Fatal(err)
	}
	n, err := m.PubSubShardNumSub(context.Background(), ch).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n[ch]
}

// The outbox gauge is the node's: OnOutboxDepth reports the frames held in
// every partition together, not the depth of whichever partition changed
// last.
func TestRedisClusterOutboxDepthIsTheSumOverPartitions(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	const prefix, partitions = "t:", 16
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	// Two rooms of two partitions on one master.
	first := "room-0"
	victim := cl.MasterOf(t, keys.History(first))
	var second string
	for i := 1; second == ""; i++ {
		room := fmt.Sprintf("room-%d", i)
		if keys.Partition(room) != keys.Partition(first) && cl.MasterOf(t, keys.History(room)) == victim {
			second = room
		}
	}
	var mu sync.Mutex
	gauge := 0
	n := newClusterNode(t, rdb, prefix, partitions, func(o *broker.RedisOptions) {
		o.OnOutboxDepth = func(d int) { mu.Lock(); gauge = d; mu.Unlock() }
		o.DrainTimeout = 100 * time.Millisecond
	})
	victim.Kill()
	for room, count := range map[string]int{first: 3, second: 4} {
		for i := range count {
			id := uuid.NewString()
			_ = n.Publish(context.Background(), room, id, frameOf(id, i), true) // held: its master is down
		}
	}
	testutil.Eventually(t, 10*time.Second, "7 frames held", func() bool { return n.Held() == 7 })
	mu.Lock()
	defer mu.Unlock()
	if gauge != 7 {
		t.Fatalf("outbox gauge = %d with 3 and 4 frames held in two partitions, want 7", gauge)
	}
}
