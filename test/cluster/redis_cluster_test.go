package cluster_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

// Two chatserver processes on a Redis Cluster of three masters (the test's
// own, see redistest.StartCluster), with members in two rooms whose keys live
// on different masters. The master of one room is killed with SIGKILL
// mid-chat: the other room carries on across the nodes; the room on the dead
// master behaves as in a Redis outage — each member's messages are acked and
// delivered on its own node at once — and once the master is started again
// from its folder (nodes.conf, AOF) every member has every message of the
// other node exactly once, in the order sent, and the room's history holds
// each once. Both nodes stay ready throughout (the other masters answer).
func TestRedisClusterMasterKilled(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	const partitions = 16
	// A room on the master of the node keys (their {nodes} tag, the same
	// slot whatever the prefix), which is killed: node 1's heartbeat goes
	// with it, and node 2 must still list node 1's members of the other room.
	prefix := "test:cluster:" + uuid.NewString()[:8] + ":"
	keys := rediskeys.Keys{Prefix: prefix, Partitions: partitions}
	victim := cl.MasterOf(t, keys.Node("1"))
	down := ""
	for i := 0; down == "" && i < 1000; i++ {
		if r := fmt.Sprintf("lobby-%d", i); cl.MasterOf(t, keys.History(r)) == victim {
			down = r
		}
	}
	if down == "" {
		t.Fatal("no room found on the master of node 1's heartbeat")
	}
	up := ""
	for i := 0; up == ""; i++ {
		if r := fmt.Sprintf("ops-%d", i); cl.MasterOf(t, keys.History(r)) != victim {
			up = r
		}
	}
	conf := fmt.Sprintf("cluster_addrs: [%q]\n  cluster_partitions: %d", strings.Join(cl.Addrs(), `","`), partitions)
	conf = strings.ReplaceAll(conf, `\"`, `"`)
	n1, n2 := startNodeWith(t, "node1", prefix, conf), startNodeWith(t, "node2", prefix, conf)

	join := func(n *node, name, room string) *client {
		c := dial(t, n, name, "room="+room)
		c.history()
		c.self()
		return c
	}
	aliceD, bobD := join(n1, "alice", down), join(n2, "bob", down)
	aliceU, bobU := join(n1, "alice", up), join(n2, "bob", up)
	aliceD.send("before")
	testutil.Eventually(t, 5*time.Second, "bob to get alice's first message", func() bool {
		return slices.Contains(bodiesFrom(bobD, "alice"), "before")
	})

	victim.Kill()
	const per = 10
	for i := range per {
		aliceD.sendRef(fmt.Sprintf("alice %d", i), fmt.Sprintf("a%d", i))
		bobD.sendRef(fmt.Sprintf("bob %d", i), fmt.Sprintf("b%d", i))
	}
	for _, c := range []*client{aliceD, bobD} {
		testutil.Eventually(t, 10*time.Second, c.name+" to get its acks and its own messages in the dead master's room", func() bool {
			return len(c.of("ack")) == per && len(bodiesFrom(c, c.name)) >= per
		})
	}
	// Past cluster-node-timeout: the other masters mark the dead one FAIL
	// and (cluster-require-full-coverage no) serve their slots all the same.
	time.Sleep(3 * time.Second)
	for i := range per {
		aliceU.send(fmt.Sprintf("alice %d", i))
		bobU.send(fmt.Sprintf("bob %d", i))
	}
	for _, c := range []*client{aliceU, bobU} {
		testutil.Eventually(t, 10*time.Second, c.name+" to get both members' messages in the live master's room", func() bool {
			return len(bodiesFrom(c, "alice")) == per && len(bodiesFrom(c, "bob")) == per
		})
	}
	for _, n := range []*node{n1, n2} {
		if ms := n.members(up); len(ms) != 2 {
			t.Errorf("%s lists %v in %s while node 1's heartbeat is on the dead master, want alice and bob", n.name, ms, up)
		}
	}
	if got := bodiesFrom(aliceD, "bob"); len(got) != 0 {
		t.Fatalf("alice got bob's messages %v while their room's master was down", got)
	}
	for _, n := range []*node{n1, n2} {
		if code := n.ready(); code != http.StatusOK {
			t.Errorf("%s answers /readyz %d with two of three masters up", n.name, code)
		}
	}

	victim.Start()
	cl.WaitOK()
	aliceD.send("alice end")
	bobD.send("bob end")
	for _, c := range []*client{aliceD, bobD} {
		testutil.Eventually(t, 30*time.Second, c.name+" to get both last messages", func() bool {
			return slices.Contains(bodiesFrom(c, "alice"), "alice end") && slices.Contains(bodiesFrom(c, "bob"), "bob end")
		})
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	wantA := append(append([]string{"before"}, numbered("alice", per)...), "alice end")
	wantB := append(numbered("bob", per), "bob end")
	for _, c := range []*client{aliceD, bobD} {
		if got := bodiesFrom(c, "alice"); !slices.Equal(got, wantA) {
			t.Errorf("%s got alice's messages as %v, want %v once each, in order", c.name, got, wantA)
		}
		if got := bodiesFrom(c, "bob"); !slices.Equal(got, wantB) {
			t.Errorf("%s got bob's messages as %v, want %v once each, in order", c.name, got, wantB)
		}
	}
	reader := dial(t, n2, "reader", "room="+down)
	h := reader.history()
	var ha, hb []string
	seen := map[string]bool{}
	for _, e := range h.Messages {
		if e.Type != "message" {
			continue
		}
		if seen[e.ID] {
			t.Errorf("history holds %q twice", e.Body)
		}
		seen[e.ID] = true
		switch e.Username {
		case "alice":
			ha = append(ha, e.Body)
		case "bob":
			hb = append(hb, e.Body)
		}
	}
	if !slices.Equal(ha, wantA) || !slices.Equal(hb, wantB) {
		t.Errorf("history holds alice %v and bob %v, want %v and %v", ha, hb, wantA, wantB)
	}
	if d := n1.metric("chatserver_broker_replayed_total"); d < per {
		t.Errorf("node1 replayed %v held frames, want at least %d", d, per)
	}
}
