package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

// metric reads one sample of the node's /metrics (0 when absent).
func (n *node) metric(name string) float64 {
	n.t.Helper()
	resp, err := http.Get("http://" + n.addr + "/metrics")
	if err != nil {
		n.t.Fatalf("%s metrics: %v", n.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func (n *node) ready() int {
	resp, err := http.Get("http://" + n.addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func lastBody(c *client) string {
	ms := c.of("message")
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1].Body
}

// A dropped subscription connection and a Redis restart: both nodes
// resubscribe (counted in metrics), recover from history what was published
// while they were cut off, and fan-out goes on across nodes.
func TestRedisDropAndRestart(t *testing.T) {
	rs := redistest.StartServer(t)
	raddr := rs.Addr()
	prefix := "test:restart:" + uuid.NewString()[:8] + ":"
	n1, n2 := startNodeOn(t, "node1", prefix, raddr), startNodeOn(t, "node2", prefix, raddr)
	const room = "lobby"
	a, b := dial(t, n1, "alice", "room="+room), dial(t, n2, "bob", "room="+room)
	a.history()
	b.history()
	a.send("hello")
	testutil.Eventually(t, 5*time.Second, "bob to get hello", func() bool { return lastBody(b) == "hello" })

	// Drop every pub/sub connection, and in the same transaction keep 3
	// messages in the history that nobody receives live.
	rdb := redis.NewClient(&redis.Options{Addr: raddr})
	defer rdb.Close()
	ctx := context.Background()
	var missed []string
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub")
		for i := range 3 {
			id := uuid.NewString()
			missed = append(missed, id)
			p.RPush(ctx, prefix+"history:"+room, fmt.Sprintf(
				`{"id":%q,"type":"message","room":%q,"client_id":1,"username":"ghost","body":"missed %d","datetime":"","ts":%d}`,
				id, room, i, time.Now().UnixMilli()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a, b} {
		testutil.Eventually(t, 10*time.Second, c.name+" to recover the missed messages", func() bool {
			return lastBody(c) == "missed 2"
		})
		got := ids(c.of("message"))
		if want := missed; strings.Join(got[len(got)-3:], ",") != strings.Join(want, ",") {
			t.Fatalf("%s recovered %v, want %v", c.name, got[1:], want)
		}
	}
	for _, n := range []*node{n1, n2} {
		if r, k := n.metric("chatserver_broker_resubscribes_total"), n.metric("chatserver_broker_recovered_total"); r < 1 || k != 3 {
			t.Errorf("%s: resubscribes %v (want >= 1), recovered %v (want 3)", n.name, r, k)
		}
	}

	// Redis killed: readiness says so, each node's chat goes on locally.
	rs.Kill()
	testutil.Eventually(t, 10*time.Second, "node1 to report not ready", func() bool { return n1.ready() == http.StatusServiceUnavailable })
	a.send("alone")
	testutil.Eventually(t, 10*time.Second, "alice to get her message with Redis down", func() bool { return lastBody(a) == "alone" })

	// Redis back: both nodes resubscribe and fan-out works across nodes again.
	rs.Start()
	for _, n := range []*node{n1, n2} {
		testutil.Eventually(t, 15*time.Second, n.name+" to resubscribe", func() bool {
			return n.metric("chatserver_broker_resubscribes_total") >= 2 && n.ready() == http.StatusOK
		})
	}
	b.send("back")
	for _, c := range []*client{a, b} {
		testutil.Eventually(t, 10*time.Second, c.name+" to get a message after the restart", func() bool { return lastBody(c) == "back" })
	}
	if n1.metric("chatserver_broker_fallbacks_total") < 1 {
		t.Errorf("node1 counted no fallback publish")
	}
}
