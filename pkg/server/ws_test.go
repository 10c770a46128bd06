package server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// chromedp's browser test leaves none, but net/http keeps idle
		// client connections' readers until the transport is closed.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

var datetimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestJoinMessageLeave(t *testing.T) {
	s := startServer(t, nil)
	alice := s.dialNamed(t, "", b64("alice"))
	h := alice.expect("history")
	if h.Room != "lobby" || len(h.Messages) != 0 || h.Complete != nil {
		t.Fatalf("history frame: %s", h.raw)
	}
	on := alice.expect("online")
	if on.Username != "alice" || on.Body != "" || on.HTML != "" || on.ClientID == 0 {
		t.Fatalf("online frame: %s", on.raw)
	}

	bob := s.dial(t, "", nil) // no cookie: a guest name
	bob.expect("history")
	bobOnline := bob.expect("online")
	if want := fmt.Sprintf("游客%d", bobOnline.ClientID); bobOnline.Username != want {
		t.Fatalf("guest name = %q, want %q", bobOnline.Username, want)
	}
	if got := alice.expect("online"); got.ID != bobOnline.ID {
		t.Fatalf("alice saw online %s, bob saw %s", got.raw, bobOnline.raw)
	}

	alice.send(map[string]any{"body": "hello <b>bob</b>"})
	for _, c := range []*wsClient{alice, bob} {
		m := c.expect("message")
		if _, err := uuid.Parse(m.ID); err != nil {
			t.Errorf("id %q is not a UUID", m.ID)
		}
		if m.Room != "lobby" || m.Username != "alice" || m.Body != "hello <b>bob</b>" || m.ClientID != on.ClientID {
			t.Errorf("message envelope: %s", m.raw)
		}
		if !datetimeRE.MatchString(m.Datetime) || m.TS < time.Now().Add(-time.Minute).UnixMilli() {
			t.Errorf("datetime %q ts %d", m.Datetime, m.TS)
		}
		if !strings.Contains(m.HTML, "hello &lt;b&gt;bob&lt;/b&gt;") || strings.Contains(m.HTML, "<b>bob") {
			t.Errorf("html not escaped: %q", m.HTML)
		}
	}

	// Frames are not HTML-escaped JSON (the protocol's example frame has plain tags),
	// and a later joiner's history frame holds the broadcast bytes exactly.
	alice.send(map[string]any{"body": "once more"})
	live := alice.expect("message").raw
	bob.expect("message")
	if !strings.Contains(string(live), `"html":"<div class=\"message\"`) || strings.Contains(string(live), `\u003c`) {
		t.Errorf("frame is HTML-escaped JSON: %s", live)
	}
	late := s.dial(t, "", nil)
	if h := late.expect("history"); !strings.Contains(string(h.raw), string(live)) {
		t.Errorf("history frame does not embed the broadcast bytes %s:\n%s", live, h.raw)
	}
	alice.expect("online")
	bob.expect("online")

	// A rename in the message, as the seed does.
	bob.send(map[string]any{"body": "hi", "username": "bob"})
	if m := alice.expect("message"); m.Username != "bob" {
		t.Fatalf("rename: %s", m.raw)
	}
	bob.expect("message")

	bob.conn.Close()
	off := alice.expect("offline")
	if off.Username != "bob" || off.ClientID != bobOnline.ClientID || off.Body != "" {
		t.Fatalf("offline frame: %s", off.raw)
	}
}

func TestHistoryKeepsLast100InOrder(t *testing.T) {
	s := startServer(t, fastLimits)
	a := s.dial(t, "", nil)
	a.expect("history")
	a.expect("online")
	for i := 0; i < 150; i++ {
		a.send(map[string]any{"body": fmt.Sprint("m", i)})
	}
	for i := 0; i < 150; i++ {
		if m := a.expect("message"); m.Body != fmt.Sprint("m", i) {
			t.Fatalf("live message %d body %q", i, m.Body)
		}
	}
	b := s.dial(t, "", nil)
	h := b.expect("history")
	if len(h.Messages) != 100 {
		t.Fatalf("history has %d messages, want 100", len(h.Messages))
	}
	for i, m := range h.Messages {
		if want := fmt.Sprint("m", i+50); m.Body != want || m.Type != "message" || m.HTML == "" {
			t.Fatalf("history[%d] = %q, want %q", i, m.Body, want)
		}
	}

	resp, err := http.Get(s.URL + "/api/rooms/lobby/history?limit=3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"body":"m147"`) || strings.Contains(string(body), `"m146"`) {
		t.Fatalf("api history: %d %s", resp.StatusCode, body)
	}
}

