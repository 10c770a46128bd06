package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
)

// useRedis selects the Redis store at url with prefix, and fast limits.
func useRedis(url, prefix string) func(*config.Config) {
	return func(cfg *config.Config) {
		fastLimits(cfg)
		cfg.History.Store = "redis"
		cfg.Redis.URL = url
		cfg.Redis.KeyPrefix = prefix
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// apiHistory returns the bodies in GET /api/rooms/lobby/history.
func apiHistory(t *testing.T, s *testServer) []string {
	t.Helper()
	code, body := httpGet(t, s.URL+"/api/rooms/lobby/history")
	if code != 200 {
		t.Fatalf("history API: %d %s", code, body)
	}
	var envs []struct{ Body string }
	if err := json.Unmarshal([]byte(body), &envs); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = e.Body
	}
	return out
}

func bodies(from, to int) string {
	var b []string
	for i := from; i < to; i++ {
		b = append(b, fmt.Sprint("m", i))
	}
	return strings.Join(b, ",")
}

// TestRedisHistorySurvivesRestart: messages sent to one server are in the
// history frame, the API and the page of a new server on the same prefix.
func TestRedisHistorySurvivesRestart(t *testing.T) {
	prefix := redistest.Prefix(t)
	s1 := startServer(t, useRedis(redistest.SharedURL, prefix))
	a := s1.dialNamed(t, "", b64("alice"))
	a.expect("history")
	a.expect("online")
	var sent [][]byte
	for i := 0; i < 5; i++ {
		a.send(map[string]any{"body": fmt.Sprint("m", i)})
		sent = append(sent, a.expect("message").raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	s2 := startServer(t, useRedis(redistest.SharedURL, prefix))
	b := s2.dial(t, "", nil)
	h := b.expect("history")
	var raw struct{ Messages []json.RawMessage }
	if err := json.Unmarshal(h.raw, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Messages) != len(sent) {
		t.Fatalf("history frame after restart has %d messages, want %d: %s", len(raw.Messages), len(sent), h.raw)
	}
	for i := range sent {
		if string(raw.Messages[i]) != string(sent[i]) {
			t.Fatalf("history[%d] = %s, want the broadcast bytes %s", i, raw.Messages[i], sent[i])
		}
	}
	if got := strings.Join(apiHistory(t, s2), ","); got != bodies(0, 5) {
		t.Fatalf("API history after restart: %s", got)
	}
	if code, page := httpGet(t, s2.URL+"/"); code != 200 || !strings.Contains(page, "m4") {
		t.Fatalf("page after restart: %d, m4 missing", code)
	}
}

// TestRedisOutageLiveChatGoesOn kills Redis while two members chat: they
// keep chatting, /readyz says the store is down, and once Redis is back
// every message sent during the outage is in history, in order.
func TestRedisOutageLiveChatGoesOn(t *testing.T) {
	rs := redistest.StartServer(t)
	s := startServer(t, useRedis(rs.URL(), "t:"))
	a := s.dial(t, "", nil)
	a.expect("history")
	a.expect("online")
	b := s.dial(t, "", nil)
	b.expect("history")
	b.next("online")
	a.next("online")
	a.send(map[string]any{"body": "m0"})
	b.next("message")
	// The API shows queued entries too; wait until m0 is in Redis.
	testutil.Eventually(t, 15*time.Second, "m0 written", func() bool {
		_, metrics := httpGet(t, s.URL+"/metrics")
		return strings.Contains(metrics, "chatserver_history_queue_depth 0")
	})

	rs.Kill()
	for i := 1; i < 30; i++ {
		a.send(map[string]any{"body": fmt.Sprint("m", i)})
		if m := b.next("message"); m.Body != fmt.Sprint("m", i) {
			t.Fatalf("live delivery during outage: got %q, want m%d", m.Body, i)
		}
	}
	if code, body := httpGet(t, s.URL+"/readyz"); code != 503 || !strings.Contains(body, `"store":"redis`) {
		t.Fatalf("readyz during outage: %d %s", code, body)
	}
	if code, _ := httpGet(t, s.URL+"/api/rooms/lobby/history"); code != 503 {
		t.Fatalf("history API during outage: %d, want 503", code)
	}
	_, metrics := httpGet(t, s.URL+"/metrics")
	if !strings.Contains(metrics, "chatserver_history_queue_depth 29") {
		t.Fatalf("queue depth not 29 during outage:\n%s", grepLines(metrics, "chatserver_history"))
	}

	rs.Start() // same port, empty (no persistence)
	testutil.Eventually(t, 15*time.Second, "readyz 200", func() bool { code, _ := httpGet(t, s.URL+"/readyz"); return code == 200 })
	testutil.Eventually(t, 15*time.Second, "the outage's messages in history", func() bool {
		return strings.Join(apiHistory(t, s), ",") == bodies(1, 30)
	})
	// The API shows queued entries too: the writer may still be in its retry
	// backoff (up to 5 s) when they appear there.
	testutil.Eventually(t, 15*time.Second, "the queue written to Redis", func() bool {
		_, metrics := httpGet(t, s.URL+"/metrics")
		return strings.Contains(metrics, "chatserver_history_queue_depth 0")
	})
	if got := redisHistoryLen(t, rs.URL(), "t:", "lobby"); got != 29 {
		t.Fatalf("Redis holds %d entries after the outage, want 29", got)
	}
	_, metrics = httpGet(t, s.URL+"/metrics")
	if !strings.Contains(metrics, "chatserver_history_dropped_total 0") {
		t.Errorf("metrics lack dropped 0:\n%s", grepLines(metrics, "chatserver_history"))
	}
}

// TestStartWithRedisUnreachable: the server starts, serves live chat and
// says it is not ready; when Redis appears it becomes ready and the history
// written meanwhile is there.
func TestStartWithRedisUnreachable(t *testing.T) {
	rs := redistest.NewServer(t) // a port with nothing on it yet
	s := startServer(t, useRedis(rs.URL(), "t:"))
	code, body := httpGet(t, s.URL+"/readyz")
	if code != 503 || !strings.Contains(body, `"store":"redis history store`) {
		t.Fatalf("readyz with Redis unreachable: %d %s", code, body)
	}
	a := s.dial(t, "", nil)
	if h := a.expect("history"); len(h.Messages) != 0 {
		t.Fatalf("history frame: %s", h.raw)
	}
	a.expect("online")
	a.send(map[string]any{"body": "m0"})
	if m := a.expect("message"); m.Body != "m0" {
		t.Fatalf("live chat: %s", m.raw)
	}
	rs.Start()
	testutil.Eventually(t, 15*time.Second, "readyz 200", func() bool { code, _ := httpGet(t, s.URL+"/readyz"); return code == 200 })
	testutil.Eventually(t, 15*time.Second, "m0 in history", func() bool { return strings.Join(apiHistory(t, s), ",") == "m0" })
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// redisHistoryLen reads the length of room's history LIST straight from Redis.
func redisHistoryLen(t *testing.T, url, prefix, room string) int64 {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	n, err := rdb.LLen(context.Background(), prefix+"history:"+room).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
