package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
)

// history dump and clear on a Redis Cluster: the room's hash-tagged key on
// its master, read and deleted through cluster_addrs given in the environment.
func TestHistoryDumpAndClearCluster(t *testing.T) {
	rdb, prefix := redistest.ClusterClient(t)
	addrs := redistest.ClusterAddrs(t)
	keys := rediskeys.Keys{Prefix: prefix, Partitions: 8}
	ctx := context.Background()
	var frames []string
	for i := range 4 {
		f := fmt.Sprintf(`{"id":"id-%d","type":"message","room":"ops","client_id":1,"username":"alice","body":"m%d","datetime":"2026-11-25 21:04:%02d","ts":%d}`, i, i, i, 1764104645000+i)
		frames = append(frames, f)
		if err := rdb.RPush(ctx, keys.History("ops"), f).Err(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, fmt.Sprintf("history:\n  store: redis\nredis:\n  key_prefix: %q\n  cluster_partitions: 8\n", prefix))
	t.Setenv("CHATSERVER_REDIS_CLUSTER_ADDRS", strings.Join(addrs, ","))

	code, out, errOut := runCLI(t, "history", "dump", "--config", cfg, "--room", "ops")
	if want := strings.Join(frames, "\n") + "\n"; code != 0 || out != want {
		t.Fatalf("dump: exit %d, stderr %q\nstdout:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	code, _, errOut = runCLI(t, "history", "clear", "--config", cfg, "--room", "ops")
	if code != 0 {
		t.Fatalf("clear: exit %d, %q", code, errOut)
	}
	if n := rdb.Exists(ctx, keys.History("ops")).Val(); n != 0 {
		t.Fatalf("the room's key %s survived clear", keys.History("ops"))
	}
}