func TestSinceRecovery(t *testing.T) {
	s := startServer(t, fastLimits)
	a := s.dial(t, "", nil)
	a.expect("history")
	a.expect("online")
	var ids []string
	for i := 0; i < 5; i++ {
		a.send(map[string]any{"body": fmt.Sprint(i)})
		ids = append(ids, a.expect("message").ID)
	}
	tests := []struct {
		name     string
		since    string
		want     []string
		complete bool
	}{
		{"after the second", ids[1], []string{"2", "3", "4"}, true},
		{"after the last", ids[4], nil, true},
		{"unknown id: everything, incomplete", uuid.NewString(), []string{"0", "1", "2", "3", "4"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.dial(t, "since="+tt.since, nil)
			h := c.expect("history")
			if h.Complete == nil || *h.Complete != tt.complete {
				t.Fatalf("complete = %v, want %v", h.Complete, tt.complete)
			}
			var got []string
			for _, m := range h.Messages {
				got = append(got, m.Body)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("messages %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRoomsAreIsolated(t *testing.T) {
	s := startServer(t, nil)
	a := s.dial(t, "room=alpha", nil)
	a.expect("history")
	a.expect("online")
	b := s.dial(t, "room=beta", nil)
	b.expect("history")
	b.expect("online")
	a.send(map[string]any{"body": "only alpha"})
	if m := a.expect("message"); m.Room != "alpha" {
		t.Fatalf("room = %q", m.Room)
	}
	b.send(map[string]any{"body": "only beta"})
	if m := b.expect("message"); m.Body != "only beta" {
		t.Fatalf("beta got %s (alpha's message leaked?)", m.raw)
	}
	c := s.dial(t, "room=beta", nil)
	if h := c.expect("history"); len(h.Messages) != 1 || h.Messages[0].Body != "only beta" {
		t.Fatalf("beta history: %s", h.raw)
	}
}

func TestBadInputGetsErrorAndConnectionStays(t *testing.T) {
	s := startServer(t, nil)
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	tests := []struct {
		name string
		mt   int
		data []byte
		code string
	}{
		{"not JSON", websocket.TextMessage, []byte("hello"), pipeline.CodeInvalidJSON},
		{"body of wrong type", websocket.TextMessage, []byte(`{"body": 5}`), pipeline.CodeInvalidJSON},
		{"JSON array", websocket.TextMessage, []byte(`[1,2]`), pipeline.CodeInvalidJSON},
		{"invalid UTF-8", websocket.TextMessage, []byte("{\"body\": \"\xff\xfe\"}"), pipeline.CodeInvalidJSON},
		{"binary frame", websocket.BinaryMessage, []byte{1, 2, 3}, pipeline.CodeInvalidJSON},
		{"empty body", websocket.TextMessage, []byte(`{"body": ""}`), pipeline.CodeEmpty},
		{"blank body", websocket.TextMessage, []byte(`{"body": "  \n\t "}`), pipeline.CodeEmpty},
		{"missing body", websocket.TextMessage, []byte(`{}`), pipeline.CodeEmpty},
		{"too long", websocket.TextMessage, []byte(`{"body": "` + strings.Repeat("字", 2001) + `"}`), pipeline.CodeTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.sendRaw(tt.mt, tt.data)
			e := c.expect("error")
			if e.Code != tt.code || e.Reason == "" {
				t.Fatalf("error frame %s, want code %s", e.raw, tt.code)
			}
		})
	}
	c.send(map[string]any{"body": "still here"})
	if m := c.expect("message"); m.Body != "still here" {
		t.Fatalf("after errors: %s", m.raw)
	}
}

func TestBinaryFrameCloses1003WhenConfigured(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.WebSocket.BinaryFrames = "close" })
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	c.sendRaw(websocket.BinaryMessage, []byte{0xde, 0xad})
	if code := c.closeCode(); code != websocket.CloseUnsupportedData {
		t.Fatalf("close code %d, want 1003", code)
	}
}

func TestRateLimited(t *testing.T) {
	s := startServer(t, nil) // default: 5/s, burst 10
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	limited := 0
	for i := 0; i < 15; i++ {
		c.send(map[string]any{"body": fmt.Sprint(i)})
	}
	for i := 0; i < 15; i++ {
		f := c.read()
		if f.Type == "error" && f.Code == pipeline.CodeRateLimited {
			limited++
		}
	}
	if limited < 4 || limited > 5 {
		t.Fatalf("%d of 15 rate limited, want 4-5 (burst 10 at 5/s)", limited)
	}
}

func TestHugeFrameCloses1009(t *testing.T) {
	s := startServer(t, nil)
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	c.sendRaw(websocket.TextMessage, []byte(`{"body":"`+strings.Repeat("x", 9000)+`"}`))
	if code := c.closeCode(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
}

func TestInvalidRoomRefused(t *testing.T) {
	s := startServer(t, nil)
	for _, room := range []string{"a/b", strings.Repeat("x", 65), "sp%20ace", "%C3%A9"} {
		_, resp, err := websocket.DefaultDialer.Dial(s.wsURL("room="+room), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("room %q: err=%v resp=%v, want 400", room, err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}
		r, err := http.Get(s.URL + "/?room=" + room)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusBadRequest {
			t.Errorf("page room %q: %d", room, r.StatusCode)
		}
	}
	r, err := http.Get(s.URL + "/api/rooms/a.b-c_D/history")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("valid room name refused: %d", r.StatusCode)
	}
}

func TestOriginCheck(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		origin  string
		ok      bool
	}{
		{"same origin", nil, "SELF", true},
		{"cross site refused", nil, "http://evil.example", false},
		{"no origin (non-browser)", nil, "", true},
		{"listed", []string{"https://chat.example"}, "https://chat.example", true},
		{"not listed", []string{"https://chat.example"}, "https://evil.example", false},
		{"any", []string{"*"}, "http://evil.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, func(c *config.Config) { c.Server.AllowedOrigins = tt.allowed })
			h := http.Header{}
			switch tt.origin {
			case "SELF":
				h.Set("Origin", s.URL)
			case "":
			default:
				h.Set("Origin", tt.origin)
			}
			conn, resp, err := websocket.DefaultDialer.Dial(s.wsURL(""), h)
			if conn != nil {
				conn.Close()
			}
			if resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("dial err = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok && resp.StatusCode != http.StatusForbidden {
				t.Fatalf("status %d, want 403", resp.StatusCode)
			}
		})
	}
}

// A client that never reads is cut off once its queue fills; a reading
// client in the same room gets every message, in order.
func TestSlowClientDisconnectedOthersUnaffected(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		fastLimits(c)
		c.WebSocket.SendQueue = 64
	})
	stuck := s.dial(t, "", nil) // never reads after this
	reader := s.dial(t, "", nil)
	reader.expect("history")
	reader.expect("online")
	sender := s.dial(t, "", nil)
	sender.expect("history")
	reader.expect("online")
	var echoed atomic.Int64 // copies of its own messages the sender has read
	drainErr := make(chan error, 1)
	go func() {
		for {
			_ = sender.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := sender.conn.ReadMessage()
			if err != nil {
				drainErr <- err
				return
			}
			if strings.Contains(string(b), `"type":"message"`) {
				echoed.Add(1)
			}
		}
	}()

	// 3000 messages of ~6 KB: far more than the stuck client's socket
	// buffers and queue can hold.
	const n = 3000
	pad := strings.Repeat("字", 1990)
	done := make(chan error, 1)
	var progress atomic.Int64 // messages the reader has seen
	got := 0
	go func() {
		for got < n {
			_ = reader.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := reader.conn.ReadMessage()
			if err != nil {
				done <- err
				return
			}
			if strings.Contains(string(b), `"type":"message"`) {
				if !strings.Contains(string(b), fmt.Sprintf(`"body":"%d %s"`, got, pad)) {
					done <- fmt.Errorf("message %d out of order: %.60s", got, b)
					return
				}
				got++
				progress.Store(int64(got))
			}
		}
		done <- nil
	}()
	for i := 0; i < n; i++ {
		// Stay within 32 messages of both readers, so only the stuck client
		// falls behind (under -race the test's own readers are slow).
		for int64(i)-min(progress.Load(), echoed.Load()) > 32 {
			select {
			case err := <-done:
				t.Fatalf("reader stopped after %d messages: %v", progress.Load(), err)
			case err := <-drainErr:
				t.Fatalf("sender's reader stopped after %d messages: %v", echoed.Load(), err)
			case <-time.After(time.Millisecond):
			}
		}
		if err := sender.conn.WriteJSON(map[string]any{"body": fmt.Sprintf("%d %s", i, pad)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("reader after %d messages: %v", got, err)
	}
	// The stuck client was dropped: reading now drains what the kernel
	// buffered, then the close.
	// 1006 or -1: the connection was cut before (or while) the close
	// frame could be written — the server gives a stuck client only a
	// short window for it.
	switch code := stuck.closeCode(); code {
	case websocket.ClosePolicyViolation, websocket.CloseAbnormalClosure, -1:
	default:
		t.Fatalf("stuck client close code %d, want 1008 (or a cut connection)", code)
	}
	if v := counterValue(t, s, `chatserver_dropped_clients_total{reason="slow"}`); v != 1 {
		t.Fatalf("dropped slow = %v, want 1", v)
	}
}

type panicPlugin struct{}

func (panicPlugin) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.In.Body == "boom" {
			panic("test plugin exploded")
		}
		return next.Handle(ctx, ev)
	})
}

