package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/client"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// A frame over the limit fails with too_big, locally (MaxFrameBytes) or,
// past a client limit larger than the server's, on the server's 1009 close;
// either way later sends go through. Before, the client wrote the same frame
// again on every connection: an endless 1009 loop in which every later Send
// waited.
func TestOversizedFrame(t *testing.T) {
	url := startServer(t) // websocket.max_message_bytes: 8192
	big := strings.Repeat("x", 9000)
	for _, tc := range []struct {
		name  string
		limit int
	}{
		{"checked by the client", 0},
		{"refused by the server", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := dial(t, url, "go-big", "alice", func(o *client.Options) { o.MaxFrameBytes = tc.limit })
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_, err := a.Send(ctx, client.Message{Body: big})
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != "too_big" {
				t.Fatalf("Send(9000 bytes) = %v, want an *Error too_big", err)
			}
			if ack := send(t, a, client.Message{Body: "small"}); ack.ID == "" {
				t.Fatalf("the next send: %+v", ack)
			}
		})
	}
}

// Close called from OnDisconnect and from OnConnect returns (it waited for
// the goroutine that ran the callback: a deadlock).
func TestCloseFromCallbacks(t *testing.T) {
	url := startServer(t)
	for _, which := range []string{"OnDisconnect", "OnConnect"} {
		t.Run(which, func(t *testing.T) {
			p := testutil.NewCutProxy(t, strings.TrimPrefix(url, "http://"))
			var self atomic.Pointer[client.Client]
			closed := make(chan struct{})
			closeSelf := func() {
				if c := self.Load(); c != nil {
					_ = c.Close()
					close(closed)
					self.Store(nil)
				}
			}
			c := dial(t, "http://"+p.Addr(), "go-cb", "alice", func(o *client.Options) {
				if which == "OnDisconnect" {
					o.OnDisconnect = func(client.DisconnectInfo) { closeSelf() }
				} else {
					o.OnConnect = func(client.ConnectInfo) { closeSelf() }
				}
			})
			self.Store(c)
			p.Cut()
			p.Resume()
			select {
			case <-closed:
			case <-time.After(wait):
				t.Fatalf("Close from %s did not return", which)
			}
			if _, err := c.Send(context.Background(), client.Message{Body: "late"}); !errors.Is(err, client.ErrClosed) {
				t.Errorf("Send after Close = %v", err)
			}
		})
	}
}

// Events nobody reads holds EventBuffer events, the newest; the rest are
// counted as dropped. A negative EventBuffer discards them all.
func TestEventBuffer(t *testing.T) {
	url := startServer(t)
	const n, buffer = 30, 10
	a := dial(t, url, "go-buffer", "alice", func(o *client.Options) { o.EventBuffer = buffer })
	var last client.Ack
	for i := range n {
		last = send(t, a, client.Message{Body: fmt.Sprintf("m%02d", i)})
	}
	// Its own last message arrived (LastID moves when it is queued).
	testutil.Eventually(t, wait, "alice's last message", func() bool { return a.LastID() == last.ID })
	// history, 30 acks and 30 messages (and alice's online) went into 10 places.
	if d := a.DroppedEvents(); d < 2*n+1-buffer-1 {
		t.Fatalf("DroppedEvents = %d, want at least %d", d, 2*n+1-buffer-1)
	}
	received := 0
	for ev := range a.Events() {
		received++
		if ev.Type == client.TypeMessage && ev.ID == last.ID {
			break
		}
	}
	if received > buffer+1 { // the queue, and the one the pump holds
		t.Errorf("%d events waited in Events, want at most %d", received, buffer+1)
	}

	quiet := dial(t, url, "go-buffer", "bob", func(o *client.Options) { o.EventBuffer = -1 })
	send(t, quiet, client.Message{Body: "from a client that does not listen"})
	_ = quiet.Close()
	for ev := range quiet.Events() {
		t.Errorf("an event with EventBuffer -1: %+v", ev)
	}
	if d := quiet.DroppedEvents(); d != 0 {
		t.Errorf("DroppedEvents = %d for discarded events, want 0", d)
	}
}

