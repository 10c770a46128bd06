package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
	_ "github.com/chatserver/chatserver/pkg/plugins"
	"github.com/chatserver/chatserver/pkg/server"
)

// startServer runs a real server (the default config, changed by mutate) on
// a loopback port for the test.
func startServer(t *testing.T, mutate func(*config.Config)) string {
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
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	})
	return strings.TrimPrefix(ts.URL, "http://")
}

func noRateLimit(cfg *config.Config) {
	for i, st := range cfg.Pipelines.Message {
		if st.Use == "ratelimit" {
			cfg.Pipelines.Message[i].With = map[string]any{"rate": 1e6, "burst": 1e6}
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
