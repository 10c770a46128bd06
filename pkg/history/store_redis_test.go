package history_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/history"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quietRedis{})
	code := m.Run()
	if code == 0 {
		// After repeated dial errors go-redis's pool redials in a goroutine
		// that sleeps 1s between tries and ends at its next wake once the
		// client is closed: the tests against an unreachable Redis leave one
		// for up to a second. Wait that long before calling it a leak.
		var err error
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err = goleak.Find(); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// frame is an envelope as the server would store it.
func frame(room string, i int) (id string, b []byte) {
	id = fmt.Sprintf("id-%03d", i)
	return id, fmt.Appendf(nil, `{"id":%q,"type":"message","room":%q,"body":"m%d"}`, id, room, i)
}

// openRedis opens a store on url with prefix; it is closed when the test ends.
func openRedis(t *testing.T, url, prefix string, mod func(*history.RedisOptions)) *history.Redis {
	t.Helper()
	opts := history.RedisOptions{URL: url, KeyPrefix: prefix, Size: 100,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	s, err := history.NewRedis(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func appendN(t *testing.T, s history.Store, room string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		id, b := frame(room, i)
		if err := s.Append(context.Background(), room, id, b); err != nil {
			t.Fatal(err)
		}
	}
}

// wantRange checks entries are frames from..to-1 of room, in order.
func wantRange(t *testing.T, got []history.Entry, room string, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("got %d entries, want %d (%d..%d)", len(got), to-from, from, to-1)
	}
	for i, e := range got {
		id, b := frame(room, from+i)
		if e.ID != id || !bytes.Equal(e.Frame, b) {
			t.Fatalf("entry %d = %s %s, want %s %s", i, e.ID, e.Frame, id, b)
		}
	}
}

func flush(t *testing.T, s *history.Redis) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRedisKeepsNewestInOrder(t *testing.T) {
	tests := []struct {
		name                 string
		sent, limit          int
		wantFrom, wantToExcl int
	}{
		{"under size", 10, 0, 0, 10},
		{"150 sent keeps last 100", 150, 0, 50, 150},
		{"limit below kept", 150, 20, 130, 150},
		{"limit above kept", 5, 50, 0, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := redistest.Prefix(t)
			s := openRedis(t, redistest.SharedURL, prefix, nil)
			appendN(t, s, "lobby", 0, tt.sent)
			// Before and after the writer caught up, readers see the same.
			for _, when := range []string{"queued", "written"} {
				if when == "written" {
					flush(t, s)
				}
				got, err := s.Recent(ctx, "lobby", tt.limit)
				if err != nil {
					t.Fatal(err)
				}
				wantRange(t, got, "lobby", tt.wantFrom, tt.wantToExcl)
			}
		})
	}
}

// TestRedisSeedLayout checks the on-Redis format: a LIST of the raw
// envelopes under PREFIX+"history:"+room, trimmed to size.
func TestRedisSeedLayout(t *testing.T) {
	ctx := context.Background()
	prefix := redistest.Prefix(t)
	s := openRedis(t, redistest.SharedURL, prefix, func(o *history.RedisOptions) { o.Size = 3 })
	appendN(t, s, "r1", 0, 5)
	appendN(t, s, "r2", 0, 1)
	flush(t, s)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer c.Close()
	got, err := c.LRange(ctx, prefix+"history:r1", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 2; i < 5; i++ {
		_, b := frame("r1", i)
		want = append(want, string(b))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("LRANGE = %q, want %q", got, want)
	}
	if n, _ := c.LLen(ctx, prefix+"history:r2").Result(); n != 1 {
		t.Fatalf("r2 has %d entries, want 1", n)
	}
}

func TestRedisClear(t *testing.T) {
	ctx := context.Background()
	prefix := redistest.Prefix(t)
	s := openRedis(t, redistest.SharedURL, prefix, nil)
	appendN(t, s, "a", 0, 10)
	appendN(t, s, "b", 0, 10)
	flush(t, s)
	appendN(t, s, "a", 10, 20) // some possibly still queued
	if err := s.Clear(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	flush(t, s)
	if got, _ := s.Recent(ctx, "a", 0); len(got) != 0 {
		t.Fatalf("a after Clear has %d entries", len(got))
	}
	got, err := s.Recent(ctx, "b", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantRange(t, got, "b", 0, 10)
}

func TestRedisSurvivesRestartOfTheStore(t *testing.T) {
	ctx := context.Background()
	prefix := redistest.Prefix(t)
	s := openRedis(t, redistest.SharedURL, prefix, nil)
	appendN(t, s, "lobby", 0, 42)
	if err := s.Close(); err != nil { // Close flushes
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := s.Append(ctx, "lobby", "x", []byte("{}")); err == nil {
		t.Fatal("Append after Close succeeded")
	}
	s2 := openRedis(t, redistest.SharedURL, prefix, nil)
	got, err := s2.Recent(ctx, "lobby", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantRange(t, got, "lobby", 0, 42)
}

func TestRedisConcurrentRoomsKeepOrder(t *testing.T) {
	ctx := context.Background()
	prefix := redistest.Prefix(t)
	s := openRedis(t, redistest.SharedURL, prefix, func(o *history.RedisOptions) { o.Size = 1000; o.BatchSize = 7 })
	var wg sync.WaitGroup
	for r := 0; r < 8; r++ {
		wg.Go(func() { appendN(t, s, fmt.Sprint("room", r), 0, 500) })
	}
	wg.Wait()
	flush(t, s)
	for r := 0; r < 8; r++ {
		got, err := s.Recent(ctx, fmt.Sprint("room", r), 0)
		if err != nil {
			t.Fatal(err)
		}
		wantRange(t, got, fmt.Sprint("room", r), 0, 500)
	}
}

func TestRedisBadURL(t *testing.T) {
	for _, url := range []string{"redis://127.0.0.1:6379/notadb", "http://x", "redis://[::1"} {
		if _, err := history.NewRedis(history.RedisOptions{URL: url}); err == nil {
			t.Errorf("NewRedis(%q) succeeded", url)
		}
	}
}

// TestRedisSharedClient checks a store given a Client uses it and leaves it
// open at Close: the server closes its one client after every user stopped.
func TestRedisSharedClient(t *testing.T) {
	ctx := context.Background()
	prefix := redistest.Prefix(t)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", MaxRetries: -1})
	defer c.Close()
	s := openRedis(t, "", prefix, func(o *history.RedisOptions) { o.Client = c })
	appendN(t, s, "r", 0, 2)
	flush(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n, err := c.LLen(ctx, prefix+"history:r").Result()
	if err != nil {
		t.Fatalf("the shared client after the store's Close: %v", err)
	}
	if n != 2 {
		t.Fatalf("LLEN = %d, want 2", n)
	}
}

// TestRedisFlush: Flush returns once what was appended is in Redis, and
// gives up when its context ends while Redis is away.
func TestRedisFlush(t *testing.T) {
	t.Run("returns once written", func(t *testing.T) {
		prefix := redistest.Prefix(t)
		s := openRedis(t, redistest.SharedURL, prefix, nil)
		appendN(t, s, "r", 0, 50)
		flush(t, s)
		c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
		defer c.Close()
		if n, err := c.LLen(context.Background(), prefix+"history:r").Result(); err != nil || n != 50 {
			t.Fatalf("LLEN after Flush = %d, %v; want 50", n, err)
		}
	})
	t.Run("nothing pending", func(t *testing.T) {
		s := openRedis(t, redistest.SharedURL, redistest.Prefix(t), nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // Flush must not even look at ctx
		if err := s.Flush(ctx); err != nil {
			t.Fatalf("Flush of an empty store: %v", err)
		}
	})
	t.Run("honours ctx", func(t *testing.T) {
		rs := redistest.NewServer(t) // nothing listens there
		s := openRedis(t, rs.URL(), "t:", func(o *history.RedisOptions) { o.CloseTimeout = 50 * time.Millisecond })
		appendN(t, s, "r", 0, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := s.Flush(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Flush with Redis away = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Flush returned %v after its context ended", d)
		}
	})
	t.Run("store closed with entries left", func(t *testing.T) {
		rs := redistest.NewServer(t)
		s := openRedis(t, rs.URL(), "t:", func(o *history.RedisOptions) { o.CloseTimeout = 50 * time.Millisecond })
		appendN(t, s, "r", 0, 1)
		errc := make(chan error, 1)
		go func() { errc <- s.Flush(context.Background()) }()
		_ = s.Close()
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "store closed with 1 entries") {
				t.Fatalf("Flush across Close = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Flush still waiting after Close")
		}
	})
}

// TestRedisOutage kills a private redis-server, appends while it is down,
// restarts it on the same port: every entry is written, in order.
func TestRedisOutage(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t)
	var logs testutil.SyncBuffer
	s := openRedis(t, srv.URL(), "t:", func(o *history.RedisOptions) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		o.OpTimeout = 500 * time.Millisecond
	})
	appendN(t, s, "lobby", 0, 10)
	flush(t, s)

	srv.Kill()
	appendN(t, s, "lobby", 10, 60)
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded with Redis down")
	}
	if _, err := s.Recent(ctx, "lobby", 0); err == nil {
		t.Fatal("Recent succeeded with Redis down")
	}
	testutil.Eventually(t, 10*time.Second, "a retry logged", func() bool { return strings.Contains(logs.String(), "retrying") })

	srv.Start()
	flush(t, s)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.Recent(ctx, "lobby", 0)
	if err != nil {
		t.Fatal(err)
	}
	// redis-server runs without persistence: only what was written since
	// it came back is there, and that is everything appended while down.
	wantRange(t, got, "lobby", 10, 60)
	if !strings.Contains(logs.String(), "reachable again") {
		t.Errorf("no reconnection logged:\n%s", logs.String())
	}
}

// TestRedisUnreachableAtStart: NewRedis succeeds, appends queue, the writer
// logs its retries and writes everything once Redis appears.
func TestRedisUnreachableAtStart(t *testing.T) {
	ctx := context.Background()
	srv := redistest.NewServer(t) // port reserved, not started
	var logs testutil.SyncBuffer
	s := openRedis(t, srv.URL(), "t:", func(o *history.RedisOptions) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	appendN(t, s, "lobby", 0, 5)
	testutil.Eventually(t, 10*time.Second, "a retry logged", func() bool { return strings.Contains(logs.String(), "retrying") })
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "redis") {
		t.Fatalf("Ping = %v, want an error naming redis", err)
	}
	srv.Start()
	flush(t, s)
	got, err := s.Recent(ctx, "lobby", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantRange(t, got, "lobby", 0, 5)
}

// TestRedisQueueOverflow: a tiny queue with Redis down drops the oldest
// entries, counts them and logs it; the newest are written when it returns.
func TestRedisQueueOverflow(t *testing.T) {
	ctx := context.Background()
	srv := redistest.NewServer(t)
	var logs testutil.SyncBuffer
	var dropped, depth atomic.Int64
	s := openRedis(t, srv.URL(), "t:", func(o *history.RedisOptions) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		o.QueueSize = 5
		o.BatchSize = 5
		o.OnDropped = func(n int) { dropped.Add(int64(n)) }
		o.OnQueueDepth = func(n int) { depth.Store(int64(n)) }
	})
	appendN(t, s, "lobby", 0, 20)
	if dropped.Load() == 0 {
		t.Fatal("no drops counted")
	}
	if d := depth.Load(); d < 5 || d > 10 {
		t.Fatalf("queue depth %d, want 5..10 (queue plus one batch)", d)
	}
	if !strings.Contains(logs.String(), "history queue full") {
		t.Fatalf("no drop logged:\n%s", logs.String())
	}
	srv.Start()
	flush(t, s)
	if depth.Load() != 0 {
		t.Fatalf("queue depth %d after flush", depth.Load())
	}
	got, err := s.Recent(ctx, "lobby", 0)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got))+dropped.Load() != 20 {
		t.Fatalf("kept %d + dropped %d != 20 appended", len(got), dropped.Load())
	}
	// The newest survive, in order. (The batch being written when the
	// queue overflowed may survive too: it is not dropped mid-write.)
	if last, _ := frame("lobby", 19); len(got) == 0 || got[len(got)-1].ID != last {
		t.Fatalf("newest entry missing: %v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].ID >= got[i].ID {
			t.Fatalf("out of order: %s before %s", got[i-1].ID, got[i].ID)
		}
	}
}

// TestRedisCloseGivesUp: Close with Redis down returns within CloseTimeout
// and reports what it could not write.
func TestRedisCloseGivesUp(t *testing.T) {
	srv := redistest.NewServer(t)
	var dropped atomic.Int64
	s := openRedis(t, srv.URL(), "t:", func(o *history.RedisOptions) {
		o.Logger = slog.New(slog.DiscardHandler)
		o.CloseTimeout = 300 * time.Millisecond
		o.OnDropped = func(n int) { dropped.Add(int64(n)) }
	})
	appendN(t, s, "lobby", 0, 3)
	start := time.Now()
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "3 messages not written") {
		t.Fatalf("Close = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if dropped.Load() != 3 {
		t.Fatalf("dropped %d, want 3", dropped.Load())
	}
}

// quietRedis routes go-redis's own dial logs (which the store's logs
// already cover) away from the test output.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