func init() {
	pipeline.Register(pipeline.Spec{
		Name: "test_panic", Description: "panics on the body 'boom' (tests only)",
		New: func(any, pipeline.Deps) (pipeline.Plugin, error) { return panicPlugin{}, nil },
	})
}

func TestPanickingPluginCostsOneEvent(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Pipelines[pipeline.Message] = append([]pipeline.Step{{Use: "test_panic"}}, c.Pipelines[pipeline.Message]...)
	})
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	other := s.dial(t, "", nil)
	other.expect("history")
	c.expect("online")
	c.send(map[string]any{"body": "boom"})
	if e := c.expect("error"); e.Code != pipeline.CodeInternal {
		t.Fatalf("got %s", e.raw)
	}
	c.send(map[string]any{"body": "after"})
	if m := c.expect("message"); m.Body != "after" {
		t.Fatalf("got %s", m.raw)
	}
	if m := other.next("message"); m.Body != "after" {
		t.Fatalf("other got %s", m.raw)
	}
}

func TestShutdownClosesClientsWith1001(t *testing.T) {
	s := startServer(t, nil)
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Shutdown(ctx) }()
	if code := c.closeCode(); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	if err := <-errc; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// New connections are refused after shutdown.
	if _, resp, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil); err == nil {
		t.Fatal("dial after shutdown succeeded")
	} else if resp != nil {
		resp.Body.Close()
	}
}

