package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/client"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
	_ "github.com/chatserver/chatserver/pkg/plugins"
	"github.com/chatserver/chatserver/pkg/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait of these tests.
const wait = 10 * time.Second

// startServer runs a real server (the embedded default config, with room for
// bursts) on a loopback port until the test ends.
func startServer(t *testing.T, mutate ...func(*config.Config)) string {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mutate {
		m(cfg)
	}
	for i, st := range cfg.Pipelines[pipeline.Message] {
		if st.Use == "ratelimit" {
			cfg.Pipelines[pipeline.Message][i].With = map[string]any{"rate": 100000, "burst": 100000}
		}
	}
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		ts.Close()
	})
	return ts.URL
}

// dial connects name to room with fast reconnects; closed when the test ends.
func dial(t *testing.T, url, room, name string, opts ...func(*client.Options)) *client.Client {
	t.Helper()
	o := client.Options{Room: room, Header: client.UsernameCookie(name), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := client.Dial(ctx, url, o)
	if err != nil {
		t.Fatalf("dial %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// recorder collects a client's events from its Events channel.
type recorder struct {
	mu     sync.Mutex
	events []client.Event
	done   chan struct{}
}

func record(c *client.Client) *recorder {
	r := &recorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *recorder) of(typ string) []client.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []client.Event
	for _, ev := range r.events {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func (r *recorder) bodies() []string {
	var out []string
	for _, ev := range r.of(client.TypeMessage) {
		out = append(out, ev.Body)
	}
	return out
}

func (r *recorder) has(body string) func() bool {
	return func() bool {
		for _, b := range r.bodies() {
			if b == body {
				return true
			}
		}
		return false
	}
}

func send(t *testing.T, c *client.Client, m client.Message) client.Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ack, err := c.Send(ctx, m)
	if err != nil {
		t.Fatalf("send %+v: %v", m, err)
	}
	return ack
}

func TestMessagesPresenceAndAcks(t *testing.T) {
	url := startServer(t)
	a := dial(t, url, "go-basic", "alice")
	ra := record(a)
	b := dial(t, url+"/chatsocket", "go-basic", "bob")
	rb := record(b)
	testutil.Eventually(t, wait, "bob's online in A", func() bool {
		for _, ev := range ra.of(client.TypeOnline) {
			if ev.Username == "bob" {
				return true
			}
		}
		return false
	})

	ack := send(t, a, client.Message{Body: "hello from alice", Ref: "r-1"})
	if ack.Ref != "r-1" || ack.ID == "" {
		t.Fatalf("ack = %+v", ack)
	}
	testutil.Eventually(t, wait, "the message in B", rb.has("hello from alice"))
	m := rb.of(client.TypeMessage)[0]
	if m.ID != ack.ID || m.Username != "alice" || m.Room != "go-basic" || m.FromHistory || !strings.Contains(m.HTML, `class="message"`) {
		t.Fatalf("B got %+v, want alice's message with the acked id %s", m, ack.ID)
	}
	if again := send(t, a, client.Message{Body: "hello from alice", Ref: "r-1"}); again.ID != ack.ID {
		t.Errorf("resent ref acked with id %q, want the first %q", again.ID, ack.ID)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	members, err := b.Members(ctx)
	if err != nil || len(members) != 2 {
		t.Fatalf("members = %+v, %v; want alice and bob", members, err)
	}

	for _, tc := range []struct {
		name string
		msg  client.Message
		code string
	}{
		{"blank body", client.Message{Body: "  "}, "empty"},
		{"unknown kind", client.Message{Type: "no_such_kind", Body: "x"}, "unknown_type"},
		{"nobody of that name", client.Message{Body: "psst", To: "nobody"}, "no_recipient"},
		{"data not an object", client.Message{Body: "x", Data: []byte(`[1]`)}, "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Send(ctx, tc.msg)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != tc.code || ce.Ref == "" {
				t.Fatalf("Send(%+v) = %v; want an *Error with code %s and the ref", tc.msg, err, tc.code)
			}
		})
	}

	// A third member gets the message from the history frame, marked so.
	c := dial(t, url, "go-basic", "carol")
	rc := record(c)
	testutil.Eventually(t, wait, "carol's history", func() bool { return len(rc.of(client.TypeHistory)) == 1 })
	if got := rc.bodies(); len(got) != 1 || got[0] != "hello from alice" || !rc.of(client.TypeMessage)[0].FromHistory {
		t.Fatalf("carol's messages: %+v", rc.of(client.TypeMessage))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	<-rb.done // Events is closed by Close
	if _, err := b.Send(ctx, client.Message{Body: "late"}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

func TestKindsDataAndDirectMessages(t *testing.T) {
	url := startServer(t)
	a := dial(t, url, "go-kinds", "alice")
	rb := record(dial(t, url, "go-kinds", "bob"))
	rc := record(dial(t, url, "go-kinds", "carol"))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	testutil.Eventually(t, wait, "three members", func() bool { ms, _ := a.Members(ctx); return len(ms) == 3 })

	send(t, a, client.Message{Type: "typing"})
	testutil.Eventually(t, wait, "typing in B", func() bool { return len(rb.of("typing")) == 1 })
	if ty := rb.of("typing")[0]; ty.Username != "alice" || ty.Body != "" {
		t.Errorf("typing envelope %+v", ty)
	}
	send(t, a, client.Message{Body: "with data", Data: []byte(`{"n":1}`)})
	send(t, a, client.Message{Body: "psst", To: "bob"})
	send(t, a, client.Message{Body: "public"})
	testutil.Eventually(t, wait, "everything in B", rb.has("public"))
	testutil.Eventually(t, wait, "the public one in C", rc.has("public"))
	if got := strings.Join(rb.bodies(), "|"); got != "with data|psst|public" {
		t.Errorf("B got %q", got)
	}
	if got := strings.Join(rc.bodies(), "|"); got != "with data|public" {
		t.Errorf("C got %q: the direct message to bob leaked", got)
	}
	for _, m := range rb.of(client.TypeMessage) {
		switch m.Body {
		case "with data":
			if string(m.Data) != `{"n":1}` {
				t.Errorf("data = %s", m.Data)
			}
		case "psst":
			if m.To != "bob" {
				t.Errorf("to = %q", m.To)
			}
		}
	}
}

// A proxy cuts every connection while alice sends: every Send returns its
// ack (frames cut before their ack are written again, same ref, and the
// server does not deliver them twice), and bob, cut too, recovers with
// ?since=: both end with every message once, in order.
func TestCutWhileSending(t *testing.T) {
	url := startServer(t)
	p := testutil.NewCutProxy(t, strings.TrimPrefix(url, "http://"))
	var mu sync.Mutex
	var connects []client.ConnectInfo
	var disconnects []client.DisconnectInfo
	a := dial(t, "http://"+p.Addr(), "go-cut", "alice")
	ra := record(a)
	b := dial(t, "ws://"+p.Addr(), "go-cut", "bob", func(o *client.Options) {
		o.OnConnect = func(i client.ConnectInfo) { mu.Lock(); connects = append(connects, i); mu.Unlock() }
		o.OnDisconnect = func(i client.DisconnectInfo) { mu.Lock(); disconnects = append(disconnects, i); mu.Unlock() }
	})
	rb := record(b)

	const n = 40
	want := make([]string, n)
	acks := make([]client.Ack, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	for i := range n {
		want[i] = fmt.Sprintf("m%02d", i)
		if i == n/2 {
			p.Cut()
			time.AfterFunc(50*time.Millisecond, p.Resume)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			acks[i], errs[i] = a.Send(ctx, client.Message{Body: want[i], Ref: want[i]})
		}()
		time.Sleep(time.Millisecond) // spread the sends over the cut
	}
	wg.Wait()
	ids := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		ids[acks[i].ID] = true
	}
	if len(ids) != n {
		t.Fatalf("%d distinct ids for %d messages", len(ids), n)
	}
	// The sends ran concurrently, so the server's order is theirs; both
	// members see that one order, each message once. A duplicate would come
	// before a message sent after all of them: compare once that one is in.
	send(t, a, client.Message{Body: "barrier"})
	for name, r := range map[string]*recorder{"alice": ra, "bob": rb} {
		testutil.Eventually(t, wait, name+" to have every message", r.has("barrier"))
		got := r.bodies()
		got = got[:len(got)-1]
		sorted := slices.Sorted(slices.Values(got))
		if strings.Join(sorted, ",") != strings.Join(want, ",") {
			t.Errorf("%s got %d messages:\n%v\nwant each of %v once", name, len(got), got, want)
		}
	}
	if a, b := strings.Join(ra.bodies(), ","), strings.Join(rb.bodies(), ","); a != b {
		t.Errorf("alice and bob saw different orders:\n%s\n%s", a, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(connects) < 2 || !connects[len(connects)-1].Recovered || !connects[len(connects)-1].Complete {
		t.Errorf("bob's connects: %+v; want a recovered, complete one after the cut", connects)
	}
	if len(disconnects) == 0 || !disconnects[0].Reconnect {
		t.Errorf("bob's disconnects: %+v", disconnects)
	}
}

func TestDialFailsAndCloseIsFinal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// Nothing listens there: Dial reports the first attempt's error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if _, err := client.Dial(ctx, "http://"+addr, client.Options{}); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
	if _, err := client.Dial(ctx, "ftp://"+addr, client.Options{}); err == nil {
		t.Fatal("Dial with an ftp URL succeeded")
	}
	// An invalid room is refused at the handshake.
	url := startServer(t)
	_, err = client.Dial(ctx, url, client.Options{Room: "no spaces"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "http_400" {
		t.Fatalf("Dial to an invalid room = %v, want http_400", err)
	}
}

// The server API: a message posted by a backend reaches the member, a
// delete reaches it as a delete event, and a kick (4001) ends the client for
// good: Err says so, Events closes after what came before it.
func TestServerAPIDeleteAndKick(t *testing.T) {
	key := strings.Repeat("a", 40)
	url := startServer(t, func(cfg *config.Config) { cfg.API.Keys = []string{key} })
	api := func(method, path, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, url+"/api/rooms/go-api"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}
	a := dial(t, url, "go-api", "alice")
	ra := record(a)
	resp := api(http.MethodPost, "/messages", `{"username": "backend", "body": "from the API"}`)
	var posted client.Event
	if err := json.NewDecoder(resp.Body).Decode(&posted); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %v", resp.StatusCode, err)
	}
	testutil.Eventually(t, wait, "the posted message", ra.has("from the API"))
	if resp := api(http.MethodDelete, "/messages/"+posted.ID, ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	testutil.Eventually(t, wait, "the delete event", func() bool {
		d := ra.of(client.TypeDelete)
		return len(d) == 1 && d[0].ID == posted.ID && d[0].Room == "go-api"
	})
	if resp := api(http.MethodPost, "/kick", `{"username": "alice", "ban": "1m"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("kick: %d", resp.StatusCode)
	}
	closedWithin(t, ra)
	var ce *client.CloseError
	if err := a.Err(); !errors.As(err, &ce) || ce.Code != client.CloseKicked || ce.Reason != "kicked" {
		t.Fatalf("Err() after a kick = %v, want a CloseError 4001 kicked", err)
	}
	// Banned: Dial says why, with the server's error frame.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := client.Dial(ctx, url, client.Options{Room: "go-api", Header: client.UsernameCookie("alice")})
	var re *client.Error
	if !errors.As(err, &re) || re.Code != "rejected" {
		t.Fatalf("Dial while banned = %#v, want an *Error rejected", err)
	}
}

// A server restart while alice sends (Shutdown, then a new server on the
// same address; history and refs in Redis): every Send returns its ack, and
// alice and bob end with every message once.
func TestRestartWhileSending(t *testing.T) {
	prefix := redistest.Prefix(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	start := func(ln net.Listener) (stop func()) {
		cfg, err := config.Load("", nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Pipelines[pipeline.Message] = slices.DeleteFunc(cfg.Pipelines[pipeline.Message], func(s pipeline.Step) bool { return s.Use == "ratelimit" })
		cfg.History.Store, cfg.Broker.Type = "redis", "redis"
		cfg.Redis.URL, cfg.Redis.KeyPrefix = redistest.SharedURL, prefix
		srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return testutil.Serve(t, srv, ln)
	}
	stop := start(ln)
	defer func() { stop() }()
	url := "http://" + addr
	var mu sync.Mutex
	var drops []int
	a := dial(t, url, "go-restart", "alice", func(o *client.Options) {
		o.OnDisconnect = func(d client.DisconnectInfo) { mu.Lock(); drops = append(drops, d.Code); mu.Unlock() }
	})
	ra := record(a)
	rb := record(dial(t, url, "go-restart", "bob"))

	const n = 60
	want := make([]string, n)
	acks := make([]client.Ack, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	for i := range n {
		want[i] = fmt.Sprintf("m%02d", i)
		if i == n/3 {
			stop()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("listening again on %s: %v", addr, err)
			}
			stop = start(ln)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			acks[i], errs[i] = a.Send(ctx, client.Message{Body: want[i]})
		}()
		time.Sleep(time.Millisecond) // spread the sends over the restart
	}
	wg.Wait()
	ids := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		ids[acks[i].ID] = true
	}
	if len(ids) != n {
		t.Fatalf("%d distinct ids for %d messages", len(ids), n)
	}
	send(t, a, client.Message{Body: "barrier"}) // a duplicate would come before it
	for name, r := range map[string]*recorder{"alice": ra, "bob": rb} {
		testutil.Eventually(t, wait, name+" to have every message", r.has("barrier"))
		got := r.bodies()
		if got := slices.Sorted(slices.Values(got[:len(got)-1])); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s got %d messages:\n%v\nwant each of %v once", name, len(got), r.bodies(), want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(drops) == 0 || drops[0] != 1001 {
		t.Errorf("alice's disconnects: %v; want the shutdown's 1001 first", drops)
	}
}

// jwtFor returns an HS256 token for name that expires in ttl.
func jwtFor(t *testing.T, key, name string, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"name": name, "iat": now.Unix(), "exp": now.Add(ttl).Unix(),
	}).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// In jwt mode the token goes in the handshake's ?token=. When it expires the
// server closes with 4002: a client with a fixed Token stops for good (Err,
// Events closed), one with a TokenFunc dials again with a new token.
func TestTokenExpiry(t *testing.T) {
	key := strings.Repeat("k", 32)
	url := startServer(t, func(cfg *config.Config) {
		id := pipeline.Step{Use: "username", With: map[string]any{"mode": "jwt", "jwt_key": key}}
		cfg.Pipelines[pipeline.Join] = []pipeline.Step{id, {Use: "broadcast"}}
		cfg.Pipelines[pipeline.Message] = []pipeline.Step{id, {Use: "validate"}, {Use: "history"}, {Use: "broadcast"}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := client.Dial(ctx, url, client.Options{Room: "go-jwt"}); err == nil {
		t.Fatal("Dial without a token joined a jwt room")
	}

	fixed := dial(t, url, "go-jwt", "", func(o *client.Options) { o.Header, o.Token = nil, jwtFor(t, key, "dave", 3*time.Second) })
	rf := record(fixed)
	var mu sync.Mutex
	renewals, connects := 0, 0
	renewing := dial(t, url, "go-jwt", "", func(o *client.Options) {
		o.Header = nil
		o.TokenFunc = func(context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			renewals++
			if renewals == 1 {
				return jwtFor(t, key, "erin", 3*time.Second), nil
			}
			return jwtFor(t, key, "erin", time.Hour), nil
		}
		o.OnConnect = func(client.ConnectInfo) { mu.Lock(); connects++; mu.Unlock() }
	})
	rr := record(renewing)

	closedWithin(t, rf) // Events closes after the final close (exp is in whole seconds: 2-3 s)
	var ce *client.CloseError
	if err := fixed.Err(); !errors.As(err, &ce) || ce.Code != client.CloseTokenExpired {
		t.Fatalf("fixed token: Err() = %v, want a CloseError 4002", err)
	}
	if _, err := fixed.Send(ctx, client.Message{Body: "late"}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Send after the final close = %v, want ErrClosed", err)
	}
	testutil.Eventually(t, wait, "the renewed connection", func() bool { mu.Lock(); defer mu.Unlock(); return connects == 2 })
	send(t, renewing, client.Message{Body: "renewed"})
	testutil.Eventually(t, wait, "erin's message", rr.has("renewed"))
	// The room admits proven members only, and so does its members list.
	if ms, err := renewing.Members(ctx); err != nil || len(ms) != 1 || ms[0].Username != "erin" {
		t.Errorf("members with erin's token: %+v, %v", ms, err)
	}
	for _, m := range rr.of(client.TypeMessage) {
		if m.Body == "renewed" && m.Username != "erin" {
			t.Errorf("renewed message from %q, want erin", m.Username)
		}
	}
}
