package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// member dials a client named name (base64 cookie) into room and reads its
// history and own online frame.
func member(t *testing.T, s *testServer, room, name string) *wsClient {
	t.Helper()
	q := ""
	if room != "" {
		q = "room=" + room
	}
	c := s.dialNamed(t, q, b64(name))
	c.expect("history")
	c.next("online")
	return c
}

// quiet checks that c received nothing but presence frames: it sends a probe
// message from from and expects c's next non-presence frame to be it.
func quiet(t *testing.T, c, from *wsClient, what string) {
	t.Helper()
	probe := "probe after " + what
	from.send(map[string]any{"body": probe})
	for {
		f := c.read()
		if f.Type == "online" || f.Type == "offline" {
			continue
		}
		if f.Type != "message" || f.Body != probe {
			t.Fatalf("after %s the member got %s, want nothing before the probe", what, f.raw)
		}
		return
	}
}

// A seed client's frames work as they did: no new field appears in what
// it receives unless someone used it.
func TestSeedClientUnchanged(t *testing.T) {
	s := startServer(t, nil)
	alice := member(t, s, "", "alice")
	alice.send(map[string]any{"body": "hello", "username": "alice"})
	m := alice.expect("message")
	if m.Body != "hello" || m.Username != "alice" || m.HTML == "" {
		t.Fatalf("message %s", m.raw)
	}
	for _, field := range []string{`"data"`, `"to"`, `"ref"`} {
		if strings.Contains(string(m.raw), field) {
			t.Fatalf("a seed message carries %s: %s", field, m.raw)
		}
	}
}

// Unknown fields, wrong JSON types and bad values are refused with
// invalid_json naming the field; nothing of the frame reaches the room.
func TestStrictFrames(t *testing.T) {
	s := startServer(t, fastLimits)
	alice, bob := member(t, s, "", "alice"), member(t, s, "", "bob")
	alice.next("online") // bob's
	tests := []struct {
		name, frame, want string
	}{
		{"unknown field", `{"body":"hi","too":"bob"}`, `unknown field "too"`},
		{"a private field of a newer protocol", `{"body":"hi","cc":"bob"}`, `"cc"`},
		{"field names are exact", `{"body":"hi","To":"bob"}`, `unknown field "To"`},
		{"a field twice", `{"body":"hi","to":"bob","to":null}`, `field "to" appears twice`},
		{"body not a string", `{"body":5}`, "field body must be a string"},
		{"username not a string", `{"body":"hi","username":["a"]}`, "field username must be a string"},
		{"type not a string", `{"type":1}`, "field type must be a string"},
		{"data an array", `{"body":"hi","data":[1]}`, "field data must be a JSON object"},
		{"data a string", `{"body":"hi","data":"x"}`, "field data must be a JSON object"},
		{"to a number", `{"body":"hi","to":7}`, "field to must be a string"},
		{"to blank", `{"body":"hi","to":"  "}`, "field to must name"},
		{"ref empty", `{"body":"hi","ref":""}`, "field ref must be 1-64 printable ASCII"},
		{"ref too long", `{"body":"hi","ref":"` + strings.Repeat("r", 65) + `"}`, "field ref"},
		{"ref not ASCII", `{"body":"hi","ref":"é"}`, "field ref"},
		{"ref with a control character", `{"body":"hi","ref":"a\u0001"}`, "field ref"},
		{"ref a number", `{"body":"hi","ref":3}`, "field ref must be a string"},
		{"not an object", `["body"]`, "JSON object"},
		{"two objects", `{"body":"a"}{"body":"b"}`, "one JSON object per frame"},
		{"cut short", `{"body":"a"`, "cut short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alice.sendRaw(websocket.TextMessage, []byte(tt.frame))
			e := alice.expect("error")
			if e.Code != pipeline.CodeInvalidJSON || !strings.Contains(e.Reason, tt.want) {
				t.Fatalf("got %s, want invalid_json containing %q", e.raw, tt.want)
			}
			quiet(t, bob, alice, tt.name)
			alice.next("message") // alice's own probe
		})
	}
	// An error answering a frame with a readable ref carries it.
	alice.sendRaw(websocket.TextMessage, []byte(`{"body":"hi","ref":"r-1","extra":1}`))
	if e := alice.expect("error"); e.Ref != "r-1" {
		t.Fatalf("error without the frame's ref: %s", e.raw)
	}
}

