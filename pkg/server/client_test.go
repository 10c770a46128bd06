package server_test

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
)

// writers counts the goroutines now in a client's writeLoop.
func writers() int { return goroutinesIn("server.(*client).writeLoop(") }

// goroutinesIn counts the goroutines whose stacks hold fn (a frame as
// runtime.Stack prints it).
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte(fn))
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

// Writers come and go (a writer returns after a linger without frames; the
// next frame starts another): messages sent in bursts with pauses around the
// flush tick (10 ms) and the linger (50-100 ms) reach every member, each
// sender's in order, none twice — a lost wake-up would leave frames queued.
func TestWritersRestartLosingNothing(t *testing.T) {
	for _, delay := range []time.Duration{0, 10 * time.Millisecond} {
		t.Run("write_delay="+delay.String(), func(t *testing.T) { writersRestart(t, delay) })
	}
}

func writersRestart(t *testing.T, delay time.Duration) {
	s := startServer(t, func(c *config.Config) {
		fastLimits(c)
		c.WebSocket.PresenceLimit = 1 // only messages after the joins
		c.WebSocket.WriteDelay = delay
	})
	const senders, receivers, perSender = 3, 3, 40
	pauses := []time.Duration{0, 0, 0, 3 * time.Millisecond, 12 * time.Millisecond, 70 * time.Millisecond, 130 * time.Millisecond}
	var rs []*wsClient
	for range receivers {
		rs = append(rs, joined(t, s, ""))
	}
	ss := make([]*wsClient, senders)
	for i := range ss {
		ss[i] = joined(t, s, "")
	}
	ids := map[int64]int{} // sender client id -> index
	for i, c := range ss {
		hello := fmt.Sprint("hello ", i)
		c.send(map[string]string{"body": hello})
		for f := c.next("message"); ; f = c.next("message") {
			if f.Body == hello {
				ids[f.ClientID] = i
				break
			}
		}
	}
	for _, r := range rs {
		for range senders {
			r.next("message") // the hellos
		}
	}
	done := make(chan struct{})
	for i, c := range ss {
		go func() {
			defer func() { done <- struct{}{} }()
			for n := range perSender {
				if err := c.conn.WriteJSON(map[string]string{"body": fmt.Sprint(n)}); err != nil {
					t.Errorf("sender %d: %v", i, err)
					return
				}
				time.Sleep(pauses[(n*3+i)%len(pauses)])
			}
		}()
	}
	for _, r := range rs {
		next := make([]int, senders)
		for range senders * perSender {
			f := r.next("message")
			i, ok := ids[f.ClientID]
			if !ok {
				t.Fatalf("message from unknown client %d", f.ClientID)
			}
			if want := fmt.Sprint(next[i]); f.Body != want {
				t.Fatalf("from sender %d: got %q, want %q", i, f.Body, want)
			}
			next[i]++
		}
	}
	for range senders {
		<-done
	}
}
