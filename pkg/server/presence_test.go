package server_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
)

// In a room over websocket.presence_limit, joins and leaves are not
// broadcast, but the joiner still gets its own online frame; at or under the
// limit, presence is broadcast to everyone, the joiner included.
func TestPresenceLimit(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		fastLimits(c)
		c.WebSocket.PresenceLimit = 2
	})
	a := s.dial(t, "room=big", nil)
	a.expect("history")
	a.expect("online") // its own; room of 1
	b := s.dial(t, "room=big", nil)
	b.expect("history")
	bOnline := b.expect("online") // room of 2: at the limit, everyone is told
	if got := a.expect("online"); got.ClientID != bOnline.ClientID {
		t.Fatalf("a saw online of %d, want b's (%d)", got.ClientID, bOnline.ClientID)
	}
	c := s.dial(t, "room=big", nil)
	c.expect("history")
	cOnline := c.expect("online") // room of 3: over the limit, only c is told
	if cOnline.ClientID == 0 || cOnline.Username == "" {
		t.Fatalf("joiner's own online frame incomplete: %s", cOnline.raw)
	}
	c.conn.Close() // leaving a room of 3: no offline for the others
	// The next frame a sees must be the message, not c's online or offline.
	b.send(map[string]any{"body": "hi"})
	if got := a.read(); got.Type != "message" || got.Body != "hi" {
		t.Fatalf("a got %s, want the message (no presence from a crowded room)", got.raw)
	}
	if v := counterValue(t, s, "chatserver_presence_suppressed_total"); v < 1 {
		t.Fatalf("presence suppressed = %v, want at least 1 (c's join)", v)
	}
}

// A client that negotiates permessage-deflate gets the same frames, compressed.
func TestCompressedClientGetsFrames(t *testing.T) {
	s := startServer(t, fastLimits)
	var read atomic.Int64 // bytes the compressing client read off the wire
	d := websocket.Dialer{EnableCompression: true, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return countingConn{c, &read}, err
	}}
	conn, resp, err := d.Dial(s.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatal("compression not negotiated")
	}
	zc := &wsClient{t: t, conn: conn}
	plain := s.dial(t, "", nil)
	zc.expect("history")
	zc.expect("online")
	plain.expect("history")
	plain.expect("online")
	zc.expect("online")
	body := strings.Repeat("compressible ", 100)
	before := read.Load()
	plain.send(map[string]any{"body": body})
	for _, c := range []*wsClient{zc, plain} {
		if got := c.next("message"); got.Body != strings.TrimSpace(body) {
			t.Fatalf("body %q", got.Body)
		}
	}
	// The frame carries the body twice (body and html): uncompressed it is
	// over twice the body's size; compressed, far under it.
	if n := read.Load() - before; n >= int64(len(body)) {
		t.Errorf("the message took %d bytes on the wire for a %d-byte body: not compressed", n, len(body))
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}
