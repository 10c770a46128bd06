package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
	_ "github.com/chatserver/chatserver/pkg/plugins"
	"github.com/chatserver/chatserver/pkg/server"
)

// startServer runs a real server (the default config, changed by mutate) on
// a loopback port for the test.
func startServer(t *testing.T, mutate func(*config.Config)) string {
	t.Helper()
	return startServerWrapped(t, mutate, nil)
}

// startServerWrapped is startServer with the server's handler wrapped by wrap
// (nil: not wrapped).
func startServerWrapped(t *testing.T, mutate func(*config.Config), wrap func(http.Handler) http.Handler) string {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(cfg)
	}
	srv, err := server.New(cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	})
	return strings.TrimPrefix(ts.URL, "http://")
}

func noRateLimit(cfg *config.Config) {
	for i, st := range cfg.Pipelines[pipeline.Message] {
		if st.Use == "ratelimit" {
			cfg.Pipelines[pipeline.Message][i].With = map[string]any{"rate": 1e6, "burst": 1e6}
		}
	}
}

func TestFanoutCountsEveryDelivery(t *testing.T) {
	addr := startServer(t, noRateLimit)
	res, err := Fanout(context.Background(), FanoutConfig{
		Addr: addr, Subscribers: 5, Publishers: 2, Rate: 100, Duration: 300 * time.Millisecond,
		Settle: 50 * time.Millisecond, Drain: 10 * time.Second, PID: os.Getpid(),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Message k goes out at k/Rate while that is under Duration: k = 0..29.
	if res.Published != 30 || res.Rejected != 0 || res.Accepted != 30 {
		t.Fatalf("published %d, rejected %d, accepted %d; want 30, 0, 30", res.Published, res.Rejected, res.Accepted)
	}
	if res.Expected != 150 || res.Deliveries != 150 || res.Lost != 0 || res.LossPct != 0 || res.Duplicates != 0 {
		t.Fatalf("expected %d, deliveries %d, lost %d (%v%%), dups %d; want 150, 150, 0, 0, 0",
			res.Expected, res.Deliveries, res.Lost, res.LossPct, res.Duplicates)
	}
	l := res.Latency
	if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
		t.Fatalf("latency percentiles out of order: %+v", l)
	}
	if res.Disconnected != 0 || !res.Sustainable && l.P99 < 200 {
		t.Fatalf("disconnected %d, sustainable %v: %+v", res.Disconnected, res.Sustainable, res)
	}
	if res.ServerRSSMB <= 0 {
		t.Fatalf("RSS of --pid not read: %+v", res)
	}
}

// With the default rate limit (5/s, bursts of 10 per client) the server
// refuses part of what 2 publishers send at 100/s: refused messages are not
// expected, and what was accepted still reaches everyone once.
func TestFanoutRejectedAreNotExpected(t *testing.T) {
	addr := startServer(t, nil)
	res, err := Fanout(context.Background(), FanoutConfig{
		Addr: addr, Subscribers: 3, Publishers: 2, Rate: 100, Duration: 300 * time.Millisecond,
		Settle: 50 * time.Millisecond, Drain: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rejected == 0 || res.Accepted+res.Rejected != res.Published {
		t.Fatalf("published %d, rejected %d, accepted %d: want some rejected, the rest accepted",
			res.Published, res.Rejected, res.Accepted)
	}
	if res.Expected != 3*res.Accepted || res.Deliveries != res.Expected || res.Lost != 0 {
		t.Fatalf("expected %d, deliveries %d, lost %d for %d accepted", res.Expected, res.Deliveries, res.Lost, res.Accepted)
	}
	if res.Sustainable {
		t.Fatal("a run with rejected messages is not sustainable")
	}
}

// serverFrame encodes an unmasked server text frame.
func serverFrame(payload string) []byte {
	b := []byte{0x81}
	if len(payload) < 126 {
		b = append(b, byte(len(payload)))
	} else {
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	}
	return append(b, payload...)
}

func TestSubscriberCountsOncePerMessage(t *testing.T) {
	now := time.Now().UnixNano()
	msg := func(run string, seq int) string {
		return `{"id":"x","type":"message","room":"r","client_id":1,"username":"u","body":"` + run + "." +
			itoa(int64(seq)) + "." + itoa(now) + `.xxx","html":"<b>` + run + `</b>"}`
	}
	var in bytes.Buffer
	for _, f := range []string{
		`{"type":"history","room":"r","messages":[` + msg("abc123", 2) + `]}`, // history: not a delivery
		`{"id":"y","type":"online","room":"r","client_id":2,"username":"v","datetime":"","ts":0}`,
		msg("abc123", 0), msg("abc123", 1), msg("abc123", 1), // a duplicate
		msg("ffffff", 2), // another run's message
		msg("abc123", 3),
	} {
		in.Write(serverFrame(f))
	}
	s := &subscriber{c: &wsConn{br: bufio.NewReader(&in)}, seen: make([]uint64, 1)}
	s.read([]byte(`"body":"abc123.`))
	if s.n.Load() != 3 || s.dups != 1 || s.hist.n != 3 || s.frames.Load() != 7 {
		t.Fatalf("counted %d, dups %d, latencies %d, frames %d; want 3, 1, 3, 7", s.n.Load(), s.dups, s.hist.n, s.frames.Load())
	}
	if s.err != nil {
		t.Fatalf("end of input reported as %v", s.err)
	}
}

func itoa(v int64) string { return string(appendInt(nil, v)) }

func appendInt(b []byte, v int64) []byte {
	if v >= 10 {
		b = appendInt(b, v/10)
	}
	return append(b, byte('0'+v%10))
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(tt.q)
		if got > tt.want || float64(got) < 0.96*float64(tt.want) {
			t.Errorf("quantile(%v) = %v, want %v within 4%% below", tt.q, got, tt.want)
		}
	}
	if h.max != time.Second {
		t.Errorf("max %v", h.max)
	}
	for us := uint64(0); us < 1<<20; us += 7 {
		if lo := histLow(histIndex(us)); lo > us || histIndex(lo) != histIndex(us) {
			t.Fatalf("bucket of %d starts at %d", us, lo)
		}
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"10.1.2.3:8000", "192.0.2.1:80", "[2001:db8::1]:80"} {
		_, err := Fanout(context.Background(), FanoutConfig{Addr: addr, Subscribers: 1, Duration: time.Second})
		if !errors.Is(err, ErrBadConfig) {
			t.Errorf("fanout %s: %v, want ErrBadConfig", addr, err)
		}
		_, err = Conns(context.Background(), ConnsConfig{Addr: addr, Conns: 1})
		if !errors.Is(err, ErrBadConfig) {
			t.Errorf("conns %s: %v, want ErrBadConfig", addr, err)
		}
	}
	if _, err := Fanout(context.Background(), FanoutConfig{Addr: "127.0.0.1:1", Subscribers: MaxConns + 1}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("over the bound: %v", err)
	}
}

func TestConnsJoinAndMeasure(t *testing.T) {
	addr := startServer(t, nil)
	res, err := Conns(context.Background(), ConnsConfig{Addr: addr, Conns: 20, Settle: 100 * time.Millisecond, PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 20 || res.Disconnected != 0 || res.ServerRSSMB <= 0 {
		t.Fatalf("%+v", res)
	}
	// Each member sees its own online and those of later joiners (20·21/2
	// in all), plus an earlier joiner's when that one's online went out
	// after it joined; never more than one per member.
	if res.FramesPerConn < 10.5 || res.FramesPerConn > 20 {
		t.Fatalf("frames per connection %v, want 10.5 to 20 (online frames)", res.FramesPerConn)
	}
}

func TestSourceIPs(t *testing.T) {
	if sourceIP(5, perSourceIP) != nil {
		t.Fatal("a single source address suffices up to perSourceIP")
	}
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		seen[sourceIP(i, 2*perSourceIP+1).String()] = true
	}
	if len(seen) != 3 || !seen["127.0.0.1"] || !seen["127.0.0.3"] {
		t.Fatalf("source addresses %v", seen)
	}
}

func TestSpread(t *testing.T) {
	// 7 subscribers and 2 publishers over 3 servers: subscribers 0,1,2,0,1,2,0;
	// publishers 0,1.
	var got []int
	for i := 0; i < 9; i++ {
		got = append(got, Spread(i, 7, 3))
	}
	if want := []int{0, 1, 2, 0, 1, 2, 0, 0, 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Spread over 3: %v, want %v", got, want)
	}
	for i := 0; i < 9; i++ {
		if Spread(i, 7, 1) != 0 || Spread(i, 7, 0) != 0 {
			t.Fatal("one server (or none given) takes every connection")
		}
	}
}

// countJoins wraps a server's handler, counting WebSocket handshakes.
func countJoins(n *atomic.Int64) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/chatsocket" {
				n.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	}
}

// Two independent servers (local brokers): subscribers and publishers are
// spread over both, so each subscriber gets exactly the messages of the
// publisher on its own server, i.e. half of what a single room would give.
func TestFanoutSpreadsOverServers(t *testing.T) {
	var joinsA, joinsB atomic.Int64
	a := startServerWrapped(t, noRateLimit, countJoins(&joinsA))
	b := startServerWrapped(t, noRateLimit, countJoins(&joinsB))
	res, err := Fanout(context.Background(), FanoutConfig{
		Addrs: []string{a, b}, Subscribers: 6, Publishers: 2, Rate: 100, Duration: 300 * time.Millisecond,
		Settle: 50 * time.Millisecond, Drain: 2 * time.Second, PIDs: []int{os.Getpid(), os.Getpid()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if joinsA.Load() != 4 || joinsB.Load() != 4 {
		t.Fatalf("handshakes per server %d, %d; want 4, 4 (3 subscribers and 1 publisher each)", joinsA.Load(), joinsB.Load())
	}
	// 30 messages, alternating publishers: 15 per server, each to its 3 subscribers.
	if res.Servers != 2 || res.ServerProcs != 2 || res.Accepted != 30 || res.Deliveries != 90 || res.Duplicates != 0 || res.Lost != 90 {
		t.Fatalf("servers %d, procs %d, accepted %d, deliveries %d, dups %d, lost %d; want 2, 2, 30, 90, 0, 90",
			res.Servers, res.ServerProcs, res.Accepted, res.Deliveries, res.Duplicates, res.Lost)
	}
}

// Three nodes of one cluster (Redis broker and history under a key prefix of
// the test's own, in this process): every subscriber, whichever node it is
// on, gets every message exactly once. Without a Redis on 127.0.0.1:6379 it
// skips, except in CI, where it fails (redistest.Prefix).
func TestFanoutOverClusterNodes(t *testing.T) {
	prefix := redistest.Prefix(t) // its keys are deleted when the test ends
	node := func(cfg *config.Config) {
		noRateLimit(cfg)
		cfg.Broker.Type = "redis"
		cfg.History.Store = "redis"
		cfg.Redis.URL = redistest.SharedURL
		cfg.Redis.KeyPrefix = prefix
	}
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, startServer(t, node))
	}
	res, err := Fanout(context.Background(), FanoutConfig{
		Addrs: addrs, Subscribers: 6, Publishers: 2, Rate: 100, Duration: 300 * time.Millisecond,
		Settle: 100 * time.Millisecond, Drain: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Servers != 3 || res.Accepted != 30 || res.Expected != 180 || res.Deliveries != 180 || res.Lost != 0 || res.Duplicates != 0 {
		t.Fatalf("servers %d, accepted %d, expected %d, deliveries %d, lost %d, dups %d; want 3, 30, 180, 180, 0, 0",
			res.Servers, res.Accepted, res.Expected, res.Deliveries, res.Lost, res.Duplicates)
	}
}