// A custom kind runs its own pipeline and goes out under its own type; an
// unknown type is refused; data is carried, as the pipeline leaves it.
func TestCustomKindsAndData(t *testing.T) {
	s := startServer(t, fastLimits)
	alice, bob := member(t, s, "", "alice"), member(t, s, "", "bob")
	alice.next("online")

	alice.send(map[string]any{"type": "typing", "data": map[string]any{"draft": true}})
	f := bob.expect("typing")
	if f.Username != "alice" || f.Body != "" || string(f.Data) != `{"draft":true}` {
		t.Fatalf("typing frame %s", f.raw)
	}
	alice.expect("typing") // the sender hears it too, as a broadcast
	for _, typ := range []string{"reaction", "join", "leave", "online", "history", "Typing"} {
		alice.send(map[string]any{"type": typ, "body": "x", "ref": "k-" + typ})
		if e := alice.expect("error"); e.Code != pipeline.CodeUnknownType || e.Ref != "k-"+typ {
			t.Fatalf("type %q: got %s, want unknown_type", typ, e.raw)
		}
	}
	quiet(t, bob, alice, "unknown types")
	alice.next("message")

	alice.sendRaw(websocket.TextMessage, []byte(`{"type":"message","body":"with data","data":{ "reply_to": "m1", "n": [1, 2] }}`))
	m := bob.expect("message")
	if m.Body != "with data" || string(m.Data) != `{"reply_to":"m1","n":[1,2]}` {
		t.Fatalf("message with data %s", m.raw)
	}
	// Kept with its data; typing, not in a pipeline with history, is not kept.
	code, body := httpGet(t, s.URL+"/api/rooms/lobby/history")
	if code != 200 || !strings.Contains(body, `"data":{"reply_to":"m1"`) || strings.Contains(body, "typing") {
		t.Fatalf("history %d %s", code, body)
	}
}

// A custom kind is declared in YAML; its name is checked, and history and
// ratelimit work per kind.
func TestCustomKindFromConfig(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/c.yaml"
	write := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("pipelines:\n  reaction:\n    - use: username\n    - use: validate\n      with: {max_length: 8}\n    - use: ratelimit\n      with: {rate: 0.001, burst: 1}\n    - use: history\n    - use: broadcast\n")
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(c *config.Config) { *c = *cfg })
	alice := member(t, s, "", "alice")
	alice.send(map[string]any{"type": "reaction", "body": "👍", "ref": "r1"})
	if f := alice.expect("reaction"); f.Body != "👍" {
		t.Fatalf("reaction %s", f.raw)
	}
	if a := alice.expect("ack"); a.Ref != "r1" || a.ID == "" {
		t.Fatalf("ack %s", a.raw)
	}
	alice.send(map[string]any{"type": "reaction", "body": "👎"})
	if e := alice.expect("error"); e.Code != pipeline.CodeRateLimited {
		t.Fatalf("second reaction: %s (its own bucket of 1)", e.raw)
	}
	alice.send(map[string]any{"body": "messages have their own bucket"})
	alice.expect("message")
	alice.send(map[string]any{"type": "reaction", "body": "a body over eight"})
	if e := alice.expect("error"); e.Code != pipeline.CodeTooLong && e.Code != pipeline.CodeRateLimited {
		t.Fatalf("long reaction: %s", e.raw)
	}
	if h := apiHistory(t, s); !slices.Equal(h, []string{"👍", "messages have their own bucket"}) {
		t.Fatalf("history %q: the reaction kept by its pipeline's history step", h)
	}

	for _, bad := range []string{"error", "ack", "delete", "Typing", "9lives", "a-b"} {
		write("pipelines:\n  " + bad + ":\n    - use: broadcast\n")
		if _, err := config.Load(path, nil); err == nil || !strings.Contains(err.Error(), "pipelines."+bad) {
			t.Errorf("kind %q: err = %v, want a config error naming pipelines.%s", bad, err, bad)
		}
	}
}

