package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/broker"
)

// BenchmarkRedisFanOut is the cluster message path without WebSockets: three
// Redis brokers (three nodes, in one process, each with its own connection
// pool and subscription) subscribed to the same 8 rooms; messages are
// published from all three in parallel (one Lua script each: RPUSH + LTRIM +
// PUBLISH) by `publishers` goroutines in all, each waiting for its publish
// before the next (as a member's pipeline does), and the timer stops when
// every node has delivered every message. Batched (the default) and
// unbatched (NoPublishBatch: one round trip per publish, the code before
// batching). msgs/s counts publishes; deliveries/s counts node deliveries
// (3 per message); cpu-µs/msg is this process's CPU time (the three nodes,
// not redis-server) per message.
func BenchmarkRedisFanOut(b *testing.B) {
	for _, batched := range []bool{true, false} {
		for _, publishers := range []int{8, 256} {
			b.Run(fmt.Sprintf("batched=%v/publishers=%d", batched, publishers), func(b *testing.B) {
				benchmarkRedisFanOut(b, !batched, publishers)
			})
		}
	}
}

func benchmarkRedisFanOut(b *testing.B, unbatched bool, publishers int) {
	prefix := redistest.Prefix(b)
	frame := []byte(`{"id":"0192f0c4-7a3e-7b6c-9d1e-2f3a4b5c6d7e","type":"message","room":"lobby","client_id":7,"username":"alice","body":"hello, this is a fairly ordinary chat message","html":"<div class=\"message\" id=\"m0192f0c4\"><b>alice</b>: hello, this is a fairly ordinary chat message</div>","datetime":"2026-11-25 21:04:05","ts":1764104645123}`)
	const nodes, rooms = 3, 8
	var delivered atomic.Int64
	bs := make([]*broker.Redis, nodes)
	for i := range bs {
		opt, err := redis.ParseURL(redistest.SharedURL)
		if err != nil {
			b.Fatal(err)
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		bs[i] = broker.NewRedis(broker.RedisOptions{Client: rdb, KeyPrefix: prefix, HistorySize: 100,
			Log:            slog.New(slog.DiscardHandler),
			NoPublishBatch: unbatched,
			Deliver:        func(string, string, []byte, bool) { delivered.Add(1) }})
		defer bs[i].Close()
		for r := range rooms {
			_ = bs[i].Subscribe(context.Background(), fmt.Sprint("room", r))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := bs[i].WaitSubscribed(ctx, fmt.Sprint("room", r)); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(max(1, publishers/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			// Distinct ids: the brokers deduplicate by id.
			id := fmt.Sprintf("%036d", n)
			f := append([]byte(`{"id":"`+id), frame[len(`{"id":"0192f0c4-7a3e-7b6c-9d1e-2f3a4b5c6d7e`):]...)
			if err := bs[n%nodes].Publish(context.Background(), fmt.Sprint("room", n%rooms), id, f, true); err != nil {
				b.Error(err)
				return
			}
		}
	})
	want := int64(b.N) * nodes
	awaitDelivered(b, &delivered, want)
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
}

// processCPU is the CPU time this process used so far (user + system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// awaitDelivered waits until delivered reaches want, and fails after a minute.
func awaitDelivered(b *testing.B, delivered *atomic.Int64, want int64) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", delivered.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
