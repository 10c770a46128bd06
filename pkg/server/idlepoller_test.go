package server_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
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

			// A client that only pings (nothing after the pings would
			// take a reader out of gorilla's ReadMessage): answered, and
			// its reader goes too.
			pinger := rawJoin(t, strings.TrimPrefix(s.URL, "http://"))
			if idle > 0 {
				idle++
			}
			waitReaders(t, idle)
			if _, err := pinger.Write(cat(masked(opPing, []byte("still there?")), masked(opPing, nil))); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"still there?", ""} {
				if got := nextPong(t, pinger); got != want {
					t.Fatalf("pong %q, want %q", got, want)
				}
			}
			waitReaders(t, idle)
			_ = pinger.Close()
			if idle > 0 {
				idle--
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

const opPing = 0x9

// rawJoin opens a WebSocket connection by hand (a bare socket: its frames are
// written and read as bytes) to the default room, and reads its 101.
func rawJoin(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_, err = c.Write([]byte("GET /chatsocket HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Byte by byte up to the blank line: nothing of the frames after it
	// may be read into a buffer this function drops.
	var head []byte
	one := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("reading the handshake: %v (%q)", err, head)
		}
		head = append(head, one[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		t.Fatalf("handshake: %q", head)
	}
	return c
}

// nextPong reads the server's frames (unmasked) from c until a pong, and
// returns its payload.
func nextPong(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatalf("reading a frame: %v", err)
		}
		n := int(hdr[1] & 0x7F)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(c, ext[:]); err != nil {
				t.Fatal(err)
			}
			n = int(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(c, ext[:]); err != nil {
				t.Fatal(err)
			}
			n = int(binary.BigEndian.Uint64(ext[:])) //nolint:gosec // G115: a test's frames are small
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c, payload); err != nil {
			t.Fatal(err)
		}
		if hdr[0]&0x0F == opPong {
			return string(payload)
		}
	}
}
