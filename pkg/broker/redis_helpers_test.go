package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
)

// sharedRedis returns a client of the shared Redis and a key prefix unique
// to the test (skipped without Redis outside CI, failed in CI).
func sharedRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	prefix := redistest.Prefix(t)
	opt, err := redis.ParseURL(redistest.SharedURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, prefix
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func frameOf(id string, n int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"type":"message","room":"r","client_id":1,"username":"u","body":"%d","datetime":"","ts":%d}`,
		id, n, time.Now().UnixMilli())
}

func addrOf(s *redistest.Server) string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }
