package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
)

// noLimits turns every limit off, so a test can switch on just the one it checks.
func noLimits(c *config.Config) {
	c.Limits = config.Limits{ExemptLoopback: false, HandshakeTimeout: c.Limits.HandshakeTimeout}
}

// refused dials and expects a refusal before the upgrade with status and a
// body containing msg.
func refused(t *testing.T, s *testServer, query string, status int, msg string) *http.Response {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(s.wsURL(query), nil)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %q succeeded, want HTTP %d", query, status)
	}
	if resp == nil {
		t.Fatalf("dial %q: %v, want HTTP %d", query, err, status)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || !strings.Contains(string(body), msg) {
		t.Fatalf("dial %q: HTTP %d %q, want %d with %q", query, resp.StatusCode, body, status, msg)
	}
	return resp
}

// joined dials and waits for the client's own online frame.
func joined(t *testing.T, s *testServer, query string) *wsClient {
	t.Helper()
	c := s.dial(t, query, nil)
	c.expect("history")
	// Its own online follows; other members' presence (the offline of a
	// client closed just before) may come in between.
	c.next("online")
	return c
}

func TestMaxConnsPerIP(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		noLimits(c)
		c.Limits.MaxConnsPerIP = 2
	})
	a := joined(t, s, "")
	joined(t, s, "room=other") // the cap is per address, across rooms
	refused(t, s, "", http.StatusTooManyRequests, "too many open connections from your address (limit 2)")
	if v := counterValue(t, s, `chatserver_refused_total{reason="conns_per_ip"}`); v != 1 {
		t.Fatalf("refused conns_per_ip = %v, want 1", v)
	}
	// Closing one frees its slot (once the server has seen it go).
	a.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, resp, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
		if err == nil {
			conn.Close()
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after close: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHandshakeRatePerIP(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		noLimits(c)
		c.Limits.HandshakesPerIP = config.RateLimit{Rate: 0.01, Burst: 3}
	})
	for i := 0; i < 3; i++ {
		c := joined(t, s, "")
		c.conn.Close()
	}
	resp := refused(t, s, "", http.StatusTooManyRequests, "too many connection attempts")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After header")
	}
	if v := counterValue(t, s, `chatserver_refused_total{reason="handshake_rate"}`); v != 1 {
		t.Fatalf("refused handshake_rate = %v, want 1", v)
	}
}

func TestMaxRooms(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		noLimits(c)
		c.Limits.MaxRooms = 2
	})
	joined(t, s, "room=a")
	joined(t, s, "room=b")
	refused(t, s, "room=c", http.StatusServiceUnavailable, "maximum of 2 rooms")
	joined(t, s, "room=a") // existing rooms still take members
	if v := counterValue(t, s, `chatserver_refused_total{reason="max_rooms"}`); v != 1 {
		t.Fatalf("refused max_rooms = %v, want 1", v)
	}
}

func TestMaxMembersPerRoom(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		noLimits(c)
		c.Limits.MaxMembersPerRoom = 2
	})
	joined(t, s, "")
	joined(t, s, "")
	refused(t, s, "", http.StatusServiceUnavailable, "room lobby is full (2 members)")
	joined(t, s, "room=other")
	if v := counterValue(t, s, `chatserver_refused_total{reason="room_full"}`); v != 1 {
		t.Fatalf("refused room_full = %v, want 1", v)
	}
}

// Load tests run from loopback; by default the per-address limits skip it.
func TestLoopbackExemptByDefault(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Limits.MaxConnsPerIP = 1
		c.Limits.HandshakesPerIP = config.RateLimit{Rate: 0.01, Burst: 1}
	})
	for i := 0; i < 5; i++ {
		joined(t, s, "")
	}
}

func TestDefaultLimits(t *testing.T) {
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Limits{
		MaxConnsPerIP:     100,
		HandshakesPerIP:   config.RateLimit{Rate: 10, Burst: 20},
		ExemptLoopback:    true,
		MaxRooms:          10000,
		MaxMembersPerRoom: 25000,
		HandshakeTimeout:  10 * time.Second,
	}
	if cfg.Limits != want {
		t.Fatalf("limits = %+v, want %+v", cfg.Limits, want)
	}
}
