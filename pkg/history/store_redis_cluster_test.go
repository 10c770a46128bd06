package history_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/rediskeys"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/history"
)

const clusterPartitions = 16

// On a Redis Cluster one batch holds rooms of many slots: each partition's
// rooms are written in a MULTI of their own, and every room reads back in
// order, trimmed, under its hash-tagged key.
func TestRedisClusterWritesEveryRoom(t *testing.T) {
	rdb, prefix := redistest.ClusterClient(t)
	st, err := history.NewRedis(history.RedisOptions{Client: rdb, KeyPrefix: prefix, Partitions: clusterPartitions, Size: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	want := map[string][]string{}
	for i := range 7 {
		for r := range 20 {
			room := fmt.Sprintf("room-%d", r)
			id, f := frame(room, i)
			want[room] = append(want[room], id)
			if err := st.Append(ctx, room, id, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := st.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	keys := rediskeys.Keys{Prefix: prefix, Partitions: clusterPartitions}
	for room, ids := range want {
		if st.Key(room) != keys.History(room) {
			t.Fatalf("key %q, want %q", st.Key(room), keys.History(room))
		}
		raw, err := rdb.LRange(ctx, st.Key(room), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) != 5 {
			t.Fatalf("%s holds %d entries, want 5", room, len(raw))
		}
		for i, r := range raw {
			if history.IDOf([]byte(r)) != ids[2+i] {
				t.Fatalf("%s: entry %d is %s, want %s", room, i, history.IDOf([]byte(r)), ids[2+i])
			}
		}
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// A master of a private cluster is down: the rooms on the other masters are
// written all the same; the dead master's rooms wait in the queue and are
// written, once and in order, when it is back.
func TestRedisClusterMasterDownWritesTheOthers(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer rdb.Close()
	st, err := history.NewRedis(history.RedisOptions{Client: rdb, KeyPrefix: "t:", Partitions: clusterPartitions,
		OpTimeout: time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	keys := rediskeys.Keys{Prefix: "t:", Partitions: clusterPartitions}
	var down, up string
	victim := cl.MasterOf(t, keys.History("room-0"))
	for r := 1; up == ""; r++ {
		if room := fmt.Sprintf("room-%d", r); cl.MasterOf(t, keys.History(room)) != victim {
			up = room
		}
	}
	down = "room-0"
	victim.Kill()
	var ids []string
	for i := range 10 {
		for _, room := range []string{down, up} {
			id, f := frame(room, i)
			if room == down {
				ids = append(ids, id)
			}
			if err := st.Append(ctx, room, id, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.Eventually(t, 10*time.Second, "the room on the live master to be written", func() bool {
		return rdb.LLen(ctx, keys.History(up)).Val() == 10
	})
	victim.Start()
	cl.WaitOK()
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := st.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.LRange(ctx, keys.History(down), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 10 {
		t.Fatalf("the restarted master's room holds %d entries, want 10", len(raw))
	}
	for i, r := range raw {
		if history.IDOf([]byte(r)) != ids[i] {
			t.Fatalf("entry %d is %s, want %s", i, history.IDOf([]byte(r)), ids[i])
		}
	}
	if n := rdb.LLen(ctx, keys.History(up)).Val(); n != 10 {
		t.Fatalf("the live master's room holds %d entries after the outage, want 10 (written once)", n)
	}
}

// A master is down and its room's backlog is more than a batch: the rooms
// on the live masters are written all the same, without waiting out the
// dead master's backoff (the default, up to 5s a round), and the backlog is
// written in order once the master is back.
func TestRedisClusterBacklogOnDeadMasterDoesNotBlockTheOthers(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer rdb.Close()
	var logs testutil.SyncBuffer
	st, err := history.NewRedis(history.RedisOptions{Client: rdb, KeyPrefix: "t:", Partitions: clusterPartitions,
		OpTimeout: time.Second, // default BatchSize (1000) and backoff (100ms..5s)
		Logger:    slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	keys := rediskeys.Keys{Prefix: "t:", Partitions: clusterPartitions}
	down := "room-0"
	victim := cl.MasterOf(t, keys.History(down))
	var up string
	for r := 1; up == ""; r++ {
		if room := fmt.Sprintf("room-%d", r); cl.MasterOf(t, keys.History(room)) != victim {
			up = room
		}
	}
	victim.Kill()
	const backlog = 1200 // more than one batch
	for i := range backlog {
		id, f := frame(down, i)
		if err := st.Append(ctx, down, id, f); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		id, f := frame(up, i)
		if err := st.Append(ctx, up, id, f); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the room on the live master to be written", func() bool {
		return rdb.LLen(ctx, keys.History(up)).Val() == 10
	})
	// Still while the master is down: a new message to the live room is
	// written too (the writer is not asleep in a global backoff).
	id, f := frame(up, 10)
	if err := st.Append(ctx, up, id, f); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a later message to the live room to be written", func() bool {
		return rdb.LLen(ctx, keys.History(up)).Val() == 11
	})
	victim.Start()
	cl.WaitOK()
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := st.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.LRange(ctx, keys.History(down), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 100 { // Size
		t.Fatalf("the restarted master's room holds %d entries, want 100", len(raw))
	}
	// Its partition is no longer parked: it backs off from the minimum
	// again in the next outage.
	if !strings.Contains(logs.String(), "partitions reachable again") {
		t.Errorf("no \"partitions reachable again\" in the log:\n%s", logs.String())
	}
	for i, r := range raw {
		if want, _ := frame(down, backlog-100+i); history.IDOf([]byte(r)) != want {
			t.Fatalf("entry %d is %s, want %s", i, history.IDOf([]byte(r)), want)
		}
	}
}
