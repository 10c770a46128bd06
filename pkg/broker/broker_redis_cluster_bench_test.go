package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/broker"
)

// BenchmarkRedisClusterIngress is the cluster publish path without
// WebSockets: nodes RedisCluster brokers (in one process, each with a
// cluster client of its own, as separate nodes have) on a private Redis
// Cluster of three masters (redis-server processes of the benchmark's own,
// so that their CPU is theirs), every node subscribed to every one of 2,000
// rooms (a room of five members spread over three nodes has members on each,
// as in `chatserver bench rooms`), the rooms spread over 64 partitions (the
// default) or 16 (redis.cluster_partitions: fewer partitions, bigger
// batches). Each room has a publisher of its own, on node room mod nodes,
// publishing as fast as its publishes are acknowledged (as a member waits
// for its ack), so up to 2,000 publishes are waiting at once; the timer
// stops when every node has delivered every message.
//
// batch=0 is one EVALSHA round trip per publish (broker.publish_batch: 0,
// the code before batching); batch=256 is the default. msgs/s counts
// publishes, deliveries/s node deliveries (nodes per message); cpu-µs/msg is
// this process's CPU (the nodes') per message and redis-µs/msg the three
// masters' (INFO cpu, used_cpu_user + used_cpu_sys); msgs/script is the
// messages per script the masters ran (EVALSHA and EVAL calls): 1 unbatched,
// the mean batch batched.
//
// The cluster's setup (and the rooms' subscriptions) are not timed. Run it
// with a fixed count so that each sub-benchmark runs once, e.g.
// -benchtime 200000x.
func BenchmarkRedisClusterIngress(b *testing.B) {
	cl := redistest.StartCluster(b, 3)
	for _, partitions := range []int{64, 16} {
		for _, batch := range []int{0, 256} {
			b.Run(fmt.Sprintf("partitions=%d/batch=%d", partitions, batch), func(b *testing.B) {
				benchmarkClusterIngress(b, cl, partitions, batch, 3, 2000)
			})
		}
	}
}

func benchmarkClusterIngress(b *testing.B, cl *redistest.Cluster, partitions, batch, nodes, rooms int) {
	prefix := fmt.Sprintf("bench:%d:", time.Now().UnixNano())
	frame := []byte(`{"id":"0192f0c4-7a3e-7b6c-9d1e-2f3a4b5c6d7e","type":"message","room":"lobby","client_id":7,"username":"alice","body":"hello, this is a fairly ordinary chat message","html":"<div class=\"message\" id=\"m0192f0c4\"><b>alice</b>: hello, this is a fairly ordinary chat message</div>","datetime":"2026-11-25 21:04:05","ts":1764104645123}`)
	idLen := len(`0192f0c4-7a3e-7b6c-9d1e-2f3a4b5c6d7e`)
	var delivered atomic.Int64
	bs := make([]*broker.RedisCluster, nodes)
	for i := range bs {
		// pkg/server's cluster client options (newRedisClusterClient).
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(),
			DialTimeout: 3 * time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second,
			MaxRetries: -1, MaxRedirects: -1, DialerRetries: 1, ClusterStateReloadInterval: 2 * time.Second})
		defer rdb.Close()
		bs[i] = broker.NewRedisCluster(broker.RedisOptions{Client: rdb, KeyPrefix: prefix, HistorySize: 100, Partitions: partitions,
			Log:            slog.New(slog.DiscardHandler),
			PublishBatch:   batch,
			NoPublishBatch: batch == 0,
			Deliver:        func(string, string, []byte, bool) { delivered.Add(1) }})
		defer bs[i].Close()
	}
	names := make([]string, rooms)
	for r := range names {
		names[r] = "room-" + strconv.Itoa(r)
		for _, n := range bs {
			_ = n.Subscribe(context.Background(), names[r])
		}
	}
	for _, room := range names {
		for _, n := range bs {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := n.WaitSubscribed(ctx, room)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	redis0, calls0 := clusterStats(b, cl)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	var (
		left atomic.Int64
		wg   sync.WaitGroup
	)
	left.Store(int64(b.N))
	for r, room := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := bs[r%nodes]
			for seq := 0; left.Add(-1) >= 0; seq++ {
				// Distinct ids: the brokers deduplicate by id.
				id := fmt.Sprintf("%0*d", idLen, r*10_000_000+seq)
				f := append([]byte(`{"id":"`+id), frame[len(`{"id":"`)+idLen:]...)
				if err := n.Publish(context.Background(), room, id, f, true); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := int64(b.N) * int64(nodes)
	awaitDelivered(b, &delivered, want)
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	redis1, calls1 := clusterStats(b, cl)
	redisCPU, calls := redis1-redis0, calls1-calls0
	b.StopTimer()
	for _, n := range bs {
		if h := n.Held(); h > 0 {
			b.Errorf("%d frames held: a publish fell back to the outbox", h)
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(float64(redisCPU.Microseconds())/float64(b.N), "redis-µs/msg")
	b.ReportMetric(float64(b.N)/float64(max(calls, 1)), "msgs/script")
	// A private cluster: the next run starts from empty masters.
	for _, m := range cl.Masters {
		c := m.Client()
		_ = c.FlushAll(context.Background()).Err()
		_ = c.Close()
	}
}

// clusterStats returns the CPU time the cluster's masters used so far
// (INFO cpu) and the scripts they ran (EVALSHA and EVAL calls, INFO
// commandstats).
func clusterStats(b *testing.B, cl *redistest.Cluster) (time.Duration, int64) {
	b.Helper()
	var cpu time.Duration
	var calls int64
	for _, m := range cl.Masters {
		c := m.Client()
		info, err := c.Info(context.Background(), "cpu", "commandstats").Result()
		_ = c.Close()
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range strings.Split(info, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
			switch {
			case !ok:
			case k == "used_cpu_user" || k == "used_cpu_sys":
				s, _ := strconv.ParseFloat(v, 64)
				cpu += time.Duration(s * float64(time.Second))
			case k == "cmdstat_evalsha" || k == "cmdstat_eval":
				n, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
				c, _ := strconv.ParseInt(n, 10, 64)
				calls += c
			}
		}
	}
	return cpu, calls
}
