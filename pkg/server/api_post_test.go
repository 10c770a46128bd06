package server_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// test_refuse refuses a message whose body is "!CODE" with that error code
// (tests only): the pipeline's answers the API maps to statuses.
func init() {
	pipeline.Register(pipeline.Spec{
		Name: "test_refuse", Description: `refuses the body "!CODE" with error CODE (tests only)`,
		New: func(any, pipeline.Deps) (pipeline.Plugin, error) {
			return pipeline.PluginFunc(func(next pipeline.Handler) pipeline.Handler {
				return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
					if code, ok := strings.CutPrefix(ev.In.Body, "!"); ok && ev.Kind == pipeline.Message {
						return pipeline.Reject(code, "refused on request")
					}
					return next.Handle(ctx, ev)
				})
			}), nil
		},
	})
	mainConfig = append(mainConfig, refusing)
	const post = "POST /api/rooms/{room}/messages"
	postCases = []openAPICase{
		{op: post, srv: "main", body: `{"username":"deploy-bot","body":"build 42 is green"}`, status: 201},
		{op: post, srv: "main", body: `{"username":"deploy-bot","type":"nope"}`, status: 400},
		{op: post, srv: "main", body: `{"username":"deploy-bot","body":"x"}`, noKey: true, status: 401},
		{op: post, srv: "main", body: `{"username":"deploy-bot","body":"psst","to":"nobody"}`, status: 404},
		{op: post, srv: "main", body: `{"username":"deploy-bot","body":"` + strings.Repeat("x", 300) + `"}`, status: 413},
		{op: post, srv: "main", ctype: "text/plain", body: `{"username":"deploy-bot","body":"x"}`, status: 415},
		{op: post, srv: "main", body: `{"username":"deploy-bot","body":"!rejected"}`, status: 422},
		{op: post, srv: "main", body: `{"username":"deploy-bot","body":"!rate_limited"}`, status: 429},
		{op: post, srv: "main", body: `{"username":"deploy-bot","body":"!internal"}`, status: 500},
	}
}

// refusing puts test_refuse first in the message pipeline.
func refusing(c *config.Config) {
	c.Pipelines[pipeline.Message] = append([]pipeline.Step{{Use: "test_refuse"}}, c.Pipelines[pipeline.Message]...)
}

// POST runs the room's pipeline under the given name: 201 with the envelope
// exactly as the members got it and as the history keeps it, also in a room
// nobody is in; the per-client rate limit does not apply.
func TestAPIPost(t *testing.T) {
	s := startServer(t, withAPI())
	alice := s.joined(t, "lobby", "alice")
	r := apiCall(t, "POST", s.URL+"/api/rooms/lobby/messages", apiKey, "", `{"username":"deploy-bot","body":"build <42> is green"}`)
	if r.status != 201 {
		t.Fatalf("POST: %d %s", r.status, r.body)
	}
	got := alice.next("message")
	if string(got.raw) != strings.TrimSpace(string(r.body)) {
		t.Fatalf("POST answered %s, members got %s", r.body, got.raw)
	}
	if got.Username != "deploy-bot" || got.Body != "build <42> is green" || !strings.Contains(got.HTML, "&lt;42&gt;") {
		t.Fatalf("envelope %s", got.raw)
	}
	// Nobody in ops: it lands in the history all the same.
	r = apiCall(t, "POST", s.URL+"/api/rooms/ops/messages", apiKey, "", `{"username":"deploy-bot","body":"to the empty room"}`)
	if r.status != 201 {
		t.Fatalf("POST to an empty room: %d %s", r.status, r.body)
	}
	h := apiCall(t, "GET", s.URL+"/api/rooms/ops/history", "", "", "")
	var hist []json.RawMessage
	if json.Unmarshal(h.body, &hist) != nil || len(hist) != 1 || !sameJSON(t, hist[0], r.body) {
		t.Fatalf("history of ops: %s, want [%s]", h.body, r.body)
	}
	// A ref posted twice: the second answer is the first message's ack,
	// and the members got the message once.
	first := apiCall(t, "POST", s.URL+"/api/rooms/lobby/messages", apiKey, "", `{"username":"deploy-bot","body":"once","ref":"deploy-42"}`)
	again := apiCall(t, "POST", s.URL+"/api/rooms/lobby/messages", apiKey, "", `{"username":"deploy-bot","body":"once","ref":"deploy-42"}`)
	var env, ack frame
	if first.status != 201 || again.status != 201 || json.Unmarshal(first.body, &env) != nil || json.Unmarshal(again.body, &ack) != nil ||
		env.Type != "message" || ack.Type != "ack" || ack.ID != env.ID {
		t.Fatalf("a ref posted twice: %d %s then %d %s", first.status, first.body, again.status, again.body)
	}
	// A direct message to alice: she gets it, with its to.
	dm := apiCall(t, "POST", s.URL+"/api/rooms/lobby/messages", apiKey, "", `{"username":"deploy-bot","body":"psst","to":"alice","data":{"build":42}}`)
	if dm.status != 201 {
		t.Fatalf("direct message: %d %s", dm.status, dm.body)
	}
	if f := alice.next("message"); f.ID != env.ID {
		t.Fatalf("alice got %s, want the message of ref deploy-42 once", f.raw)
	}
	if f := alice.next("message"); f.Body != "psst" || !strings.Contains(string(f.raw), `"to":"alice"`) || !strings.Contains(string(f.raw), `"data":{"build":42}`) {
		t.Fatalf("alice got %s, want the direct message", f.raw)
	}
	// Over the default rate limit (burst 10) of a member: all go through.
	for range 15 {
		if r := apiCall(t, "POST", s.URL+"/api/rooms/ops/messages", apiKey, "", `{"username":"deploy-bot","body":"again"}`); r.status != 201 {
			t.Fatalf("POST in a burst: %d %s", r.status, r.body)
		}
	}
}

