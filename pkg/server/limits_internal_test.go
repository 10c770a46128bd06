package server

import (
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
)

func TestLimiterClientKey(t *testing.T) {
	l := newLimiter(config.Limits{ExemptLoopback: true})
	tests := []struct {
		addr string
		want string // "" means exempt or unparseable
	}{
		{"203.0.113.7:5000", "203.0.113.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"}, // same /64, same key
		{"[::ffff:203.0.113.7]:80", "203.0.113.7/32"},       // v4-mapped
		{"127.0.0.9:1", ""},
		{"[::1]:1", ""},
		{"garbage", ""},
	}
	for _, tt := range tests {
		k, ok := l.clientKey(tt.addr)
		got := ""
		if ok {
			got = k.String()
		}
		if got != tt.want {
			t.Errorf("clientKey(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// The maps shrink back: connection counts on release, refilled buckets on sweep.
func TestLimiterForgetsIdleAddresses(t *testing.T) {
	l := newLimiter(config.Limits{MaxConnsPerIP: 1, HandshakesPerIP: config.RateLimit{Rate: 1000, Burst: 1}})
	var releases []func()
	for i := 0; i < 100; i++ {
		rel, ref := l.acquire("198.51.100." + string(rune('0'+i%10)) + string(rune('0'+i/10)) + ":1")
		if ref != nil {
			t.Fatalf("refused: %+v", ref)
		}
		releases = append(releases, rel)
	}
	for _, r := range releases {
		r()
		r() // idempotent
	}
	if len(l.conns) != 0 {
		t.Fatalf("%d connection counts left after release", len(l.conns))
	}
	time.Sleep(5 * time.Millisecond) // buckets refill at 1000/s
	l.mu.Lock()
	l.lastSweep = time.Now().Add(-2 * time.Minute)
	l.sweep(time.Now())
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d refilled buckets left after sweep", n)
	}
}
