package broker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/brokertest"
	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

// slotTestClient is a client of the private cluster cl as the server makes
// one: no retries, no redirects.
func slotTestClient(t *testing.T, cl *redistest.Cluster) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1, MaxRedirects: -1,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// checkSlotMove has nodes a and b, both in room, publish before and after
// move changes the master of the room's slot, and checks that both deliver
// every frame exactly once and that the history holds each once.
func checkSlotMove(t *testing.T, rdb *redis.ClusterClient, prefix string, partitions int, room string, move func()) {
	t.Helper()
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	a, b := newClusterNode(t, rdb, prefix, partitions), newClusterNode(t, rdb, prefix, partitions)
	brokertest.Join(t, a, room)
	brokertest.Join(t, b, room)
	var sent []string
	publish := func(n *cnode, count int) {
		for i := range count {
			id := uuid.NewString()
			if err := n.Publish(context.Background(), room, id, frameOf(id, i), true); err != nil {
				t.Errorf("publish: %v", err)
			}
			sent = append(sent, id)
		}
	}
	publish(a, 3)
	publish(b, 2)
	testutil.Eventually(t, 5*time.Second, "both nodes to have the first 5 frames", func() bool {
		return len(a.IDs(room)) == 5 && len(b.IDs(room)) == 5
	})
	move()
	publish(a, 5)
	publish(b, 5)
	all := func() bool {
		return len(a.IDs(room)) >= 15 && len(b.IDs(room)) >= 15 && a.Held() == 0 && b.Held() == 0
	}
	for deadline := time.Now().Add(20 * time.Second); !all(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			missing := func(n *cnode) (m []int) {
				got := n.IDs(room)
				for i, id := range sent {
					if !slices.Contains(got, id) {
						m = append(m, i)
					}
				}
				return m
			}
			t.Fatalf("after 20s: node a has %d frames (missing %v, %d held), node b %d (missing %v, %d held) of %d",
				len(a.IDs(room)), missing(a), a.Held(), len(b.IDs(room)), missing(b), b.Held(), len(sent))
		}
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	for name, n := range map[string]*cnode{"a": a, "b": b} {
		got := n.IDs(room)
		if len(got) != len(sent) {
			t.Errorf("node %s delivered %d frames, want %d", name, len(got), len(sent))
		}
		for _, id := range sent {
			if c := countOf(got, id); c != 1 {
				t.Errorf("node %s delivered frame %s %d times", name, id, c)
			}
		}
	}
	h := clusterHistoryIDs(t, rdb, keys.History(room))
	for _, id := range sent {
		if c := countOf(h, id); c != 1 {
			t.Errorf("history holds frame %s %d times", id, c)
		}
	}
	// Still live: a frame published now reaches the other node.
	last := uuid.NewString()
	if err := b.Publish(context.Background(), room, last, frameOf(last, 99), true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "a frame published after the move to reach the other node", func() bool {
		return slices.Contains(a.IDs(room), last)
	})
}

// Resharding moves the slot of a room's partition to another master: Redis
// unsubscribes the slot's sharded channels on the old master and keeps the
// connection. Both nodes resubscribe on the new master and deliver every
// frame published after the move, each once (the frames published before
// they resubscribed are read from the history).
func TestRedisClusterSlotMigration(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	rdb := slotTestClient(t, cl)
	const prefix, partitions, room = "t:", 16, "lobby"
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	anchor := keys.PartitionChannel(keys.Partition(room))
	checkSlotMove(t, rdb, prefix, partitions, room, func() {
		from := cl.MasterOf(t, anchor)
		to := cl.Masters[0]
		if to == from {
			to = cl.Masters[1]
		}
		cl.MoveSlot(t, int(redistest.Slot(anchor)), to)
	})
}

// A manual failover (CLUSTER FAILOVER on the replica) makes the replica the
// room's master: both nodes follow it, and lose nothing.
func TestRedisClusterManualFailover(t *testing.T) {
	cl := redistest.StartClusterReplicas(t, 3, 1, 2000)
	rdb := slotTestClient(t, cl)
	const prefix, partitions, room = "t:", 16, "lobby"
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	anchor := keys.PartitionChannel(keys.Partition(room))
	checkSlotMove(t, rdb, prefix, partitions, room, func() {
		replica := cl.ReplicaOf(t, cl.MasterOf(t, anchor))
		cl.Failover(t, replica)
		if m := cl.MasterOf(t, anchor); m != replica {
			t.Fatalf("the room's master is %s after the failover, want %s", m.Addr(), replica.Addr())
		}
	})
}
