package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterEnv names the variable that gives tests a Redis Cluster: its seed
// addresses, comma-separated (.ci/run starts a 3-master cluster and sets it).
const ClusterEnv = "CHATSERVER_TEST_REDIS_CLUSTER"

// ClusterAddrs returns the seed addresses of the Redis Cluster the tests
// share (ClusterEnv), after checking that it answers with cluster_state:ok.
// Without it the test is skipped outside CI and fails in CI, which promises
// one.
func ClusterAddrs(t testing.TB) []string {
	t.Helper()
	v := os.Getenv(ClusterEnv)
	if v == "" {
		unavailable(t, "no Redis Cluster: %s is not set (.ci/run starts one)", ClusterEnv)
	}
	addrs := strings.Split(v, ",")
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil || !strings.Contains(info, "cluster_state:ok") {
		unavailable(t, "the Redis Cluster at %s (%s) is not ok: %v %q", v, ClusterEnv, err, firstLine(info))
	}
	return addrs
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

// ClusterClient returns a client of the shared Redis Cluster and a key
// prefix unique to the test; every key under the prefix is deleted from
// every master when the test ends (SCAN on each: a cluster has no global
// KEYS), and the client is closed.
func ClusterClient(t testing.TB) (*redis.ClusterClient, string) {
	t.Helper()
	addrs := ClusterAddrs(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	prefix := uniquePrefix(t)
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = DeleteClusterPrefix(ctx, c, prefix)
	})
	return c, prefix
}

// DeleteClusterPrefix deletes every key under prefix on every master.
func DeleteClusterPrefix(ctx context.Context, c *redis.ClusterClient, prefix string) error {
	return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		iter := m.Scan(ctx, 0, redisGlobEscape(prefix)+"*", 500).Iterator()
		for iter.Next(ctx) {
			// One key per DEL: keys of one master may still be of several slots.
			if err := m.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	})
}

// uniquePrefix is a key prefix unique to this test run.
func uniquePrefix(t testing.TB) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := strings.NewReplacer("/", "_", " ", "_", "{", "_", "}", "_").Replace(t.Name())
	return "chatserver-test:" + name + ":" + hex.EncodeToString(b) + ":"
}

// Cluster is a private Redis Cluster of masters without replicas, each a
// redis-server on a free port in a folder of its own (with its nodes.conf),
// run with cluster-require-full-coverage no and
// cluster-allow-reads-when-down yes, so that the masters left serve their
// slots while one is down. A master can be killed and started again from its
// folder (fault tests). Everything is killed when the test ends.
type Cluster struct {
	Masters []*ClusterNode
}

// ClusterNode is one master of a private Cluster.
type ClusterNode struct {
	t    testing.TB
	Port int
	dir  string
	cmd  *exec.Cmd
}

// Addr is the node's host:port.
func (n *ClusterNode) Addr() string { return "127.0.0.1:" + strconv.Itoa(n.Port) }

// Addrs are the masters' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, n := range c.Masters {
		out[i] = n.Addr()
	}
	return out
}

// StartCluster starts a private Redis Cluster of n masters, at least 3 (redis-cli
// --cluster create) and waits for cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			unavailable(t, "%s is not installed: %v", bin, err)
		}
	}
	c := &Cluster{}
	for range n {
		node := &ClusterNode{t: t, Port: clusterPort(t), dir: t.TempDir()}
		t.Cleanup(node.Kill)
		node.Start()
		c.Masters = append(c.Masters, node)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput() //nolint:gosec // a fixed binary; the addresses are ours
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK()
	return c
}

// clusterPort returns a free port whose cluster bus port (port+10000) is
// free too.
func clusterPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		p := FreePort(t)
		if p+10000 > 65535 {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err != nil {
			continue
		}
		_ = ln.Close()
		return p
	}
	t.Fatal("redistest: no free port pair for a cluster node")
	return 0
}

// WaitOK waits until every running master reports cluster_state:ok.
func (c *Cluster) WaitOK() {
	deadline := time.Now().Add(20 * time.Second)
	for _, node := range c.Masters {
		if node.cmd == nil {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: node.Addr(), MaxRetries: -1})
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				node.t.Fatalf("redistest: cluster node %s never reached cluster_state:ok: %v %q", node.Addr(), err, firstLine(info))
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cl.Close()
	}
}

// Start runs the node's redis-server (again, after Kill: from the
// nodes.conf in its folder, so it takes back its slots) and waits until it
// answers PING.
func (n *ClusterNode) Start() {
	n.t.Helper()
	if n.cmd != nil {
		n.t.Fatal("redistest: cluster node already running")
	}
	p := strconv.Itoa(n.Port)
	cmd := exec.Command("redis-server", "--port", p, "--bind", "127.0.0.1", "--dir", n.dir, //nolint:gosec // a fixed binary; the port is ours
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+p+".conf",
		"--cluster-node-timeout", "2000",
		"--cluster-require-full-coverage", "no", "--cluster-allow-reads-when-down", "yes",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always")
	logFile, err := os.OpenFile(filepath.Join(n.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("redistest: starting redis-server: %v", err)
	}
	n.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(n.dir, "redis.log"))
			n.t.Fatalf("redistest: cluster node on port %d never answered: %v\n%s", n.Port, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill SIGKILLs the node's process (by its PID) and waits for it; a no-op
// when it is not running.
func (n *ClusterNode) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	_ = n.cmd.Wait()
	n.cmd = nil
}

// RestartEmpty kills the node and starts it again without its data (its
// AOF and any RDB are removed; its nodes.conf is kept, so it takes back its
// slots, empty): a master restarted without persistence, or on a new disk.
func (n *ClusterNode) RestartEmpty() {
	n.t.Helper()
	n.Kill()
	entries, err := os.ReadDir(n.dir)
	if err != nil {
		n.t.Fatal(err)
	}
	for _, e := range entries {
		if name := e.Name(); !strings.HasPrefix(name, "nodes-") && name != "redis.log" {
			if err := os.RemoveAll(filepath.Join(n.dir, name)); err != nil {
				n.t.Fatal(err)
			}
		}
	}
	n.Start()
}

// MasterOf returns the master of the slot of key.
func (c *Cluster) MasterOf(t testing.TB, key string) *ClusterNode {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	m, err := cc.MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatalf("redistest: finding the master of %q: %v", key, err)
	}
	for _, n := range c.Masters {
		if n.Addr() == m.Options().Addr {
			return n
		}
	}
	t.Fatalf("redistest: the master of %q is %s, not one of %v", key, m.Options().Addr, c.Addrs())
	return nil
}
