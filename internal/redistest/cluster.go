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
	// Masters are the nodes started as masters (one may since have become
	// a replica: see Failover, MasterOf).
	Masters []*ClusterNode
	// Replicas are the nodes started as replicas (StartClusterReplicas).
	Replicas []*ClusterNode
	// NodeTimeout is cluster-node-timeout, in ms: how long a master may be
	// unreachable before it is failed over.
	NodeTimeout int
}

// ClusterNode is one master of a private Cluster.
type ClusterNode struct {
	t       testing.TB
	Port    int
	dir     string
	cmd     *exec.Cmd
	timeout int // cluster-node-timeout, ms
}

// Addr is the node's host:port.
func (n *ClusterNode) Addr() string { return "127.0.0.1:" + strconv.Itoa(n.Port) }

// Addrs are the addresses of the nodes started as masters.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, n := range c.Masters {
		out[i] = n.Addr()
	}
	return out
}

// Nodes are every node, masters first.
func (c *Cluster) Nodes() []*ClusterNode {
	return append(append([]*ClusterNode(nil), c.Masters...), c.Replicas...)
}

// StartCluster starts a private Redis Cluster of n masters, at least 3 (redis-cli
// --cluster create) and waits for cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartClusterReplicas(t, n, 0, 2000)
}

// StartClusterReplicas starts a private Redis Cluster of n masters, at least
// 3, each with replicas replicas, run with cluster-node-timeout nodeTimeout
// (ms): a master unreachable for that long is failed over to a replica. It
// waits for cluster_state:ok and, with replicas, for every replica to be in
// sync with its master.
func StartClusterReplicas(t testing.TB, n, replicas, nodeTimeout int) *Cluster {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			unavailable(t, "%s is not installed: %v", bin, err)
		}
	}
	c := &Cluster{NodeTimeout: nodeTimeout}
	for i := range n * (1 + replicas) {
		node := &ClusterNode{t: t, Port: clusterPort(t), dir: t.TempDir(), timeout: nodeTimeout}
		t.Cleanup(node.Kill)
		node.Start()
		if i < n {
			c.Masters = append(c.Masters, node)
		} else {
			c.Replicas = append(c.Replicas, node)
		}
	}
	// redis-cli makes the first n addresses masters.
	args := []string{"--cluster", "create"}
	for _, node := range c.Nodes() {
		args = append(args, node.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput() //nolint:gosec // a fixed binary; the addresses are ours
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK()
	for _, r := range c.Replicas {
		r.waitInfo("replication", "master_link_status:up")
	}
	return c
}

// waitInfo waits until the node's INFO section holds want.
func (n *ClusterNode) waitInfo(section, want string) {
	n.t.Helper()
	cl := n.Client()
	defer cl.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := cl.Info(context.Background(), section).Result()
		if err == nil && strings.Contains(info, want) {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("redistest: cluster node %s: INFO %s never held %q: %v", n.Addr(), section, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client is a plain client of this one node (no retries); the caller closes it.
func (n *ClusterNode) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
}

// ID is the node's cluster node id.
func (n *ClusterNode) ID() string {
	n.t.Helper()
	cl := n.Client()
	defer cl.Close()
	id, err := cl.Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		n.t.Fatalf("redistest: CLUSTER MYID of %s: %v", n.Addr(), err)
	}
	return id
}

// MoveSlot moves slot, with its keys, from its master to the master to, as
// resharding does (CLUSTER SETSLOT IMPORTING and MIGRATING, MIGRATE, then
// SETSLOT NODE on every master), and waits until every node agrees.
func (c *Cluster) MoveSlot(t testing.TB, slot int, to *ClusterNode) {
	t.Helper()
	ctx := context.Background()
	from := c.masterOfSlot(t, slot)
	if from == to {
		t.Fatalf("redistest: slot %d is on %s already", slot, to.Addr())
	}
	fromID, toID := from.ID(), to.ID()
	src, dst := from.Client(), to.Client()
	defer src.Close()
	defer dst.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("redistest: moving slot %d from %s to %s: %v", slot, from.Addr(), to.Addr(), err)
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(src.Do(ctx, args...).Err())
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	for _, m := range c.Masters {
		if m != from && m != to && m.cmd != nil {
			cl := m.Client()
			must(cl.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
			_ = cl.Close()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range c.Nodes() {
		if n.cmd == nil {
			continue
		}
		for c.slotOwnerSeenBy(n, slot) != to.Addr() {
			if time.Now().After(deadline) {
				t.Fatalf("redistest: %s never saw slot %d on %s", n.Addr(), slot, to.Addr())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Failover makes replica the master of its shard with CLUSTER FAILOVER (a
// manual failover: the master hands over once the replica caught up) and
// waits until it is.
func (c *Cluster) Failover(t testing.TB, replica *ClusterNode) {
	t.Helper()
	cl := replica.Client()
	defer cl.Close()
	if err := cl.Do(context.Background(), "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("redistest: CLUSTER FAILOVER on %s: %v", replica.Addr(), err)
	}
	replica.waitInfo("replication", "role:master")
	c.WaitOK()
	// Until every node's slot map agrees (gossip), MasterOf may name the
	// old master.
	deadline := time.Now().Add(10 * time.Second)
	for {
		slot, agreed := c.aSlotOf(replica), true
		for _, n := range c.Nodes() {
			if n.cmd != nil && (slot < 0 || c.slotOwnerSeenBy(n, slot) != replica.Addr()) {
				agreed = false
			}
		}
		if agreed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: the nodes never agreed that %s is a master", replica.Addr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// aSlotOf is a slot that n owns as it sees itself, or -1.
func (c *Cluster) aSlotOf(n *ClusterNode) int {
	for _, sh := range shardsSeenBy(n) {
		for _, node := range sh.Nodes {
			if node.Role == "master" && node.Port == int64(n.Port) && len(sh.Slots) > 0 {
				return int(sh.Slots[0].Start)
			}
		}
	}
	return -1
}

// shardsSeenBy is n's CLUSTER SHARDS, or nil.
func shardsSeenBy(n *ClusterNode) []redis.ClusterShard {
	cl := n.Client()
	defer cl.Close()
	shards, err := cl.ClusterShards(context.Background()).Result()
	if err != nil {
		return nil
	}
	return shards
}

// ReplicaOf returns a replica of master (started as a replica or not).
func (c *Cluster) ReplicaOf(t testing.TB, master *ClusterNode) *ClusterNode {
	t.Helper()
	for _, n := range c.Nodes() {
		if n == master || n.cmd == nil {
			continue
		}
		cl := n.Client()
		info, err := cl.Info(context.Background(), "replication").Result()
		_ = cl.Close()
		if err == nil && strings.Contains(info, "role:slave") &&
			strings.Contains(info, "master_port:"+strconv.Itoa(master.Port)+"\r") {
			return n
		}
	}
	t.Fatalf("redistest: %s has no replica", master.Addr())
	return nil
}

// slotOwnerSeenBy is the address of slot's master in n's CLUSTER SHARDS.
func (c *Cluster) slotOwnerSeenBy(n *ClusterNode, slot int) string {
	for _, sh := range shardsSeenBy(n) {
		for _, r := range sh.Slots {
			if r.Start <= int64(slot) && int64(slot) <= r.End {
				// A master that failed may still be listed beside its
				// replica promoted: the online one.
				owner := ""
				for _, node := range sh.Nodes {
					if node.Role == "master" && (owner == "" || node.Health == "online") {
						owner = node.IP + ":" + strconv.FormatInt(node.Port, 10)
					}
				}
				return owner
			}
		}
	}
	return ""
}

// masterOfSlot is slot's master, as the first running node sees it.
func (c *Cluster) masterOfSlot(t testing.TB, slot int) *ClusterNode {
	t.Helper()
	for _, n := range c.Nodes() {
		if n.cmd == nil {
			continue
		}
		addr := c.slotOwnerSeenBy(n, slot)
		for _, m := range c.Nodes() {
			if m.Addr() == addr {
				return m
			}
		}
	}
	t.Fatalf("redistest: no node knows the master of slot %d", slot)
	return nil
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
	for _, node := range c.Nodes() {
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
		"--cluster-node-timeout", strconv.Itoa(n.timeout),
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

// MasterOf returns the master of the slot of key, as the running nodes see it now.
func (c *Cluster) MasterOf(t testing.TB, key string) *ClusterNode {
	t.Helper()
	return c.masterOfSlot(t, int(Slot(key)))
}

// Slot is the cluster slot of key (CRC16 of its hash tag, mod 16384).
func Slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}
