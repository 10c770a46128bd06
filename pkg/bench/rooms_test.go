package bench

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/config"
)

// The schedule gives every room a phase within one interval and sends its
// messages interval apart while they fall within the duration: the counts
// add up to rate × duration (± one per room).
func TestRoomScheduleCounts(t *testing.T) {
	for _, tt := range []struct {
		name  string
		rooms int
		rate  float64
		d     time.Duration
	}{
		{"a message per room per second", 100, 100, 3 * time.Second},
		{"rooms faster than 1/s", 10, 1000, time.Second},
		{"fewer messages than rooms", 2000, 500, time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newRoomSchedule(tt.rooms, tt.rate, mrand.New(mrand.NewPCG(1, 2)))
			var sum int64
			for r := range tt.rooms {
				if s.phase[r] < 0 || s.phase[r] >= s.interval {
					t.Fatalf("room %d: phase %v outside [0, %v)", r, s.phase[r], s.interval)
				}
				n := s.count(r, tt.d)
				if last := s.phase[r] + time.Duration(n-1)*s.interval; n > 0 && (last >= tt.d || last+s.interval < tt.d) {
					t.Fatalf("room %d: %d messages, the last at %v, for %v", r, n, last, tt.d)
				}
				sum += n
			}
			want := tt.rate * tt.d.Seconds()
			if float64(sum) < want-float64(tt.rooms) || float64(sum) > want+float64(tt.rooms) {
				t.Fatalf("%d messages scheduled, want %v ± %d", sum, want, tt.rooms)
			}
			for i := 1; i < len(s.order); i++ {
				if s.phase[s.order[i-1]] > s.phase[s.order[i]] {
					t.Fatal("rooms not in phase order")
				}
			}
		})
	}
}

