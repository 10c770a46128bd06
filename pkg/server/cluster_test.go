package server_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/config"
)

// useCluster selects the Redis store and broker under prefix.
func useCluster(prefix string) func(*config.Config) {
	return func(cfg *config.Config) {
		useRedis(redistest.SharedURL, prefix)(cfg)
		cfg.Broker.Type = "redis"
	}
}

// Two servers in one process (so the race detector sees the cluster wiring):
// node-scoped client ids, fan-out across them exactly once, renames visible
// in the other node's member list; no goroutine left after shutdown.
func TestClusterInProcess(t *testing.T) {
	prefix := redistest.Prefix(t)
	// Cleanups run last-in first-out: this one runs after both servers shut
	// down, and proves the broker and presence goroutines are gone.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	a, b := startServer(t, useCluster(prefix)), startServer(t, useCluster(prefix))

	alice := a.dial(t, "", nil)
	alice.expect("history")
	aliceOnline := alice.next("online")
	bob := b.dial(t, "", nil)
	bob.expect("history")
	bobOnline := bob.next("online")
	if aliceOnline.ClientID/broker.ClientIDSpan == bobOnline.ClientID/broker.ClientIDSpan {
		t.Fatalf("client ids %d and %d are not scoped to different nodes", aliceOnline.ClientID, bobOnline.ClientID)
	}
	if f := alice.next("online"); f.ClientID != bobOnline.ClientID {
		t.Fatalf("alice got the online of %d, want bob's %d", f.ClientID, bobOnline.ClientID)
	}

	for i := range 5 {
		alice.send(map[string]any{"body": fmt.Sprint("a", i), "username": "alice"})
		bob.send(map[string]any{"body": fmt.Sprint("b", i), "username": "bob"})
	}
	var got [2][]string
	for i, c := range []*wsClient{alice, bob} {
		for range 10 {
			got[i] = append(got[i], c.next("message").ID)
		}
	}
	if !slices.Equal(got[0], got[1]) {
		t.Fatalf("alice and bob saw different orders:\n%v\n%v", got[0], got[1])
	}

	type member struct {
		ClientID int64  `json:"client_id"`
		Username string `json:"username"`
	}
	want := []member{{aliceOnline.ClientID, "alice"}, {bobOnline.ClientID, "bob"}}
	slices.SortFunc(want, func(x, y member) int { return int(x.ClientID/broker.ClientIDSpan - y.ClientID/broker.ClientIDSpan) })
	for _, s := range []*testServer{a, b} {
		testutil.Eventually(t, 15*time.Second, "both members with their new names on every node", func() bool {
			code, body := httpGet(t, s.URL+"/api/rooms/lobby/members")
			var ms []member
			return code == 200 && json.Unmarshal([]byte(body), &ms) == nil && slices.Equal(ms, want)
		})
	}
}
