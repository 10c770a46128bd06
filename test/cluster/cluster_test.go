// Package cluster_test runs several chatserver processes (the built binary)
// against one Redis and checks that they behave as one server: fan-out exactly
// once and in one order, shared members, recovery on another node after a
// node is killed, and expiry of a dead node's members.
package cluster_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

const redisAddr = "127.0.0.1:6379"

var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := rdb.Ping(ctx).Err()
	cancel()
	_ = rdb.Close()
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "cluster tests need Redis on %s in CI: %v\n", redisAddr, err)
			return 1
		}
		fmt.Printf("cluster tests skipped: no Redis on %s (%v); CI runs them\n", redisAddr, err)
		return 0
	}
	dir, err := os.MkdirTemp("", "chatserver-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "chatserver")
	build := exec.Command("go", "build", "-o", binary, "github.com/chatserver/chatserver/cmd/chatserver")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building chatserver: %v\n", err)
		return 1
	}
	return m.Run()
}

// node is one chatserver process.
type node struct {
	t    *testing.T
	name string
	addr string
	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNode runs the binary with a config sharing Redis under prefix.
func startNode(t *testing.T, name, prefix string) *node {
	t.Helper()
	return startNodeOn(t, name, prefix, redisAddr)
}

// startNodeOn is startNode with the Redis at raddr.
func startNodeOn(t *testing.T, name, prefix, raddr string) *node {
	t.Helper()
	return startNodeWith(t, name, prefix, fmt.Sprintf("url: \"redis://%s/0\"", raddr))
}

// startNodeWith is startNode with redisConf (a line under redis:, e.g.
// `url: "redis://…"` or `cluster_addrs: […]`) saying where Redis is.
func startNodeWith(t *testing.T, name, prefix, redisConf string) *node {
	t.Helper()
	addr := freePort(t)
	cfg := fmt.Sprintf(`server:
  addr: %q
  shutdown_timeout: 3s
history:
  store: redis
  size: 100
redis:
  %s
  key_prefix: %q
broker:
  type: redis
  node_ttl: 2s
api:
  keys: [%q]
pipelines:
  message:
    - use: username
      with: { allow_rename: true, max_length: 32 }
    - use: validate
    - use: render_html
    - use: history
    - use: broadcast
`, addr, redisConf, prefix, apiKey)
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, name: name, addr: addr, log: &testutil.SyncBuffer{}}
	n.cmd = exec.Command(binary, "serve", "--config", file)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", n.name, n.log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become ready: %v\n%s", name, err, n.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL to the process (by its PID) and reaps it.
func (n *node) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(n.cmd.Process.Pid, syscall.SIGKILL)
	_ = n.cmd.Wait()
	n.cmd = nil
}

type member struct {
	ClientID int64  `json:"client_id"`
	Username string `json:"username"`
}

func (n *node) members(room string) []member {
	n.t.Helper()
	resp, err := http.Get("http://" + n.addr + "/api/rooms/" + room + "/members")
	if err != nil {
		n.t.Fatalf("%s members: %v", n.name, err)
	}
	defer resp.Body.Close()
	var ms []member
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		n.t.Fatalf("%s members: %v", n.name, err)
	}
	return ms
}

type envelope struct {
	ID       string     `json:"id"`
	Type     string     `json:"type"`
	ClientID int64      `json:"client_id"`
	Username string     `json:"username"`
	Body     string     `json:"body"`
	Messages []envelope `json:"messages"`
	Complete *bool      `json:"complete"`
	Ref      string     `json:"ref"`
}

// client is a WebSocket client whose frames are read by a goroutine into a
// slice the test inspects.
type client struct {
	t      *testing.T
	name   string
	conn   *websocket.Conn
	mu     sync.Mutex
	frames []envelope
	hist   chan envelope
	ended  error // why the connection's reader stopped, if it did
}

// dial connects a client to n with query. Its username cookie carries name,
// so its presence frames name it (see self).
func dial(t *testing.T, n *node, name, query string) *client {
	t.Helper()
	cookie := http.Header{"Cookie": {"username=" + base64.StdEncoding.EncodeToString([]byte(name))}}
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/chatsocket?"+query, cookie)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, n.name, err)
	}
	c := &client{t: t, name: name, conn: conn, hist: make(chan envelope, 1)}
	go func() {
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				c.mu.Lock()
				c.ended = err
				c.mu.Unlock()
				return
			}
			var e envelope
			if json.Unmarshal(b, &e) != nil {
				continue
			}
			if e.Type == "history" {
				select {
				case c.hist <- e:
				default:
				}
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, e)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	t.Cleanup(func() { // runs first: before the close above ends the reader
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.Failed() && c.ended != nil {
			t.Logf("%s: the connection had ended: %v", name, c.ended)
		}
	})
	return c
}

func (c *client) history() envelope {
	c.t.Helper()
	select {
	case h := <-c.hist:
		return h
	case <-time.After(5 * time.Second):
		c.t.Fatalf("%s: no history frame", c.name)
	}
	return envelope{}
}