// roomsRun runs a small rooms scenario (20 rooms of 3, 200 msg/s: 10 per
// room per second, for 300 ms) against addrs.
func roomsRun(t *testing.T, addrs []string) *RoomsResult {
	t.Helper()
	res, err := Rooms(context.Background(), RoomsConfig{
		Addrs: addrs, Rooms: 20, Members: 3, Rate: 200, Duration: 300 * time.Millisecond,
		Settle: 50 * time.Millisecond, Drain: 10 * time.Second, PID: os.Getpid(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Every member gets every message of its own room, once, in order, and none
// of another room's: deliveries are exactly accepted × members.
func TestRoomsCountsEveryDelivery(t *testing.T) {
	addr := startServer(t, noRateLimit)
	res := roomsRun(t, []string{addr})
	// Each room sends 3 messages (phase < 100 ms, then 100 ms apart, under 300 ms).
	if res.Conns != 60 || res.Published != 60 || res.Rejected != 0 || res.Accepted != 60 {
		t.Fatalf("conns %d, published %d, rejected %d, accepted %d; want 60, 60, 0, 60", res.Conns, res.Published, res.Rejected, res.Accepted)
	}
	if res.Expected != 180 || res.Deliveries != 180 || res.Lost != 0 || res.Duplicates != 0 || res.Reordered != 0 || res.Misrouted != 0 {
		t.Fatalf("expected %d, deliveries %d, lost %d, dups %d, reordered %d, misrouted %d; want 180, 180, 0, 0, 0, 0",
			res.Expected, res.Deliveries, res.Lost, res.Duplicates, res.Reordered, res.Misrouted)
	}
	if l := res.Latency; !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max) || res.Disconnected != 0 || res.ServerRSSMB <= 0 {
		t.Fatalf("latency %+v, disconnected %d, RSS %v", l, res.Disconnected, res.ServerRSSMB)
	}
}

// With Compress every member offers permessage-deflate; the server (its
// default websocket.compression) accepts, and the counts are the same.
func TestRoomsCompress(t *testing.T) {
	addr := startServer(t, noRateLimit)
	res, err := Rooms(context.Background(), RoomsConfig{
		Addr: addr, Rooms: 4, Members: 3, Rate: 40, Duration: 300 * time.Millisecond,
		Settle: 50 * time.Millisecond, Drain: 10 * time.Second, Compress: true, DialConcurrency: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Compress || res.Compressed != 12 || res.Conns != 12 {
		t.Fatalf("compress %v, %d of %d connections deflate; want all 12", res.Compress, res.Compressed, res.Conns)
	}
	if res.Deliveries != res.Expected || res.Expected != 3*res.Accepted || res.Accepted == 0 || res.Lost != 0 {
		t.Fatalf("deliveries %d of %d expected for %d accepted, lost %d", res.Deliveries, res.Expected, res.Accepted, res.Lost)
	}
}

// With the default rate limit (5/s, bursts of 10 per client), a room
// publishing 100/s gets part of its messages refused: those are not expected,
// the rest reach the room's members once.
func TestRoomsRejectedAreNotExpected(t *testing.T) {
	addr := startServer(t, nil)
	res, err := Rooms(context.Background(), RoomsConfig{
		Addr: addr, Rooms: 2, Members: 2, Rate: 200, Duration: 300 * time.Millisecond,
		Settle: 50 * time.Millisecond, Drain: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 60 || res.Rejected == 0 || res.Accepted+res.Rejected != res.Published {
		t.Fatalf("published %d, rejected %d, accepted %d: want 60, some rejected, the rest accepted", res.Published, res.Rejected, res.Accepted)
	}
	if res.Expected != 2*res.Accepted || res.Deliveries != res.Expected || res.Lost != 0 || res.Sustainable {
		t.Fatalf("expected %d, deliveries %d, lost %d, sustainable %v for %d accepted", res.Expected, res.Deliveries, res.Lost, res.Sustainable, res.Accepted)
	}
}

// Two independent servers (local brokers): a room's members are spread over
// both (connection i on server i%2), so a member gets its room's messages
// only when it shares the publisher's server; the others are counted lost,
// exactly.
func TestRoomsSpreadsMembersOverServers(t *testing.T) {
	a := startServer(t, noRateLimit)
	b := startServer(t, noRateLimit)
	res := roomsRun(t, []string{a, b})
	// Room r's members are connections 3r..3r+2, its publisher 3r + r%3;
	// a member gets the room's messages when its index has the publisher's
	// parity (the same server).
	var same int64
	for r := range 20 {
		p := 3*r + r%3
		for j := range 3 {
			if (3*r+j)%2 == p%2 {
				same++
			}
		}
	}
	if res.Servers != 2 || res.Accepted != 60 || res.Deliveries != 3*same || res.Duplicates != 0 || res.Misrouted != 0 {
		t.Fatalf("servers %d, accepted %d, deliveries %d, dups %d, misrouted %d; want 2, 60, %d, 0, 0",
			res.Servers, res.Accepted, res.Deliveries, res.Duplicates, res.Misrouted, 3*same)
	}
	if res.Lost != res.Expected-3*same || res.Sustainable {
		t.Fatalf("lost %d of %d, sustainable %v", res.Lost, res.Expected, res.Sustainable)
	}
}

// Three nodes of one cluster (Redis broker and history under a key prefix of
// the test's own): a room's members sit on different nodes, and every one
// gets every message of its room exactly once. Without a Redis on
// 127.0.0.1:6379 it skips, except in CI, where it fails.
func TestRoomsOverClusterNodes(t *testing.T) {
	prefix := redistest.Prefix(t)
	node := func(cfg *config.Config) {
		noRateLimit(cfg)
		cfg.Broker.Type = "redis"
		cfg.History.Store = "redis"
		cfg.Redis.URL = redistest.SharedURL
		cfg.Redis.KeyPrefix = prefix
	}
	addrs := []string{startServer(t, node), startServer(t, node), startServer(t, node)}
	res := roomsRun(t, addrs)
	if res.Servers != 3 || res.Accepted != 60 || res.Expected != 180 || res.Deliveries != 180 || res.Lost != 0 ||
		res.Duplicates != 0 || res.Reordered != 0 || res.Misrouted != 0 {
		t.Fatalf("servers %d, accepted %d, expected %d, deliveries %d, lost %d, dups %d, reordered %d, misrouted %d; want 3, 60, 180, 180, 0, 0, 0, 0",
			res.Servers, res.Accepted, res.Expected, res.Deliveries, res.Lost, res.Duplicates, res.Reordered, res.Misrouted)
	}
}

func TestRoomsRefusesBadConfig(t *testing.T) {
	for _, cfg := range []RoomsConfig{
		{Addr: "10.1.2.3:8000", Rooms: 1},
		{Addr: "127.0.0.1:1", Rooms: MaxConns, Members: 2},
		{Addr: "127.0.0.1:1", Rate: -1},
		{Addr: "127.0.0.1:1", Duration: MaxDuration + 1},
		{Addr: "127.0.0.1:1", Rooms: 1 << 62, Members: 4}, // the product overflows to 0
		{Addr: "127.0.0.1:1", DialConcurrency: -1},
		{Addr: "127.0.0.1:1", DialConcurrency: MaxConns + 1},
	} {
		if _, err := Rooms(context.Background(), cfg); err == nil || !isBadConfig(err) {
			t.Errorf("%+v: %v, want ErrBadConfig", cfg, err)
		}
	}
}

func isBadConfig(err error) bool { return errors.Is(err, ErrBadConfig) }

// Every conns option with a bound refuses what is outside it, before any
// dial (the addresses here answer nothing).
func TestConnsRefusesBadConfig(t *testing.T) {
	sync := t.TempDir()
	for _, cfg := range []ConnsConfig{
		{Addr: "10.1.2.3:8000"},
		{Addr: "127.0.0.1:1", Conns: MaxConns + 1},
		{Addr: "127.0.0.1:1", Offset: -1},
		{Addr: "127.0.0.1:1", Conns: 10, Rooms: 11},
		{Addr: "127.0.0.1:1", Conns: 10, Rooms: 21, Generators: 2, Sync: sync},
		{Addr: "127.0.0.1:1", DialConcurrency: -1},
		{Addr: "127.0.0.1:1", Generators: 2}, // no --sync
		{Addr: "127.0.0.1:1", Generators: MaxGenerators + 1, Sync: sync},
		{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, PIDs: []int{1}},
		{Addr: "127.0.0.1:1", Post: true, Check: "c"}, // no API key
		{Addr: "127.0.0.1:1", Check: "a.b"},
		{Addr: "127.0.0.1:1", Hold: -time.Second},
	} {
		if _, err := Conns(context.Background(), cfg); err == nil || !isBadConfig(err) {
			t.Errorf("%+v: %v, want ErrBadConfig", cfg, err)
		}
	}
}
