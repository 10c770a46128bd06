package server

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/brokertest"
	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/history"
)

const faultPartitions = 16

// clusterClientOf is the server's Redis client (NewRedisClient) of the
// private cluster cl; before is called with it before any node is dialed.
func clusterClientOf(t *testing.T, cl *redistest.Cluster, before func(*redis.ClusterClient)) *redis.ClusterClient {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Redis.ClusterAddrs = cl.Addrs()
	u, err := NewRedisClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rdb := u.(*redis.ClusterClient)
	if before != nil {
		before(rdb)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// faultNode is a cluster broker recording the ids it delivers, per room.
type faultNode struct {
	*broker.RedisCluster
	brokertest.Recorder
}

func newFaultNode(t *testing.T, rdb *redis.ClusterClient, prefix string) *faultNode {
	t.Helper()
	n := &faultNode{}
	n.RedisCluster = broker.NewRedisCluster(broker.RedisOptions{
		Client: rdb, KeyPrefix: prefix, HistorySize: 1000, Partitions: faultPartitions,
		Deliver:      n.Deliver,
		ReplaySettle: 500 * time.Millisecond,
	})
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func faultFrame(id string) []byte {
	return []byte(`{"id":"` + id + `","type":"message","room":"r","client_id":1,"username":"u","body":"b","datetime":"","ts":` +
		"1" + `}`)
}

// checkOnce fails unless every id of sent is in got exactly once.
func checkOnce(t *testing.T, what string, got, sent []string) {
	t.Helper()
	if len(got) != len(sent) {
		t.Errorf("%s: %d ids, want %d", what, len(got), len(sent))
	}
	for _, id := range sent {
		n := 0
		for _, g := range got {
			if g == id {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %s %d times, want once", what, id, n)
		}
	}
}

func historyOf(t *testing.T, rdb *redis.ClusterClient, key string) []string {
	t.Helper()
	raw, err := rdb.LRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(raw))
	for i, r := range raw {
		out[i] = history.IDOf([]byte(r))
	}
	return out
}

// timeoutErr is a read timeout as the network reports it.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout (injected)" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// lostReply lets the first script command that carries marker run on Redis,
// then reports a read timeout, as when the reply is lost on the way back.
type lostReply struct {
	marker string
	fired  atomic.Bool
}

func (h *lostReply) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		name := strings.ToLower(cmd.Name())
		if err == nil && (name == "evalsha" || name == "eval") && strings.Contains(cmd.String(), h.marker) &&
			h.fired.CompareAndSwap(false, true) {
			return timeoutErr{}
		}
		return err
	}
}

func (h *lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A publish whose script ran on the room's master but whose reply was lost
// (a read timeout) is not run again by the server's cluster client behind
// the broker's back: the broker holds the frame as maybe taken, and its
// replay finds it in the history. The frame is kept once and every node
// delivers it once.
func TestRedisClusterLostReplyKeptOnce(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	id := uuid.NewString()
	hook := &lostReply{marker: id}
	rdb := clusterClientOf(t, cl, func(c *redis.ClusterClient) {
		c.OnNewNode(func(n *redis.Client) { n.AddHook(hook) })
	})
	const prefix, room = "t:", "lobby"
	keys := rediskeys.Keys{Prefix: prefix, Partitions: faultPartitions}
	a, b := newFaultNode(t, rdb, prefix), newFaultNode(t, rdb, prefix)
	brokertest.Join(t, a, room)
	brokertest.Join(t, b, room)
	if err := a.Publish(context.Background(), room, id, faultFrame(id), true); err != nil {
		t.Fatal(err)
	}
	if !hook.fired.Load() {
		t.Fatal("the publish script never ran through the hook")
	}
	testutil.Eventually(t, 10*time.Second, "the other node to have the frame and nothing held", func() bool {
		return len(b.IDs(room)) >= 1 && a.Held() == 0
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	checkOnce(t, "history", historyOf(t, rdb, keys.History(room)), []string{id})
	checkOnce(t, "node b", b.IDs(room), []string{id})
	// The publishing node delivered the frame when it held it; the
	// script's SPUBLISH (the reply, not the publish, was lost) reaches its
	// own subscription too and must be dropped as seen.
	checkOnce(t, "node a", a.IDs(room), []string{id})
}

// A room's master dies and its replica takes over (cluster-node-timeout
// 1s): delivery across two nodes resumes by itself within a generous bound
// (go-redis would otherwise keep dialing the dead master until its slot
// map is a minute old), and every frame published meanwhile reaches both
// nodes once and is kept once.
func TestRedisClusterMasterFailsOver(t *testing.T) {
	cl := redistest.StartClusterReplicas(t, 3, 1, 1000)
	rdb := clusterClientOf(t, cl, nil)
	const prefix, room = "t:", "lobby"
	keys := rediskeys.Keys{Prefix: prefix, Partitions: faultPartitions}
	a, b := newFaultNode(t, rdb, prefix), newFaultNode(t, rdb, prefix)
	brokertest.Join(t, a, room)
	brokertest.Join(t, b, room)
	var sent []string
	publish := func(n *faultNode, count int) {
		for range count {
			id := uuid.NewString()
			if err := n.Publish(context.Background(), room, id, faultFrame(id), true); err != nil {
				t.Errorf("publish: %v", err)
			}
			sent = append(sent, id)
		}
	}
	publish(a, 3)
	publish(b, 3)
	testutil.Eventually(t, 5*time.Second, "both nodes to have the first frames", func() bool {
		return len(a.IDs(room)) == 6 && len(b.IDs(room)) == 6
	})

	master := cl.MasterOf(t, keys.History(room))
	master.Kill()
	// Publishes while the master is dead and while its replica takes over.
	for range 10 {
		publish(a, 1)
		publish(b, 1)
		time.Sleep(200 * time.Millisecond)
	}
	testutil.Eventually(t, 20*time.Second, "delivery across the nodes to resume after the failover", func() bool {
		return len(a.IDs(room)) >= len(sent) && len(b.IDs(room)) >= len(sent) && a.Held() == 0 && b.Held() == 0
	})
	last := uuid.NewString()
	if err := b.Publish(context.Background(), room, last, faultFrame(last), true); err != nil {
		t.Fatal(err)
	}
	sent = append(sent, last)
	testutil.Eventually(t, 5*time.Second, "a frame published after the failover to reach the other node", func() bool {
		return slices.Contains(a.IDs(room), last)
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	checkOnce(t, "node a", a.IDs(room), sent)
	checkOnce(t, "node b", b.IDs(room), sent)
	checkOnce(t, "history", historyOf(t, rdb, keys.History(room)), sent)
}

// The server's cluster client finds a dead master's promoted replica by
// itself, without a MOVED to tell it (a dead master sends none) and without
// a broker subscription asking for a reload: a failed dial, or a slot map
// older than a few seconds, reloads it. go-redis' defaults kept dialing the
// dead master for a minute.
func TestRedisClusterClientFindsPromotedReplica(t *testing.T) {
	cl := redistest.StartClusterReplicas(t, 3, 1, 1000)
	rdb := clusterClientOf(t, cl, nil)
	ctx := context.Background()
	const key = "t:failover-key"
	if err := rdb.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	master := cl.MasterOf(t, key)
	mc := master.Client()
	// The replica has the key before its master dies.
	if n, err := mc.Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d %v", n, err)
	}
	_ = mc.Close()
	master.Kill()
	testutil.Eventually(t, 20*time.Second, "the client to read the key from the promoted replica", func() bool {
		v, err := rdb.Get(ctx, key).Result()
		return err == nil && v == "v"
	})
}