// A direct message goes to every connection of the recipient and to the
// sender's, to nobody else, and is never kept.
func TestDirectMessage(t *testing.T) {
	s := startServer(t, fastLimits)
	alice, bob := member(t, s, "", "alice"), member(t, s, "", "bob")
	bob2 := member(t, s, "", "bob")
	carol := member(t, s, "", "carol")

	alice.send(map[string]any{"body": "psst", "to": "bob", "ref": "dm1"})
	var id string
	for _, c := range []*wsClient{bob, bob2, alice} {
		f := c.next("message")
		if f.Body != "psst" || f.To != "bob" || f.Username != "alice" {
			t.Fatalf("direct message %s", f.raw)
		}
		id = f.ID
	}
	if a := alice.next("ack"); a.Ref != "dm1" || a.ID != id {
		t.Fatalf("ack %s, want id %s", a.raw, id)
	}
	quiet(t, carol, alice, "a direct message to bob")
	if h := apiHistory(t, s); slices.Contains(h, "psst") {
		t.Fatalf("a direct message was kept: %q", h)
	}
	alice.send(map[string]any{"type": "typing", "to": "carol"})
	if f := carol.next("typing"); f.To != "carol" {
		t.Fatalf("direct typing %s", f.raw)
	}

	alice.send(map[string]any{"body": "anyone?", "to": "dave", "ref": "dm2"})
	if e := alice.next("error"); e.Code != pipeline.CodeNoRecipient || e.Ref != "dm2" {
		t.Fatalf("to nobody: %s", e.raw)
	}
	quiet(t, carol, alice, "a direct message to nobody")
}

// An accepted frame with a ref is acked with its envelope's id; a resend of
// the ref (even on a new connection) is acked again with the same id and not
// delivered or kept twice; a refused frame's ref can be used again.
func TestAcksAndResends(t *testing.T) {
	s := startServer(t, fastLimits)
	alice, bob := member(t, s, "", "alice"), member(t, s, "", "bob")
	alice.next("online")

	alice.send(map[string]any{"body": "once", "ref": "m-1"})
	m := alice.expect("message")
	a := alice.expect("ack")
	if a.Ref != "m-1" || a.ID != m.ID || m.ID == "" {
		t.Fatalf("ack %s for message %s", a.raw, m.raw)
	}
	bob.expect("message")

	alice.send(map[string]any{"body": "once", "ref": "m-1"})
	if again := alice.expect("ack"); again.ID != m.ID {
		t.Fatalf("resend acked %s, want the first id %s", again.raw, m.ID)
	}
	alice.conn.Close()
	alice = member(t, s, "", "alice")
	alice.send(map[string]any{"body": "once", "ref": "m-1"})
	if again := alice.next("ack"); again.ID != m.ID { // (the old connection's offline may come first)
		t.Fatalf("resend after a reconnect acked %s, want %s", again.raw, m.ID)
	}
	quiet(t, bob, alice, "two resends")
	if h := apiHistory(t, s); strings.Count(strings.Join(h, "\n"), "once") != 1 {
		t.Fatalf("history %q: the message once", h)
	}

	// Another name may use the same ref: it is the client's name for a frame.
	bob.send(map[string]any{"body": "mine", "ref": "m-1"})
	if f := bob.next("message"); f.Body != "mine" {
		t.Fatalf("bob's frame with alice's ref: %s", f.raw)
	}
	bob.next("ack")

	alice.send(map[string]any{"body": "   ", "ref": "m-2"})
	if e := alice.next("error"); e.Code != pipeline.CodeEmpty || e.Ref != "m-2" {
		t.Fatalf("refused frame: %s", e.raw)
	}
	alice.send(map[string]any{"body": "fixed", "ref": "m-2"})
	if f := alice.next("message"); f.Body != "fixed" {
		t.Fatalf("a refused ref sent again: %s", f.raw)
	}
	alice.next("ack")
}

// An accepted frame that produced no envelope (a command answered to the
// sender alone) is acked without an id.
func TestAckWithoutEnvelope(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Pipelines[pipeline.Message] = slices.Insert(c.Pipelines[pipeline.Message], 1, pipeline.Step{Use: "commands"})
	})
	alice := member(t, s, "", "alice")
	alice.send(map[string]any{"body": "/who", "ref": "w"})
	alice.expect("message") // the reply
	if a := alice.expect("ack"); a.Ref != "w" || a.ID != "" || strings.Contains(string(a.raw), `"id"`) {
		t.Fatalf("ack %s, want no id", a.raw)
	}
}