func TestHTTPRoutes(t *testing.T) {
	s := startServer(t, nil)
	c := s.dialNamed(t, "", b64("<img src=x onerror=alert(1)>"))
	c.expect("history")
	c.expect("online")
	c.send(map[string]any{"body": "<script>alert(1)</script>"})
	c.expect("message")

	tests := []struct {
		path   string
		status int
		want   []string
		reject []string
	}{
		{"/healthz", 200, []string{"ok"}, nil},
		{"/readyz", 200, []string{`"store":"ok"`}, nil},
		{"/", 200, []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x"}, []string{"<script>alert(1)", "<img src=x"}},
		{"/api/rooms/lobby/members", 200, []string{`"username":"\u003cimg src=x onerror=alert(1)\u003e"`}, nil},
		{"/api/rooms/lobby/history", 200, []string{`"body":"\u003cscript\u003ealert(1)\u003c/script\u003e"`}, nil},
		{"/api/rooms/lobby/history?limit=x", 400, nil, nil},
		{"/api/rooms/no%20pe/members", 400, nil, nil},
		{"/metrics", 200, []string{"chatserver_connections 1", `chatserver_events_in_total{kind="message",outcome="ok"} 1`, "chatserver_plugin_step_seconds"}, nil},
		{"/static/chat.css", 200, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(s.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("missing %q in %.400s", w, b)
				}
			}
			for _, r := range tt.reject {
				if strings.Contains(string(b), r) {
					t.Errorf("found unescaped %q", r)
				}
			}
		})
	}
}

// counterValue reads one sample from /metrics.
func counterValue(t *testing.T, s *testServer, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, series+" "), &v)
			return v
		}
	}
	return 0
}

