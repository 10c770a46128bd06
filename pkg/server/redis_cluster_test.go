package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/server"
)

// testPartitions is redis.cluster_partitions in the cluster tests.
const testPartitions = 16

// useRedisCluster points history, broker, presence, refs and bans at the
// shared Redis Cluster (redistest.ClusterAddrs), under prefix.
func useRedisCluster(addrs []string, prefix string) func(*config.Config) {
	return func(cfg *config.Config) {
		fastLimits(cfg)
		cfg.History.Store = "redis"
		cfg.Broker.Type = "redis"
		cfg.Redis.ClusterAddrs = addrs
		cfg.Redis.ClusterPartitions = testPartitions
		cfg.Redis.KeyPrefix = prefix
	}
}

// Two nodes on a Redis Cluster behave as one server, as they do on one
// Redis: messages across nodes once and in one order, history, members and
// rooms across nodes, a delete, a kick and a ban through either node's API,
// a ref resent to the other node acked and not run again — for two rooms
// whose keys live on different masters. No goroutine is left after shutdown.
func TestRedisClusterAcrossNodes(t *testing.T) {
	rdb, prefix := redistest.ClusterClient(t)
	addrs := redistest.ClusterAddrs(t)
	keys := rediskeys.Keys{Prefix: prefix, Partitions: testPartitions}
	lobby, ops := "lobby", ""
	lobbyMaster, err := rdb.MasterForKey(context.Background(), keys.History(lobby))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"ops", "ops-1", "ops-2", "ops-3", "ops-4", "ops-5", "ops-6", "ops-7"} {
		m, err := rdb.MasterForKey(context.Background(), keys.History(r))
		if err != nil {
			t.Fatal(err)
		}
		if m.Options().Addr != lobbyMaster.Options().Addr {
			ops = r
			break
		}
	}
	if ops == "" {
		t.Fatal("no room found on another master than lobby's")
	}
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	a := startServer(t, withAPI(useRedisCluster(addrs, prefix)))
	b := startServer(t, withAPI(useRedisCluster(addrs, prefix)))

	alice := a.joined(t, lobby, "alice")
	bobA := a.joined(t, lobby, "bob")
	bobB := b.joined(t, lobby, "bob")
	carol := b.joined(t, ops, "carol")
	dave := a.joined(t, ops, "dave")

	for _, s := range []*testServer{a, b} {
		testutil.Eventually(t, 10*time.Second, "every node to count both rooms", func() bool {
			r := apiCall(t, "GET", s.URL+"/api/rooms", "", "", "")
			var got []struct {
				Room    string `json:"room"`
				Members int    `json:"members"`
			}
			if json.Unmarshal(r.body, &got) != nil || len(got) != 2 {
				return false
			}
			slices.SortFunc(got, func(x, y struct {
				Room    string `json:"room"`
				Members int    `json:"members"`
			}) int {
				return strings.Compare(x.Room, y.Room)
			})
			return got[0].Room == lobby && got[0].Members == 3 && got[1].Room == ops && got[1].Members == 2
		})
	}

	// Messages in both rooms from both nodes: one order per room everywhere.
	for range 3 {
		alice.send(map[string]any{"body": "from a"})
		bobB.send(map[string]any{"body": "from b"})
		carol.send(map[string]any{"body": "ops b"})
		dave.send(map[string]any{"body": "ops a"})
	}
	order := func(c *wsClient, n int) []string {
		var ids []string
		for range n {
			ids = append(ids, c.next("message").ID)
		}
		return ids
	}
	lobbyOrder := order(alice, 6)
	for _, c := range []*wsClient{bobA, bobB} {
		if got := order(c, 6); !slices.Equal(got, lobbyOrder) {
			t.Fatalf("lobby: orders differ across nodes:\n%v\n%v", got, lobbyOrder)
		}
	}
	opsOrder := order(carol, 6)
	if got := order(dave, 6); !slices.Equal(got, opsOrder) {
		t.Fatalf("ops: orders differ across nodes:\n%v\n%v", got, opsOrder)
	}
	for room, want := range map[string][]string{lobby: lobbyOrder, ops: opsOrder} {
		for _, s := range []*testServer{a, b} {
			r := apiCall(t, "GET", s.URL+"/api/rooms/"+room+"/history", "", "", "")
			var h []frame
			if err := json.Unmarshal(r.body, &h); err != nil {
				t.Fatalf("history of %s: %v %s", room, err, r.body)
			}
			var ids []string
			for _, f := range h {
				if f.Type == "message" {
					ids = append(ids, f.ID)
				}
			}
			if !slices.Equal(ids, want) {
				t.Fatalf("history of %s on %s: %v, want %v", room, s.URL, ids, want)
			}
		}
		if n := rdb.LLen(context.Background(), keys.History(room)).Val(); n < 6 {
			t.Fatalf("the cluster key %s holds %d entries", keys.History(room), n)
		}
	}

	// A ref accepted on node a, resent on node b: acked with the first id,
	// not delivered again.
	bobA.send(map[string]any{"body": "once", "username": "bob", "ref": "r-1"})
	first := bobA.next("ack")
	bobB.next("message")
	bobB.send(map[string]any{"body": "once", "username": "bob", "ref": "r-1"})
	if again := bobB.next("ack"); again.ID != first.ID || first.ID == "" {
		t.Fatalf("resend on node b acked %s, want the first id %s", again.raw, first.ID)
	}

	// A message said on node a, deleted through node b.
	alice.send(map[string]any{"body": "regrettable"})
	id := alice.next("message").ID
	bobB.next("message")
	if r := apiCall(t, "DELETE", b.URL+"/api/rooms/"+lobby+"/messages/"+id, apiKey, "", ""); r.status != 204 {
		t.Fatalf("DELETE on node b: %d %s", r.status, r.body)
	}
	for _, c := range []*wsClient{alice, bobA, bobB} {
		if f := c.next("delete"); f.ID != id {
			t.Fatalf("delete frame %s", f.raw)
		}
	}
	for _, s := range []*testServer{a, b} {
		if r := apiCall(t, "GET", s.URL+"/api/rooms/"+lobby+"/history", "", "", ""); strings.Contains(string(r.body), id) {
			t.Fatalf("the deleted message is still in the history: %s", r.body)
		}
	}

	// Kick and ban bob through node a: his connections on both nodes close;
	// node b enforces the ban.
	r := apiCall(t, "POST", a.URL+"/api/rooms/"+lobby+"/kick", apiKey, "", `{"username":"bob","ban":"1h"}`)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != `{"kicked":2}` {
		t.Fatalf("kick: %d %s", r.status, r.body)
	}
	for _, c := range []*wsClient{bobA, bobB} {
		if _, code, text := c.closed(); code != 4001 || text != "kicked" {
			t.Fatalf("bob closed with %d %q, want 4001 kicked", code, text)
		}
	}
	if ttl := rdb.PTTL(context.Background(), keys.Ban(lobby, "bob")).Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("the ban's key %s has TTL %v, want (0, 1h]", keys.Ban(lobby, "bob"), ttl)
	}
	frames, code, text := b.dialName(t, lobby, "bob").closed()
	if code != 4001 || text != "banned" || len(frames) != 1 || frames[0].Code != "rejected" {
		t.Fatalf("banned bob joining node b: %v, close %d %q", frames, code, text)
	}

	// Members across nodes.
	for _, s := range []*testServer{a, b} {
		testutil.Eventually(t, 10*time.Second, "ops's members on every node", func() bool {
			r := apiCall(t, "GET", s.URL+"/api/rooms/"+ops+"/members", "", "", "")
			return strings.Contains(string(r.body), `"carol"`) && strings.Contains(string(r.body), `"dave"`)
		})
	}
}

// The first node records redis.cluster_partitions in the cluster; a node
// with the same number starts, one with another is refused with a config
// error naming the key.
func TestRedisClusterPartitionsAreChecked(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	prefix := "t:"
	a := newServer(t, useRedisCluster(cl.Addrs(), prefix), server.Options{})
	t.Cleanup(func() { _ = a.Close() })
	b := newServer(t, useRedisCluster(cl.Addrs(), prefix), server.Options{})
	t.Cleanup(func() { _ = b.Close() })
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	useRedisCluster(cl.Addrs(), prefix)(cfg)
	cfg.Redis.ClusterPartitions = testPartitions * 2
	srv, err := server.New(cfg, server.Options{})
	if err == nil {
		_ = srv.Close()
		t.Fatal("a node with other cluster_partitions started")
	}
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "redis.cluster_partitions" {
		t.Fatalf("err = %v, want a config error naming redis.cluster_partitions", err)
	}
}
