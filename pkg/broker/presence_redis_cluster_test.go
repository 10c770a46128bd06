package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

// Presence on a Redis Cluster, its keys spread over the masters: members and
// rooms listed across nodes for rooms of many slots, a dead node's members
// expired and reaped, and a graceful Close removing every key of its node
// (one command per key: no MULTI or DEL spans slots).
func TestPresenceOnCluster(t *testing.T) {
	rdb, prefix := redistest.ClusterClient(t)
	const parts = 16
	keys := rediskeys.Keys{Prefix: prefix, Partitions: parts}
	var mu sync.Mutex
	var expired []Member
	opts := RedisPresenceOptions{Client: rdb, KeyPrefix: prefix, Partitions: parts, TTL: 600 * time.Millisecond,
		OnExpired: func(room string, m Member) {
			mu.Lock()
			expired = append(expired, m)
			mu.Unlock()
		}}
	a, b, c := NewRedisPresence(opts), NewRedisPresence(opts), NewRedisPresence(opts)
	defer a.Close()
	rooms := []string{"lobby", "ops", "room-3", "room-4", "room-5"}
	for i, room := range rooms {
		a.Add(room, Member{ClientID: a.Node()*ClientIDSpan + int64(i), Username: "a"})
		b.Add(room, Member{ClientID: b.Node()*ClientIDSpan + int64(i), Username: "b"})
		c.Add(room, Member{ClientID: c.Node()*ClientIDSpan + int64(i), Username: "c"})
	}
	for _, room := range rooms {
		testutil.Eventually(t, 5*time.Second, "three members of "+room+" on a", func() bool {
			got, err := a.Members(context.Background(), room)
			return err == nil && len(got) == 3
		})
	}
	testutil.Eventually(t, 5*time.Second, "every room counted", func() bool {
		got, err := a.Rooms(context.Background())
		want := map[string]int{}
		for _, r := range rooms {
			want[r] = 3
		}
		return err == nil && fmt.Sprint(got) == fmt.Sprint(want)
	})

	_ = c.Close()
	me := fmt.Sprint(c.Node())
	for _, k := range []string{keys.Node(me), keys.NodeRooms(me)} {
		if rdb.Exists(context.Background(), k).Val() != 0 {
			t.Errorf("%s survived c's Close", k)
		}
	}
	if slices.Contains(rdb.SMembers(context.Background(), keys.Nodes()).Val(), me) {
		t.Error("c is still in the nodes set")
	}
	for _, room := range rooms {
		if n := rdb.HLen(context.Background(), keys.Members(room)).Val(); n != 2 {
			t.Errorf("%s has %d members after c's Close, want 2", keys.Members(room), n)
		}
	}

	b.die()
	testutil.Eventually(t, 5*time.Second, "b's members to be reaped", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(expired) == len(rooms)
	})
	for _, room := range rooms {
		got, _ := a.Members(context.Background(), room)
		if len(got) != 1 || got[0].Username != "a" {
			t.Errorf("%s after b died: %v", room, got)
		}
	}
}

// The master holding a live node's heartbeat restarts empty: no other node
// reaps it nor announces its members offline — its heartbeat is lost only
// together with the set of nodes naming it (one hash tag), as on one Redis.
// The prefix is one under which the plain names of node 1's heartbeat, of
// the nodes set and of node 1's rooms would fall on different masters, the
// heartbeat's apart: the case the tag is for.
func TestPresenceClusterMasterRestartedEmptyReapsNoLiveNode(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer rdb.Close()
	prefix := ""
	for i := 0; prefix == ""; i++ {
		p := fmt.Sprintf("t%d:", i)
		if m := cl.MasterOf(t, p+"node:1"); m != cl.MasterOf(t, p+"nodes") && m != cl.MasterOf(t, p+"node:1:rooms") {
			prefix = p
		}
	}
	const parts = 16
	keys := rediskeys.Keys{Prefix: prefix, Partitions: parts}
	var mu sync.Mutex
	var expired []Member
	// a beats every 10s (TTL 30s): its heartbeat stays missing for a while
	// after the restart. b beats, and reaps, every 200ms.
	a := NewRedisPresence(RedisPresenceOptions{Client: rdb, KeyPrefix: prefix, Partitions: parts, TTL: 30 * time.Second})
	defer a.Close()
	b := NewRedisPresence(RedisPresenceOptions{Client: rdb, KeyPrefix: prefix, Partitions: parts, TTL: 600 * time.Millisecond,
		OnExpired: func(_ string, m Member) {
			mu.Lock()
			expired = append(expired, m)
			mu.Unlock()
		}})
	defer b.Close()
	if a.Node() != 1 {
		t.Fatalf("a is node %d, want 1 (a fresh cluster)", a.Node())
	}
	alice := Member{ClientID: a.Node()*ClientIDSpan + 1, Username: "alice"}
	a.Add("lobby", alice)
	testutil.Eventually(t, 5*time.Second, "b to see alice", func() bool {
		got, err := b.Members(context.Background(), "lobby")
		return err == nil && slices.Contains(got, alice)
	})
	cl.MasterOf(t, keys.Node("1")).RestartEmpty()
	cl.WaitOK()
	time.Sleep(3 * time.Second) // b's reaper runs many times (TTL 600ms)
	mu.Lock()
	got := slices.Clone(expired)
	mu.Unlock()
	if len(got) > 0 {
		t.Fatalf("b reaped live members %v after a master restarted empty", got)
	}
	testutil.Eventually(t, 15*time.Second, "b to see alice again once a beats", func() bool {
		got, err := b.Members(context.Background(), "lobby")
		return err == nil && slices.Contains(got, alice)
	})
}
