package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
)

// A node whose redis.cluster_partitions differs from the one the cluster's
// data was written with refuses to start, as a config error (exit 2), and
// names the key and both numbers; the cluster's number is left alone.
func TestServeRefusesOtherClusterPartitions(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer rdb.Close()
	const prefix = "t:"
	key := rediskeys.Keys{Prefix: prefix, Partitions: 8}.ClusterPartitions()
	if err := rdb.Set(t.Context(), key, "8", 0).Err(); err != nil { // a first node with 8
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("server:\n  addr: 127.0.0.1:0\nhistory:\n  store: redis\nbroker:\n  type: redis\nredis:\n  key_prefix: %q\n  cluster_partitions: 16\n", prefix))
	t.Setenv("CHATSERVER_REDIS_CLUSTER_ADDRS", strings.Join(cl.Addrs(), ","))
	code, _, stderr := runCLI(t, "serve", "--config", cfg)
	if code != ExitUsage {
		t.Fatalf("exit code %d, want %d; stderr: %s", code, ExitUsage, stderr)
	}
	for _, want := range []string{"redis.cluster_partitions", "16", "written with 8", key} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr %q does not say %q", stderr, want)
		}
	}
	if got := rdb.Get(t.Context(), key).Val(); got != "8" {
		t.Fatalf("%s = %q after the refused start, want 8", key, got)
	}
}