// A client that stopped reading, whose writer is stuck in a full socket,
// cannot hold shutdown past its budget: the server cuts it and Shutdown
// still succeeds (serve exits 0).
func TestShutdownCutsAClientThatStoppedReading(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		fastLimits(c)
		c.WebSocket.SendQueue = 100000 // never dropped as slow: stuck in a write instead
		c.WebSocket.WriteTimeout = 30 * time.Second
	})
	stuck := s.dial(t, "", nil) // never reads
	sender := s.dial(t, "", nil)
	sender.expect("history")
	sender.expect("online")
	var echoed atomic.Int64
	go func() {
		for {
			_ = sender.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, b, err := sender.conn.ReadMessage()
			if err != nil {
				return
			}
			if strings.Contains(string(b), `"type":"message"`) {
				echoed.Add(1)
			}
		}
	}()
	// ~18 MB for the stuck client: far more than its socket buffers hold.
	const n = 3000
	pad := strings.Repeat("字", 1990)
	for i := 0; i < n; i++ {
		if err := sender.conn.WriteJSON(map[string]any{"body": fmt.Sprintf("%d %s", i, pad)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for echoed.Load() < n { // every message was fanned out, so the stuck writer is blocked
		if time.Now().After(deadline) {
			t.Fatalf("sender got %d of %d echoes", echoed.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = stuck

	const budget = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a stuck client: %v (after %v)", err, time.Since(start))
	}
	if took := time.Since(start); took >= budget {
		t.Fatalf("shutdown took %v, budget %v", took, budget)
	}
}

// One corrupted entry in a shared store must not cost the room its history.
func TestCorruptHistoryEntryIsSkipped(t *testing.T) {
	store := history.NewMemory(100)
	ctx := context.Background()
	_ = store.Append(ctx, "lobby", "a", []byte(`{"id":"a","type":"message","room":"lobby","body":"before"}`))
	_ = store.Append(ctx, "lobby", "x", []byte(`{"id":"x","type":"mess`)) // truncated
	_ = store.Append(ctx, "lobby", "b", []byte(`{"id":"b","type":"message","room":"lobby","body":"after"}`))
	s := startServerWith(t, nil, server.Options{Store: store})

	c := s.dial(t, "", nil)
	h := c.expect("history")
	if len(h.Messages) != 2 || h.Messages[0].Body != "before" || h.Messages[1].Body != "after" {
		t.Fatalf("history frame: %s", h.raw)
	}
	resp, err := http.Get(s.URL + "/api/rooms/lobby/history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"after"`) || strings.Contains(string(b), `"id":"x"`) {
		t.Fatalf("API: %d %s", resp.StatusCode, b)
	}
}

// Load balancers and monitors probe with HEAD.
func TestHeadWorksWhereGetDoes(t *testing.T) {
	s := startServer(t, nil)
	for _, path := range []string{"/", "/healthz", "/readyz", "/api/rooms/lobby/history"} {
		resp, err := http.Head(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s: %d", path, resp.StatusCode)
		}
	}
}

// A request to the WebSocket endpoint that is not a handshake (a plain GET or
// HEAD: a browser tab, a monitor) is answered 400, with our own message: it
// is refused before it is admitted, so it costs no limit slot and opens no
// room (gorilla's Upgrade, which refused it before, comes after both).
func TestPlainRequestToWebSocketEndpoint(t *testing.T) {
	s := startServer(t, nil)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, err := http.NewRequest(method, s.URL+"/chatsocket?room=probe", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", method, resp.StatusCode)
		}
		if method == http.MethodGet && !strings.Contains(string(body), "WebSocket handshake") {
			t.Errorf("GET: body %q does not say what the endpoint wants", body)
		}
	}
}

// chatserver_rooms follows the rooms with members on this node.
func TestRoomsGauge(t *testing.T) {
	s := startServer(t, nil)
	a := joined(t, s, "room=a")
	joined(t, s, "room=b")
	if n := counterValue(t, s, "chatserver_rooms"); n != 2 {
		t.Fatalf("chatserver_rooms %v with two rooms, want 2", n)
	}
	a.conn.Close()
	testutil.Eventually(t, 5*time.Second, "chatserver_rooms 1 after room a emptied", func() bool {
		return counterValue(t, s, "chatserver_rooms") == 1
	})
}