func (c *client) send(body string) {
	c.t.Helper()
	if err := c.conn.WriteJSON(map[string]string{"body": body, "username": c.name}); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

// of returns the frames of type typ received so far.
func (c *client) of(typ string) []envelope {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []envelope
	for _, e := range c.frames {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func ids(es []envelope) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestThreeNodes(t *testing.T) {
	prefix := redistest.Prefix(t)
	nodes := []*node{startNode(t, "node1", prefix), startNode(t, "node2", prefix), startNode(t, "node3", prefix)}

	const room = "lobby"
	// A member has joined once its own online arrives (its node is then
	// subscribed to the room); presence events reach it from then on. So each
	// client waits for that before the next one dials.
	var clients []*client
	for i, name := range []string{"alice", "bob", "carol"} {
		c := dial(t, nodes[i], name, "room="+room)
		c.history()
		testutil.Eventually(t, 5*time.Second, name+" to see its own online", func() bool { return len(c.of("online")) >= 1 })
		clients = append(clients, c)
	}

	// Members of every node are listed by every node; client ids are unique.
	var ms []member
	for _, n := range nodes {
		testutil.Eventually(t, 5*time.Second, n.name+" to list 3 members", func() bool {
			ms = n.members(room)
			return len(ms) == 3
		})
	}
	idsSeen := map[int64]bool{}
	for _, m := range ms {
		if idsSeen[m.ClientID] {
			t.Fatalf("client_id %d used twice: %v", m.ClientID, ms)
		}
		idsSeen[m.ClientID] = true
	}
	// Every client sees its own online and those of the clients that came
	// after it, whatever node they are on.
	for i, c := range clients {
		want := len(clients) - i
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%s to see %d onlines", c.name, want), func() bool {
			return len(c.of("online")) >= want
		})
	}

	// Messages from every node, sent concurrently.
	const per = 10
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				_ = c.conn.WriteJSON(map[string]string{"body": fmt.Sprintf("%s %d", c.name, i), "username": c.name})
			}
		}()
	}
	wg.Wait()
	total := per * len(clients)
	for _, c := range clients {
		testutil.Eventually(t, 10*time.Second, c.name+" to receive every message", func() bool { return len(c.of("message")) >= total })
	}
	time.Sleep(200 * time.Millisecond) // a duplicate would have arrived by now
	order := ids(clients[0].of("message"))
	if len(order) != total || len(slices.Compact(slices.Sorted(slices.Values(order)))) != total {
		t.Fatalf("alice got %d messages (%d distinct), want %d exactly once", len(order),
			len(slices.Compact(slices.Sorted(slices.Values(order)))), total)
	}
	for _, c := range clients[1:] {
		if got := ids(c.of("message")); !slices.Equal(got, order) {
			t.Fatalf("%s's messages differ from alice's (%d vs %d, or order)", c.name, len(got), len(order))
		}
	}

	// Kill node 2 (SIGKILL). Bob's last message is his ?since=.
	bob := clients[1]
	var bobID int64
	for _, e := range bob.of("message") {
		if e.Username == "bob" {
			bobID = e.ClientID
		}
	}
	last := order[len(order)-1]
	nodes[1].kill()
	missed := []string{}
	for i := range 3 {
		clients[0].send(fmt.Sprintf("while bob is away %d", i))
		clients[2].send(fmt.Sprintf("carol while bob is away %d", i))
	}
	testutil.Eventually(t, 10*time.Second, "alice to get the messages sent during the outage", func() bool {
		return len(clients[0].of("message")) >= total+6
	})
	for _, e := range clients[0].of("message")[total:] {
		missed = append(missed, e.ID)
	}

	// Bob reconnects to node 3 and gets exactly what he missed.
	bob2 := dial(t, nodes[2], "bob", "room="+room+"&since="+last)
	h := bob2.history()
	if h.Complete == nil || !*h.Complete {
		t.Errorf("history after ?since= is not complete: %+v", h.Complete)
	}
	if got := ids(h.Messages); !slices.Equal(got, missed) {
		t.Fatalf("bob recovered %v, want %v", got, missed)
	}

	// Node 2's members expire (node_ttl 2s) and offline goes out for bob's
	// old connection; bob's new connection is listed.
	testutil.Eventually(t, 10*time.Second, "node 2's members to expire", func() bool {
		for _, m := range nodes[0].members(room) {
			if m.ClientID == bobID {
				return false
			}
		}
		return true
	})
	for _, c := range []*client{clients[0], clients[2]} {
		testutil.Eventually(t, 10*time.Second, c.name+" to get bob's offline", func() bool {
			for _, e := range c.of("offline") {
				if e.ClientID == bobID {
					return true
				}
			}
			return false
		})
	}
	if got := nodes[0].members(room); len(got) != 3 {
		t.Errorf("members after failover: %v, want alice, carol and bob's new connection", got)
	}
}