// In signed and jwt modes the page is served without the room's messages;
// in plain mode it shows them, as the seed did.
func TestGuardedPageHasNoHistory(t *testing.T) {
	for _, guarded := range []bool{false, true} {
		mutate := fastLimits
		if guarded {
			mutate = func(c *config.Config) {
				fastLimits(c)
				c.Pipelines[pipeline.Join][0] = pipeline.Step{Use: "username", With: map[string]any{"mode": "signed", "secret": identitySecret, "cookie": "identity"}}
			}
		}
		s := startServer(t, mutate)
		if _, err := s.Post(t.Context(), "lobby", "ops", pipeline.Inbound{Body: "a secret plan"}); err != nil {
			t.Fatal(err)
		}
		code, page := httpGet(t, s.URL+"/?room=lobby")
		if code != 200 {
			t.Fatalf("page: %d", code)
		}
		if got := strings.Contains(page, "a secret plan"); got == guarded {
			t.Fatalf("guarded=%v: page shows the message: %v", guarded, got)
		}
	}
}

// rooms_claim lists the rooms a token may join; others are refused before
// anything of them is sent.
func TestRoomsClaim(t *testing.T) {
	with := map[string]any{"mode": "jwt", "jwt_key": identitySecret, "rooms_claim": "rooms"}
	s := startServer(t, withIdentity(with))
	tok := func(rooms any) string {
		claims := jwt.MapClaims{"name": "alice", "exp": time.Now().Add(time.Hour).Unix()}
		if rooms != nil {
			claims["rooms"] = rooms
		}
		v, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(identitySecret))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name, room string
		rooms      any
		ok         bool
	}{
		{"exact", "ops", []string{"ops", "team-*"}, true},
		{"prefix", "team-red", []string{"ops", "team-*"}, true},
		{"prefix is a prefix", "teams", []string{"team-*"}, false},
		{"not listed", "lobby", []string{"ops", "team-*"}, false},
		{"one string", "ops", "ops", true},
		{"no claim", "ops", nil, false},
		{"empty list", "ops", []string{}, false},
		{"everything", "anything", []string{"*"}, true},
		{"a number", "ops", 5, false},
		{"a list with a number", "ops", []any{1, "ops"}, false},
		{"an object", "ops", map[string]any{"ops": true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.dial(t, "room="+tt.room+"&token="+tok(tt.rooms), nil)
			if !tt.ok {
				if e := c.expect("error"); e.Code != pipeline.CodeRejected {
					t.Fatalf("got %s", e.raw)
				}
				if code := c.closeCode(); code != websocket.ClosePolicyViolation {
					t.Fatalf("close %d, want 1008", code)
				}
				return
			}
			c.expect("history")
			if on := c.expect("online"); on.Username != "alice" {
				t.Fatalf("online %s", on.raw)
			}
		})
	}
}

// A connection whose token expires is closed with 4002.
func TestTokenExpiryClosesTheConnection(t *testing.T) {
	s := startServer(t, withIdentity(map[string]any{"mode": "jwt", "jwt_key": identitySecret}))
	v, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"name": "alice",
		"exp": time.Now().Add(2 * time.Second).Unix()}).SignedString([]byte(identitySecret))
	if err != nil {
		t.Fatal(err)
	}
	c := s.dial(t, "token="+v, nil)
	c.expect("history")
	c.expect("online")
	_ = c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 4002 || ce.Text != "token expired" {
			t.Fatalf("closed with %v, want 4002 token expired", err)
		}
		return
	}
}

