package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/server"
)

// readers counts the goroutines now in a connection's read loop.
func readers() int { return goroutinesIn("server.(*Server).readLoop(") }

// waitReaders waits until exactly want readers run, and fails after 5 s.
func waitReaders(t *testing.T, want int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprint(want, " reader goroutines"), func() bool { return readers() == want })
}

// With the idle poller (fast_paths.idle_poller) an idle connection holds no
// goroutine at all: its reader parks the socket and returns, and a new one
// comes for every frame the client sends — a message, a pong, a ping, the close —
// and goes again. Without it every connection keeps its reader. Either way
// nothing is lost: each message reaches every member, pongs keep a client,
// and a client that goes away leaves.
func TestIdleConnectionsHoldNoReader(t *testing.T) {
	for _, poller := range []bool{true, false} {
		t.Run(fmt.Sprint("idle_poller=", poller), func(t *testing.T) {
			var fp config.FastPaths
			s := startServer(t, func(c *config.Config) {
				fastLimits(c)
				c.FastPaths.IdlePoller = poller
				fp = c.FastPaths
			})
			const members = 20
			idle := members // readers of idle connections
			if fp.IdleReader && fp.IdlePoller && server.PollerBuilt {
				idle = 0
			}
			clients := make([]*wsClient, members)
			for i := range clients {
				clients[i] = joined(t, s, "")
			}
			waitReaders(t, idle)
			for round := range 3 {
				body := fmt.Sprint("round ", round)
				clients[round].send(map[string]string{"body": body})
				for _, c := range clients {
					if f := c.next("message"); f.Body != body {
						t.Fatalf("round %d: got %q", round, f.Body)
					}
				}
				waitReaders(t, idle)
			}
			// Pongs: the reader comes, takes them, and parks again; the
			// connection stays.
			for range 3 {
				if _, err := clients[0].conn.UnderlyingConn().Write(maskedPong); err != nil {
					t.Fatal(err)
				}
			}
			waitReaders(t, idle)
			clients[0].send(map[string]string{"body": "after pongs"})
			if f := clients[1].next("message"); f.Body != "after pongs" {
				t.Fatalf("got %q", f.Body)
			}
			// Pings: answered with a pong carrying their payload (by the
			// reader itself, or by gorilla's ping handler with the fast
			// paths off), and the reader goes again.
			pongs := make(chan string, 2)
			clients[0].conn.SetPongHandler(func(p string) error { pongs <- p; return nil })
			for _, p := range []string{"are you there", ""} {
				if err := clients[0].conn.WriteControl(websocket.PingMessage, []byte(p), time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			// The pongs are written as the pings are read, before the
			// echo of a message sent after them (its writer comes later).
			clients[0].send(map[string]string{"body": "after pings"})
			for clients[0].next("message").Body != "after pings" {
			}
			for _, want := range []string{"are you there", ""} {
				select {
				case got := <-pongs:
					if got != want {
						t.Fatalf("pong %q, want %q", got, want)
					}
				default:
					t.Fatalf("no pong for the ping %q before the message sent after it", want)
				}
			}
			waitReaders(t, idle)

			// A client that goes away leaves: its offline reaches the
			// others, and its reader is gone for good.
			clients[members-1].conn.Close()
			if f := clients[0].next("offline"); f.ClientID == 0 {
				t.Fatalf("offline without a client id: %s", f.raw)
			}
			if idle > 0 {
				idle--
			}
			waitReaders(t, idle)
			testutil.Eventually(t, 5*time.Second, "connections gauge at 19", func() bool {
				return counterValue(t, s, "chatserver_connections") == members-1
			})
		})
	}
}
