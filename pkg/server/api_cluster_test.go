package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

// Two nodes sharing Redis: the API of either one acts on the members of
// both — rooms counted across nodes, a delete reaching every member and the
// shared history, a kick closing the name's connections on both nodes, and a
// ban (kept in Redis with a TTL) refused by the other node.
func TestAPIAcrossNodes(t *testing.T) {
	prefix := redistest.Prefix(t)
	a := startServer(t, withAPI(useCluster(prefix)))
	b := startServer(t, withAPI(useCluster(prefix)))

	alice := a.joined(t, "lobby", "alice")
	bobA := a.joined(t, "lobby", "bob")
	bobB := b.joined(t, "lobby", "bob")
	carol := b.joined(t, "ops", "carol")

	for _, s := range []*testServer{a, b} {
		testutil.Eventually(t, 10*time.Second, "every node to count both rooms", func() bool {
			r := apiCall(t, "GET", s.URL+"/api/rooms", "", "", "")
			return strings.TrimSpace(string(r.body)) == `[{"room":"lobby","members":3},{"room":"ops","members":1}]`
		})
	}

	// A message said on node a, deleted through node b.
	alice.send(map[string]any{"body": "regrettable"})
	id := alice.next("message").ID
	bobB.next("message")
	if r := apiCall(t, "DELETE", b.URL+"/api/rooms/lobby/messages/"+id, apiKey, "", ""); r.status != 204 {
		t.Fatalf("DELETE on node b: %d %s", r.status, r.body)
	}
	for _, c := range []*wsClient{alice, bobA, bobB} {
		if f := c.next("delete"); f.ID != id || f.Room != "lobby" {
			t.Fatalf("delete frame %s", f.raw)
		}
	}
	for _, s := range []*testServer{a, b} {
		if r := apiCall(t, "GET", s.URL+"/api/rooms/lobby/history", "", "", ""); strings.Contains(string(r.body), id) {
			t.Fatalf("the deleted message is still in the history: %s", r.body)
		}
	}

	// Kick and ban bob through node a: his connections on both nodes close.
	r := apiCall(t, "POST", a.URL+"/api/rooms/lobby/kick", apiKey, "", `{"username":"bob","ban":"1h"}`)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != `{"kicked":2}` {
		t.Fatalf("kick: %d %s", r.status, r.body)
	}
	for _, c := range []*wsClient{bobA, bobB} {
		if _, code, text := c.closed(); code != 4001 || text != "kicked" {
			t.Fatalf("bob closed with %d %q, want 4001 kicked", code, text)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	if ttl := rdb.PTTL(context.Background(), prefix+"ban:lobby:bob").Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("the ban's key has TTL %v, want (0, 1h]", ttl)
	}
	// Node b enforces the ban node a recorded.
	frames, code, text := b.dialName(t, "lobby", "bob").closed()
	if code != 4001 || text != "banned" || len(frames) != 1 || frames[0].Type != "error" || frames[0].Code != "rejected" {
		t.Fatalf("banned bob joining node b: %d frames (%v), close %d %q; want error rejected, then 4001 banned", len(frames), frames, code, text)
	}
	for _, s := range []*testServer{a, b} {
		testutil.Eventually(t, 10*time.Second, "the rooms without bob", func() bool {
			r := apiCall(t, "GET", s.URL+"/api/rooms", "", "", "")
			return strings.TrimSpace(string(r.body)) == `[{"room":"lobby","members":1},{"room":"ops","members":1}]`
		})
	}
	carol.send(map[string]any{"body": "ops is fine"})
	if f := carol.next("message"); f.Body != "ops is fine" {
		t.Fatalf("carol got %s", f.raw)
	}
}
