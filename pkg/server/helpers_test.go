package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
	_ "github.com/chatserver/chatserver/pkg/plugins"
	"github.com/chatserver/chatserver/pkg/server"
)

// frame is any server → client frame, decoded loosely.
type frame struct {
	pipeline.Envelope
	Messages []pipeline.Envelope `json:"messages"`
	Complete *bool               `json:"complete"`
	Code     string              `json:"code"`
	Reason   string              `json:"reason"`
	Ref      string              `json:"ref"`
	raw      []byte
}

type testServer struct {
	*server.Server
	URL string
	ts  *httptest.Server
}

// startServer runs a server with the embedded default config, changed by
// mutate, on a loopback port. It is shut down when the test ends.
func startServer(t testing.TB, mutate func(*config.Config)) *testServer {
	t.Helper()
	return startServerWith(t, mutate, server.Options{})
}

// startServerWith is startServer with explicit Options (an injected store).
func startServerWith(t testing.TB, mutate func(*config.Config), opts server.Options) *testServer {
	t.Helper()
	srv := newServer(t, mutate, opts)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		ts.Close()
	})
	return &testServer{Server: srv, URL: ts.URL, ts: ts}
}

// newServer builds a server from the embedded default config, changed by
// mutate. The caller serves and shuts it down.
func newServer(t testing.TB, mutate func(*config.Config), opts server.Options) *server.Server {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(cfg)
	}
	srv, err := server.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// fastLimits raises the rate limit so tests can send bursts.
func fastLimits(cfg *config.Config) {
	for i, st := range cfg.Pipelines[pipeline.Message] {
		if st.Use == "ratelimit" {
			cfg.Pipelines[pipeline.Message][i].With = map[string]any{"rate": 100000, "burst": 100000}
		}
	}
}

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func (s *testServer) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(s.URL, "http") + "/chatsocket"
	if query != "" {
		u += "?" + query
	}
	return u
}

// dial connects a client; header may carry a Cookie or Origin.
func (s *testServer) dial(t *testing.T, query string, header http.Header) *wsClient {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(s.wsURL(query), header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %q: %v (HTTP %d)", query, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

// dialNamed connects with a base64 username cookie, as the page does.
func (s *testServer) dialNamed(t *testing.T, query, cookie string) *wsClient {
	h := http.Header{}
	h.Set("Cookie", "username="+cookie)
	return s.dial(t, query, h)
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *wsClient) sendRaw(mt int, b []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(mt, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// read returns the next frame, failing the test after 5 s.
func (c *wsClient) read() frame {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatalf("frame is not JSON: %q", b)
	}
	f.raw = b
	return f
}

// expect reads the next frame and checks its type.
func (c *wsClient) expect(typ string) frame {
	c.t.Helper()
	f := c.read()
	if f.Type != typ {
		c.t.Fatalf("got %s frame %s, want type %q", f.Type, f.raw, typ)
	}
	return f
}

// next reads frames until one of type typ, skipping others (presence noise).
func (c *wsClient) next(typ string) frame {
	c.t.Helper()
	for {
		if f := c.read(); f.Type == typ {
			return f
		}
	}
}

// closeCode reads until the connection closes and returns the close code.
func (c *wsClient) closeCode() int {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok {
			return ce.Code
		}
		return -1
	}
}