// Bad posts: the code of each, as a WebSocket frame would get it.
func TestAPIPostBadInput(t *testing.T) {
	s := startServer(t, withAPI(refusing, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 256 }))
	tests := []struct {
		name, ctype, body string
		status            int
		code, reason      string
	}{
		{"not JSON", "", `{"username":"a","body":`, 400, "invalid_json", ""},
		{"not an object", "", `"hello"`, 400, "invalid_json", ""},
		{"no username", "", `{"body":"hi"}`, 400, "invalid_json", "username"},
		{"blank username", "", `{"username":"  ","body":"hi"}`, 400, "invalid_json", "username"},
		{"username of the wrong type", "", `{"username":["a"],"body":"hi"}`, 400, "invalid_json", "username"},
		{"body of the wrong type", "", `{"username":"a","body":7}`, 400, "invalid_json", "body"},
		{"data not an object", "", `{"username":"a","body":"hi","data":[1]}`, 400, "invalid_json", "data"},
		{"unknown field", "", `{"username":"a","body":"hi","room":"x"}`, 400, "invalid_json", "room"},
		{"ref too long", "", `{"username":"a","body":"hi","ref":"` + strings.Repeat("r", 65) + `"}`, 400, "invalid_json", "ref"},
		{"empty body", "", `{"username":"a","body":"  "}`, 400, "empty", ""},
		{"unknown type", "", `{"username":"a","type":"shout","body":"hi"}`, 400, "unknown_type", ""},
		{"no recipient", "", `{"username":"a","body":"hi","to":"nobody"}`, 404, "no_recipient", ""},
		{"refused", "", `{"username":"a","body":"!rejected"}`, 422, "rejected", ""},
		{"oversize", "", `{"username":"a","body":"` + strings.Repeat("x", 300) + `"}`, 413, "too_large", ""},
		{"not JSON content", "text/plain", `{"username":"a","body":"hi"}`, 415, "unsupported_media_type", ""},
		{"JSON with a charset is JSON", "application/json; charset=utf-8", `{"username":"a","body":"hi"}`, 201, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := apiCall(t, "POST", s.URL+"/api/rooms/lobby/messages", apiKey, tt.ctype, tt.body)
			code, reason := r.errorCode()
			if r.status != tt.status || code != tt.code || !strings.Contains(reason, tt.reason) {
				t.Fatalf("%d %q %q, want %d %q containing %q", r.status, code, reason, tt.status, tt.code, tt.reason)
			}
		})
	}
	r := apiCall(t, "POST", s.URL+"/api/rooms/bad%20room/messages", apiKey, "", `{"username":"a","body":"hi"}`)
	if code, _ := r.errorCode(); r.status != 400 || code != "bad_request" {
		t.Fatalf("invalid room: %d %s", r.status, r.body)
	}
}

// sameJSON reports whether a and b are the same JSON value (the history
// route re-encodes frames, escaping <, > and & as \u003c…).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("not JSON: %s", a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return reflect.DeepEqual(va, vb)
}
