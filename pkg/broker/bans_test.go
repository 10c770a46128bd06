package broker

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

func TestMemoryBans(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1000, 0)
	m := NewMemoryBans(3)
	m.now = func() time.Time { return now }
	_ = m.Ban(ctx, "lobby", "bob", time.Minute)
	_ = m.Ban(ctx, "lobby", "eve", time.Hour)
	tests := []struct {
		name       string
		advance    time.Duration
		room, user string
		want       bool
		banFirst   string // a ban (of 2h, in lobby) added before the check: fills the store
	}{
		{"banned", 0, "lobby", "bob", true, ""},
		{"another room", 0, "ops", "bob", false, ""},
		{"another name", 0, "lobby", "bobby", false, ""},
		{"still banned just before the end, with carol", time.Minute - time.Millisecond, "lobby", "bob", true, "carol"},
		{"full: the soonest to expire went for dave", 0, "lobby", "bob", false, "dave"},
		{"the longest ban stays", 0, "lobby", "eve", true, ""},
		{"expired", time.Hour, "lobby", "eve", false, ""},
	}
	for _, tt := range tests {
		now = now.Add(tt.advance)
		if tt.banFirst != "" {
			_ = m.Ban(ctx, "lobby", tt.banFirst, 2*time.Hour)
		}
		got, err := m.Banned(ctx, tt.room, tt.user)
		if err != nil || got != tt.want {
			t.Fatalf("%s: Banned(%s, %s) = %t, %v; want %t", tt.name, tt.room, tt.user, got, err, tt.want)
		}
		if len(m.bans) > 3 {
			t.Fatalf("%s: %d bans held, bound is 3", tt.name, len(m.bans))
		}
	}
}

func TestRedisBansExpire(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	ctx := context.Background()
	b := NewRedisBans(rdb, prefix, 0)
	if err := b.Ban(ctx, "lobby", "bob", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		room, user string
		want       bool
	}{{"lobby", "bob", true}, {"lobby", "alice", false}, {"ops", "bob", false}} {
		if got, err := b.Banned(ctx, c.room, c.user); err != nil || got != c.want {
			t.Fatalf("Banned(%s, %s) = %t, %v; want %t", c.room, c.user, got, err, c.want)
		}
	}
	if ttl := rdb.PTTL(ctx, prefix+"ban:lobby:bob").Val(); ttl <= 0 || ttl > 300*time.Millisecond {
		t.Fatalf("ban key TTL %v, want (0, 300ms]", ttl)
	}
	testutil.Eventually(t, 5*time.Second, "the ban to expire", func() bool {
		got, err := b.Banned(ctx, "lobby", "bob")
		return err == nil && !got
	})
}

func TestPresenceRooms(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	opts := RedisPresenceOptions{Client: rdb, KeyPrefix: prefix, TTL: 600 * time.Millisecond}
	a, b := NewRedisPresence(opts), NewRedisPresence(opts)
	defer a.Close()
	ida, idb := a.Node()*ClientIDSpan, b.Node()*ClientIDSpan
	a.Add("lobby", Member{ClientID: ida + 1, Username: "alice"})
	b.Add("lobby", Member{ClientID: idb + 1, Username: "bob"})
	b.Add("ops", Member{ClientID: idb + 2, Username: "carol"})
	b.Add("gone", Member{ClientID: idb + 3, Username: "dave"})
	b.Remove("gone", idb+3)
	want := map[string]int{"lobby": 2, "ops": 1}
	for _, p := range []*RedisPresence{a, b} {
		testutil.Eventually(t, 5*time.Second, "rooms on both nodes", func() bool {
			got, err := p.Rooms(context.Background())
			return err == nil && fmt.Sprint(got) == fmt.Sprint(want)
		})
	}
	// A room its last member left is no longer among the node's candidates.
	testutil.Eventually(t, 5*time.Second, "gone out of b's rooms set", func() bool {
		rooms, err := rdb.SMembers(context.Background(), prefix+"node:"+strconv.FormatInt(b.Node(), 10)+":rooms").Result()
		return err == nil && fmt.Sprint(rooms) != "" && !slices.Contains(rooms, "gone") && slices.Contains(rooms, "ops")
	})
	b.die() // b's members stop counting once its heartbeat expires
	testutil.Eventually(t, 5*time.Second, "b's rooms to go", func() bool {
		got, err := a.Rooms(context.Background())
		return err == nil && fmt.Sprint(got) == fmt.Sprint(map[string]int{"lobby": 1})
	})
}
