package server_test

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
)

// writers counts the goroutines now in a client's writeLoop.
func writers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("server.(*client).writeLoop("))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitWriters waits until at most want writers run, and fails after 5 s.
func waitWriters(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for writers() > want {
		if time.Now().After(deadline) {
			t.Fatalf("%d writer goroutines still running, want at most %d", writers(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle connection holds no writer goroutine (half of what it would cost,
// see BENCHMARKS.md): writers start when frames are queued and return after
// a short linger, with or without write pacing.
func TestIdleConnectionsHoldNoWriter(t *testing.T) {
	for _, delay := range []time.Duration{0, 10 * time.Millisecond} {
		t.Run("write_delay="+delay.String(), func(t *testing.T) {
			s := startServer(t, func(c *config.Config) { c.WebSocket.WriteDelay = delay })
			const members = 20
			clients := make([]*wsClient, members)
			for i := range clients {
				clients[i] = joined(t, s, "")
			}
			waitWriters(t, 0)
			for round := range 3 {
				clients[round].send(map[string]string{"body": "wake up"})
				for _, c := range clients {
					if f := c.next("message"); f.Body != "wake up" {
						t.Fatalf("round %d: got %q", round, f.Body)
					}
				}
				waitWriters(t, 0)
			}
		})
	}
}
