package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/redistest"
)

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
