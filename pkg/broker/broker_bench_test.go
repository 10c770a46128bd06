package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/history"
)

// BenchmarkPublish publishes kept messages through the local broker into each
// history store (deliver is a no-op: this measures the message path's history
// cost). The Redis timings include waiting, after the loop, until every
// message is in Redis, so msgs/s is what Redis sustains, not just what the
// queue absorbs. redis-batch1 writes one message per round trip, for
// comparison with the batched writer.
func BenchmarkPublish(b *testing.B) {
	frame := []byte(`{"id":"0192f0c4-7a3e-7b6c-9d1e-2f3a4b5c6d7e","type":"message","room":"lobby","client_id":7,"username":"alice","body":"hello, this is a fairly ordinary chat message","html":"<div class=\"message\" id=\"m0192f0c4\"><b>alice</b>: hello, this is a fairly ordinary chat message</div>","datetime":"2026-11-25 21:04:05","ts":1764104645123}`)
	stores := []struct {
		name string
		open func(b *testing.B) (history.Store, func() error)
	}{
		{"memory", func(*testing.B) (history.Store, func() error) {
			return history.NewMemory(100), func() error { return nil }
		}},
		{"redis", func(b *testing.B) (history.Store, func() error) { return openRedis(b, 0) }},
		{"redis-batch1", func(b *testing.B) (history.Store, func() error) { return openRedis(b, 1) }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			store, flush := st.open(b)
			defer store.Close()
			l := broker.NewLocal(store, func(string, string, []byte, bool) {}, slog.New(slog.DiscardHandler))
			var room atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := fmt.Sprint("room", room.Add(1)%8)
				ctx := context.Background()
				for pb.Next() {
					_ = l.Publish(ctx, r, "id", frame, true)
				}
			})
			if err := flush(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// openRedis opens a Redis store on the shared Redis; batch 0 is the default.
// It fails the benchmark if any message was dropped.
func openRedis(b *testing.B, batch int) (history.Store, func() error) {
	var dropped atomic.Int64
	s, err := history.NewRedis(history.RedisOptions{
		URL: redistest.SharedURL, KeyPrefix: redistest.Prefix(b), BatchSize: batch,
		// Room for every message of the run: the loop enqueues faster than
		// Redis drains, and the timing includes the drain (Flush).
		QueueSize: max(1<<20, b.N+1), Logger: slog.New(slog.DiscardHandler),
		OnDropped: func(n int) { dropped.Add(int64(n)) },
	})
	if err != nil {
		b.Fatal(err)
	}
	return s, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Flush(ctx); err != nil {
			return err
		}
		if n := dropped.Load(); n > 0 {
			return fmt.Errorf("%d messages dropped", n)
		}
		return nil
	}
}