// Across three nodes: a direct message reaches the recipient on another
// node and the sender, nobody else; a resend to another node is acked with
// the first id and not delivered again.
func TestClusterDirectMessagesAndResends(t *testing.T) {
	prefix := redistest.Prefix(t)
	n1, n2, n3 := startServer(t, useCluster(prefix)), startServer(t, useCluster(prefix)), startServer(t, useCluster(prefix))
	alice, bob, carol := member(t, n1, "", "alice"), member(t, n2, "", "bob"), member(t, n3, "", "carol")
	// Members are listed across nodes once presence is written.
	waitMembers(t, n1, 3)

	alice.send(map[string]any{"body": "psst", "to": "bob", "ref": "x1"})
	f := bob.next("message")
	if f.Body != "psst" || f.To != "bob" {
		t.Fatalf("bob got %s", f.raw)
	}
	// In a cluster the ack (sent once Redis took the publish) may come
	// before the sender's own copy (which comes back through Redis).
	mine, ack := alice.messageAndAck()
	if mine.ID != f.ID || ack.ID != f.ID {
		t.Fatalf("alice's copy %s, ack %s, want id %s", mine.raw, ack.raw, f.ID)
	}
	quiet(t, carol, alice, "a direct message across nodes")

	alice.send(map[string]any{"body": "hello all", "ref": "x2"})
	_, first := alice.messageAndAck()
	alice.conn.Close()
	alice = member(t, n3, "", "alice") // reconnects to another node
	alice.send(map[string]any{"body": "hello all", "ref": "x2"})
	if a := alice.next("ack"); a.ID != first.ID {
		t.Fatalf("resend on another node acked %s, want %s", a.raw, first.ID)
	}
	alice.send(map[string]any{"body": "end"})
	for _, c := range []*wsClient{bob, carol} {
		if got := bodiesUntil(c, "end"); strings.Count(strings.Join(got, "\n"), "hello all") != 1 {
			t.Fatalf("a member got %q: hello all once", got)
		}
	}
}

// bodiesUntil reads c's messages up to the one with body last.
func bodiesUntil(c *wsClient, last string) []string {
	c.t.Helper()
	var got []string
	for {
		f := c.next("message")
		got = append(got, f.Body)
		if f.Body == last {
			return got
		}
	}
}

// waitMembers waits until s lists n members in the lobby.
func waitMembers(t *testing.T, s *testServer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, s.URL+"/api/rooms/lobby/members")
		var ms []json.RawMessage
		if code == http.StatusOK && json.Unmarshal([]byte(body), &ms) == nil && len(ms) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members: %s, want %d", body, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// In signed/jwt modes the history and members of a room are read over HTTP
// only with the credentials a join would be admitted with (or an API key).
func TestGuardedReadsNeedTheProof(t *testing.T) {
	with := map[string]any{"mode": "jwt", "jwt_key": identitySecret, "rooms_claim": "rooms", "cookie": "identity"}
	s := startServer(t, withIdentity(with))
	tok := func(rooms ...string) string {
		v, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"name": "alice", "rooms": rooms,
			"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(identitySecret))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, err := s.Post(t.Context(), "ops", "bot", pipeline.Inbound{Body: "deploy at noon"}); err != nil {
		t.Fatal(err)
	}
	get := func(path string, h http.Header) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path string
		header     http.Header
		want       int
	}{
		{"history without a proof", "/api/rooms/ops/history", nil, 401},
		{"members without a proof", "/api/rooms/ops/members", nil, 401},
		{"history with a token for the room", "/api/rooms/ops/history?token=" + tok("ops"), nil, 200},
		{"history with the cookie", "/api/rooms/ops/history", cookieHeader("identity=" + tok("o*")), 200},
		{"members with a token for the room", "/api/rooms/ops/members?token=" + tok("ops"), nil, 200},
		{"a token for another room", "/api/rooms/ops/history?token=" + tok("lobby"), nil, 401},
		{"a forged token", "/api/rooms/ops/history?token=" + tok("ops") + "x", nil, 401},
		{"the list of rooms needs a key", "/api/rooms?token=" + tok("*"), nil, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(tt.path, tt.header)
			if code != tt.want {
				t.Fatalf("%s: %d %s, want %d", tt.path, code, body, tt.want)
			}
			if code == 200 && strings.Contains(tt.path, "history") && !strings.Contains(body, "deploy at noon") {
				t.Fatalf("history %s", body)
			}
			if code == 401 && strings.Contains(body, "deploy") {
				t.Fatalf("a refusal carries the room: %s", body)
			}
		})
	}
}

// messageAndAck reads c's frames until it has both a message and an ack,
// in whichever order they come.
func (c *wsClient) messageAndAck() (msg, ack frame) {
	c.t.Helper()
	for msg.Type == "" || ack.Type == "" {
		switch f := c.read(); f.Type {
		case "message":
			msg = f
		case "ack":
			ack = f
		}
	}
	return msg, ack
}