// The backoff grows to its cap while every connection ends right after it
// became ready (before, each history frame reset it: reconnects at
// [0, MinBackoff) forever), and it starts again from MinBackoff after a
// connection that stayed up for MaxBackoff. The jitter draws the ceiling.
func TestBackoffGrowsAndResets(t *testing.T) {
	defer client.SetJitter(func(n int64) int64 { return n - 1 })()
	url := startServer(t)
	p := testutil.NewCutProxy(t, strings.TrimPrefix(url, "http://"))
	var mu sync.Mutex
	var delays []time.Duration
	delaysNow := func() []time.Duration { mu.Lock(); defer mu.Unlock(); return append([]time.Duration(nil), delays...) }
	const minB, maxB = 10 * time.Millisecond, 80 * time.Millisecond
	c := dial(t, "http://"+p.Addr(), "go-backoff", "alice", func(o *client.Options) {
		o.MinBackoff, o.MaxBackoff = minB, maxB
		o.OnDisconnect = func(d client.DisconnectInfo) { mu.Lock(); delays = append(delays, d.Delay); mu.Unlock() }
	})
	p.SetFlaky([]byte(`"type":"history"`))
	p.Cut()
	p.Resume()
	testutil.Eventually(t, wait, "six reconnects", func() bool { return len(delaysNow()) >= 6 })
	p.SetFlaky(nil)
	got := delaysNow()[:6]
	want := []time.Duration{minB, 2 * minB, 4 * minB, maxB, maxB, maxB}
	for i := range want {
		want[i]--
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	// A connection that stays up for 2×MaxBackoff resets it; one accepted
	// while the proxy was still flaky ends meanwhile, and we wait again.
	for {
		testutil.Eventually(t, wait, "a connection", c.Connected)
		m := len(delaysNow())
		time.Sleep(2 * maxB)
		if c.Connected() && len(delaysNow()) == m {
			break
		}
	}
	n := len(delaysNow())
	p.Cut()
	p.Resume()
	testutil.Eventually(t, wait, "the next disconnect", func() bool { return len(delaysNow()) > n })
	if d := delaysNow()[n]; d != minB-1 {
		t.Errorf("delay after a lasting connection: %v, want %v", d, minB-1)
	}
}

// A refused join (1008 before the history frame) is final: a fixed token is
// not retried, a TokenFunc is asked MaxRefusals times; pending sends return
// ErrClosed, Err says why. Dial on a refused join returns the server's
// error frame as an *Error "rejected". Before, the client reconnected
// forever and its sends waited.
func TestRefusedJoinIsFinal(t *testing.T) {
	key := strings.Repeat("k", 32)
	url := startServer(t, func(cfg *config.Config) {
		id := pipeline.Step{Use: "username", With: map[string]any{"mode": "jwt", "jwt_key": key}}
		cfg.Pipelines[pipeline.Join] = []pipeline.Step{id, {Use: "broadcast"}}
		cfg.Pipelines[pipeline.Message] = []pipeline.Step{id, {Use: "validate"}, {Use: "history"}, {Use: "broadcast"}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := client.Dial(ctx, url, client.Options{Room: "go-refused", Token: "not-a-jwt"})
	var re *client.Error
	if !errors.As(err, &re) || re.Code != "rejected" || re.Reason == "" {
		t.Fatalf("Dial with a bad token = %#v, want an *Error rejected with the server's reason", err)
	}

	p := testutil.NewCutProxy(t, strings.TrimPrefix(url, "http://"))
	var calls atomic.Int32
	c := dial(t, "http://"+p.Addr(), "go-refused", "", func(o *client.Options) {
		o.Header = nil
		o.TokenFunc = func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return jwtFor(t, key, "erin", time.Hour), nil
			}
			return "revoked", nil
		}
	})
	rc := record(c)
	p.Cut()
	sent := make(chan error, 1)
	go func() { _, err := c.Send(ctx, client.Message{Body: "while refused"}); sent <- err }()
	p.Resume()
	closedWithin(t, rc) // Events closes after the final close
	if err := <-sent; !errors.Is(err, client.ErrClosed) {
		t.Errorf("the pending send = %v, want ErrClosed", err)
	}
	var ce *client.CloseError
	if err := c.Err(); !errors.As(err, &ce) || ce.Code != 1008 {
		t.Fatalf("Err() = %v, want a CloseError 1008", err)
	}
	if n := calls.Load(); n != 1+3 {
		t.Errorf("TokenFunc called %d times, want 1 + MaxRefusals (3)", n)
	}

	// A fixed token that expired while the client was cut off: refused
	// once, for good.
	fixed := dial(t, "http://"+p.Addr(), "go-refused", "", func(o *client.Options) {
		o.Header, o.Token = nil, jwtFor(t, key, "dave", 3*time.Second)
	})
	rf := record(fixed)
	p.Cut()
	time.Sleep(4500 * time.Millisecond) // past the token's exp (whole seconds)
	p.Resume()
	closedWithin(t, rf)
	if err := fixed.Err(); !errors.As(err, &ce) || ce.Code != 1008 {
		t.Fatalf("fixed token: Err() = %v, want a CloseError 1008", err)
	}
}

// LastID, the next ?since=, moves on what the server keeps: a member's
// message, an API post (client_id 0, any name), not a direct message, a
// typing signal (a kind the history frame never showed) or a system reply;
// a delete of it moves it back to the message before. The reconnect after
// that finds it in history: complete, no false gap.
func TestLastIDFollowsKeptEnvelopes(t *testing.T) {
	key := strings.Repeat("a", 40)
	url := startServer(t, func(cfg *config.Config) {
		cfg.API.Keys = []string{key}
		msg := cfg.Pipelines[pipeline.Message]
		i := slices.IndexFunc(msg, func(s pipeline.Step) bool { return s.Use == "history" })
		cfg.Pipelines[pipeline.Message] = slices.Insert(msg, i, pipeline.Step{Use: "commands"}) // for /who
	})
	api := func(method, path, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, url+"/api/rooms/go-lastid"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
	p := testutil.NewCutProxy(t, strings.TrimPrefix(url, "http://"))
	var mu sync.Mutex
	var connects []client.ConnectInfo
	a := dial(t, "http://"+p.Addr(), "go-lastid", "alice", func(o *client.Options) {
		o.OnConnect = func(i client.ConnectInfo) { mu.Lock(); connects = append(connects, i); mu.Unlock() }
	})
	ra := record(a)
	b := dial(t, url, "go-lastid", "bob")

	first := send(t, b, client.Message{Body: "first"})
	testutil.Eventually(t, wait, "bob's message", func() bool { return a.LastID() == first.ID })
	if r := api(http.MethodPost, "/messages", `{"username": "backend", "body": "from the API"}`); r.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d", r.StatusCode)
	}
	testutil.Eventually(t, wait, "the API post", ra.has("from the API"))
	posted := ra.of(client.TypeMessage)[1]
	if a.LastID() != posted.ID {
		t.Errorf("LastID %q after an API post, want its id %q", a.LastID(), posted.ID)
	}
	send(t, b, client.Message{Type: "typing"})
	send(t, b, client.Message{Body: "psst", To: "alice"})
	send(t, a, client.Message{Body: "/who"}) // a system reply to alice
	testutil.Eventually(t, wait, "the rest", func() bool {
		return len(ra.of("typing")) == 1 && len(ra.of(client.TypeMessage)) >= 4
	})
	if a.LastID() != posted.ID {
		t.Fatalf("LastID %q after typing, a direct message and a system reply; want the API post's %q", a.LastID(), posted.ID)
	}
	if r := api(http.MethodDelete, "/messages/"+posted.ID, ""); r.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", r.StatusCode)
	}
	testutil.Eventually(t, wait, "the delete", func() bool { return len(ra.of(client.TypeDelete)) == 1 })
	if a.LastID() != first.ID {
		t.Errorf("LastID %q after its delete, want the message before, %q", a.LastID(), first.ID)
	}
	p.Cut()
	p.Resume()
	testutil.Eventually(t, wait, "the reconnect", func() bool { mu.Lock(); defer mu.Unlock(); return len(connects) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if !connects[1].Recovered || !connects[1].Complete {
		t.Errorf("reconnect: %+v, want recovered and complete", connects[1])
	}
}

// closedWithin waits for r's Events to close (a final close), or fails.
func closedWithin(t *testing.T, r *recorder) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(wait):
		t.Fatalf("the client did not stop within %v", wait)
	}
}

// lossyConn drops the first ack the server sends and closes the connection
// there: the frame's ack is lost with the connection. (Server frames are
// unmasked; an ack is a small text frame: 0x81, its length, then the JSON.)
type lossyConn struct {
	net.Conn
	dropped *atomic.Bool
}

func (c *lossyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.dropped.Load() {
		if i := bytes.Index(p[:n], []byte(`{"type":"ack"`)); i >= 2 && p[i-2] == 0x81 && p[i-1] < 126 {
			c.dropped.Store(true)
			_ = c.Close()
			if i == 2 {
				return 0, io.ErrUnexpectedEOF
			}
			return i - 2, nil
		}
	}
	return n, err
}

// The first ack is lost and the connection ends: the frame is written again
// on the next connection, same ref, and the server recognises it by the
// sender's name — the cookie's, or, for a guest, Options.Username, which
// goes with every frame, the resend too: the history holds it once.
func TestLostAckKeptOnce(t *testing.T) {
	url := startServer(t)
	for _, tc := range []struct {
		name string
		opts func(*client.Options)
	}{
		{"named by its cookie", func(*client.Options) {}},
		{"a guest with Username", func(o *client.Options) { o.Header, o.Username = nil, "gus" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := "go-lossy-" + strings.ReplaceAll(tc.name, " ", "-")
			var dropped atomic.Bool
			d := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &lossyConn{Conn: conn, dropped: &dropped}, nil
			}}
			c := dial(t, url, room, "lena", func(o *client.Options) { o.Dialer = d; tc.opts(o) })
			ack := send(t, c, client.Message{Body: "only once"})
			if !dropped.Load() {
				t.Fatal("no ack was dropped: the test proves nothing")
			}
			resp, err := http.Get(url + "/api/rooms/" + room + "/history")
			if err != nil {
				t.Fatal(err)
			}
			var hist []client.Event
			err = json.NewDecoder(resp.Body).Decode(&hist)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) != 1 || hist[0].Body != "only once" || hist[0].ID != ack.ID {
				t.Fatalf("history %+v, want the message once, with the acked id %s", hist, ack.ID)
			}
		})
	}
}
