package broker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

// die stops p's heartbeat without the cleanup Close does: a node killed.
func (p *RedisPresence) die() {
	p.once.Do(func() { close(p.stop); <-p.done })
}

func TestPresenceAcrossNodesAndExpiry(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	var mu sync.Mutex
	var expired []Member
	opts := RedisPresenceOptions{Client: rdb, KeyPrefix: prefix, TTL: 600 * time.Millisecond,
		OnExpired: func(room string, m Member) {
			mu.Lock()
			expired = append(expired, m)
			mu.Unlock()
		}}
	a, b := NewRedisPresence(opts), NewRedisPresence(opts)
	defer a.Close()
	if a.Node() == b.Node() {
		t.Fatalf("two nodes got number %d", a.Node())
	}
	idA, idB := a.Node()*ClientIDSpan+1, b.Node()*ClientIDSpan+1
	a.Add("lobby", Member{ClientID: idA, Username: "alice"})
	b.Add("lobby", Member{ClientID: idB, Username: "bob"})
	b.Add("lobby", Member{ClientID: idB + 1, Username: "carol"})
	b.Remove("lobby", idB+1)

	want := []Member{{idA, "alice"}, {idB, "bob"}}
	slices.SortFunc(want, func(x, y Member) int { return int(x.ClientID/ClientIDSpan - y.ClientID/ClientIDSpan) })
	for _, p := range []*RedisPresence{a, b} {
		testutil.Eventually(t, 5*time.Second, "members on both nodes", func() bool {
			got, err := p.Members(context.Background(), "lobby")
			return err == nil && slices.Equal(got, want)
		})
	}
	b.Add("lobby", Member{ClientID: idB, Username: "bobby"}) // a rename
	testutil.Eventually(t, 5*time.Second, "the rename", func() bool {
		got, _ := a.Members(context.Background(), "lobby")
		return slices.Contains(got, Member{idB, "bobby"})
	})

	b.die()
	testutil.Eventually(t, 5*time.Second, "b's members to expire", func() bool {
		got, _ := a.Members(context.Background(), "lobby")
		return slices.Equal(got, []Member{{idA, "alice"}})
	})
	testutil.Eventually(t, 5*time.Second, "b's members to be reaped", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(expired) == 1
	})
	if expired[0] != (Member{idB, "bobby"}) {
		t.Errorf("expired %v, want bobby", expired)
	}
	if n, _ := rdb.HLen(context.Background(), prefix+"members:lobby").Result(); n != 1 {
		t.Errorf("members hash has %d fields after reaping, want 1", n)
	}
}

func TestPresenceCloseRemovesNode(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	a := NewRedisPresence(RedisPresenceOptions{Client: rdb, KeyPrefix: prefix})
	b := NewRedisPresence(RedisPresenceOptions{Client: rdb, KeyPrefix: prefix})
	defer a.Close()
	b.Add("r", Member{ClientID: 7, Username: "x"})
	testutil.Eventually(t, 5*time.Second, "b's member", func() bool {
		got, _ := a.Members(context.Background(), "r")
		return len(got) == 1
	})
	_ = b.Close()
	got, _ := a.Members(context.Background(), "r")
	if len(got) != 0 {
		t.Fatalf("after a graceful close a still lists %v", got)
	}
}

// Redis loses every key (a restart without persistence): nodes write their
// members back, and a node starting afterwards does not reuse a live number.
func TestPresenceSurvivesLostKeys(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	opts := RedisPresenceOptions{Client: rdb, KeyPrefix: prefix, TTL: 600 * time.Millisecond}
	a, b := NewRedisPresence(opts), NewRedisPresence(opts)
	defer a.Close()
	defer b.Close()
	b.Add("r", Member{ClientID: b.Node()*ClientIDSpan + 1, Username: "bob"})
	testutil.Eventually(t, 5*time.Second, "bob listed", func() bool {
		got, _ := a.Members(context.Background(), "r")
		return len(got) == 1
	})
	keys, _ := rdb.Keys(context.Background(), prefix+"*").Result()
	rdb.Del(context.Background(), keys...)
	testutil.Eventually(t, 5*time.Second, "bob listed again", func() bool {
		got, _ := a.Members(context.Background(), "r")
		return len(got) == 1
	})
	c := NewRedisPresence(opts)
	defer c.Close()
	if c.Node() == a.Node() || c.Node() == b.Node() {
		t.Fatalf("new node took number %d of a live node (%d, %d)", c.Node(), a.Node(), b.Node())
	}
}
