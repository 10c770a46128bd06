package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// ownRedis runs a redis-server of the test's own on a free port, so the test
// can kill it (SIGKILL, by PID) and start it again on the same port.
type ownRedis struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd
}

func startOwnRedis(t *testing.T) *ownRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	r := &ownRedis{t: t, addr: freePort(t)}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *ownRedis) start() {
	r.t.Helper()
	_, port, _ := strings.Cut(r.addr, ":")
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rdb.Close()
	eventually(r.t, 10*time.Second, "redis-server to start", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		return rdb.Ping(ctx).Err() == nil
	})
}

func (r *ownRedis) kill() {
	if r.cmd == nil {
		return
	}
	_ = syscall.Kill(r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}

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
	rs := startOwnRedis(t)
	prefix := "test:restart:" + uuid.NewString()[:8] + ":"
	n1, n2 := startNodeOn(t, "node1", prefix, rs.addr), startNodeOn(t, "node2", prefix, rs.addr)
	const room = "lobby"
	a, b := dial(t, n1, "alice", "room="+room), dial(t, n2, "bob", "room="+room)
	a.history()
	b.history()
	a.send("hello")
	eventually(t, 5*time.Second, "bob to get hello", func() bool { return lastBody(b) == "hello" })

	// Drop every pub/sub connection, and in the same transaction keep 3
	// messages in the history that nobody receives live.
	rdb := redis.NewClient(&redis.Options{Addr: rs.addr})
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
		eventually(t, 10*time.Second, c.name+" to recover the missed messages", func() bool {
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
	rs.kill()
	eventually(t, 10*time.Second, "node1 to report not ready", func() bool { return n1.ready() == http.StatusServiceUnavailable })
	a.send("alone")
	eventually(t, 10*time.Second, "alice to get her message with Redis down", func() bool { return lastBody(a) == "alone" })

	// Redis back: both nodes resubscribe and fan-out works across nodes again.
	rs.start()
	for _, n := range []*node{n1, n2} {
		eventually(t, 15*time.Second, n.name+" to resubscribe", func() bool {
			return n.metric("chatserver_broker_resubscribes_total") >= 2 && n.ready() == http.StatusOK
		})
	}
	b.send("back")
	for _, c := range []*client{a, b} {
		eventually(t, 10*time.Second, c.name+" to get a message after the restart", func() bool { return lastBody(c) == "back" })
	}
	if n1.metric("chatserver_broker_fallbacks_total") < 1 {
		t.Errorf("node1 counted no fallback publish")
	}
}
