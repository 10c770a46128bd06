package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
)

// FuzzFrameWriter holds the batched frame writer (writeBatch: frames encoded
// by newOutFrame, copied into one buffer; compressed ones framed by gorilla
// into it) to what gorilla's own reader makes of its bytes, for a batch of
// fuzzed payloads, uncompressed and compressed; and the same for writeEach,
// gorilla's own writer, which it stands in for (fast_paths.frame_writer).
// A batch is cut from data: each byte of cuts takes that many bytes next
// (0: an empty message); big adds one message of big%(1<<18) bytes (16- and
// 64-bit lengths).
func FuzzFrameWriter(f *testing.F) {
	f.Add([]byte(`{"id":"1","type":"message","body":"hi"}`), []byte{40}, uint32(0))
	f.Add([]byte("abc"), []byte{0, 1, 2, 0}, uint32(0))
	f.Add([]byte("x"), []byte{}, uint32(125))
	f.Add([]byte("y"), []byte{}, uint32(126))
	f.Add([]byte("z"), []byte{}, uint32(65535))
	f.Add([]byte("\x00\xff"), []byte{1}, uint32(65536))
	f.Add([]byte("éè😀<>&\""), []byte{3, 255, 7}, uint32(200000))
	plain, compressed := framePair(f, false), framePair(f, true)
	f.Fuzz(func(t *testing.T, data, cuts []byte, big uint32) {
		var payloads [][]byte
		rest := data
		for _, c := range cuts {
			n := min(int(c), len(rest))
			payloads = append(payloads, rest[:n])
			rest = rest[n:]
		}
		if big %= 1 << 18; big > 0 {
			fill := data
			if len(fill) == 0 {
				fill = []byte("x")
			}
			payloads = append(payloads, bytes.Repeat(fill, int(big)/len(fill)+1)[:big])
		}
		if len(payloads) == 0 {
			return
		}
		batch := make([]queued, len(payloads))
		for i, p := range payloads {
			batch[i] = queued{f: newOutFrame(p)}
		}
		for _, p := range []*framePeer{plain, compressed} {
			p.check(t, "writeBatch", batch, payloads, p.c.writeBatch)
			p.check(t, "writeEach", batch, payloads, p.c.writeEach)
		}
	})
}

// framePeer is a server-side client, set up as serveWS sets one up, and the
// gorilla client connected to it.
type framePeer struct {
	c    *client
	peer *websocket.Conn
	name string
}

func framePair(tb testing.TB, compress bool) *framePeer {
	tb.Helper()
	s := newTestServer(tb, func(c *config.Config) {
		c.WebSocket.Compression = true
		c.FastPaths.FrameWriter = true
	})
	got := make(chan *client, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &hijacker{ResponseWriter: w}
		ws, err := s.upgrader.Upgrade(hj, r, nil)
		if err != nil {
			return
		}
		c := newClient(s, 1, "fuzz")
		c.ws, c.bc = ws, hj.conn
		got <- c
	}))
	tb.Cleanup(ts.Close)
	d := websocket.Dialer{EnableCompression: compress}
	peer, _, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { peer.Close() })
	c := <-got
	tb.Cleanup(func() { c.bc.Close() })
	if c.bc.deflate != compress {
		tb.Fatalf("compression negotiated: %v, want %v", c.bc.deflate, compress)
	}
	name := "plain"
	if compress {
		name = "compressed"
	}
	return &framePeer{c: c, peer: peer, name: name}
}

// check writes batch with write while the peer reads, and compares what the
// peer's gorilla reader got with payloads.
func (p *framePeer) check(t *testing.T, how string, batch []queued, payloads [][]byte, write func([]queued) error) {
	t.Helper()
	werr := make(chan error, 1)
	go func() { werr <- write(batch) }()
	_ = p.peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i, want := range payloads {
		mt, got, err := p.peer.ReadMessage()
		if err != nil {
			t.Fatalf("%s, %s: message %d of %d: %v", p.name, how, i, len(payloads), err)
		}
		if mt != websocket.TextMessage || !bytes.Equal(got, want) {
			t.Fatalf("%s, %s: message %d: type %d, %d bytes %.40q; want text, %d bytes %.40q",
				p.name, how, i, mt, len(got), got, len(want), want)
		}
	}
	if err := <-werr; err != nil {
		t.Fatalf("%s, %s: %v", p.name, how, err)
	}
}
