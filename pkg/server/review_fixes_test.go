package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	// test_fail_after fails after the rest of the pipeline ran (a late
	// webhook, say): a body of "late" is published, then refused.
	pipeline.Register(pipeline.Spec{Name: "test_fail_after", New: func(any, pipeline.Deps) (pipeline.Plugin, error) {
		return pipeline.PluginFunc(func(next pipeline.Handler) pipeline.Handler {
			return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
				if err := next.Handle(ctx, ev); err != nil || ev.In.Body != "late" {
					return err
				}
				return pipeline.Reject(pipeline.CodeInternal, "a step after the broadcast failed")
			})
		}), nil
	}})
}

// A ban holds without a broadcast step in the join pipeline: the check runs
// when the pipeline returned too.
func TestBanWithoutJoinBroadcast(t *testing.T) {
	s := startServer(t, withAPI(func(c *config.Config) {
		c.Pipelines[pipeline.Join] = []pipeline.Step{{Use: "username"}}
	}))
	if r := apiCall(t, "POST", s.URL+"/api/rooms/lobby/kick", apiKey, "", `{"username":"mallory","ban":"1h"}`); r.status != 200 {
		t.Fatalf("ban: %d %s", r.status, r.body)
	}
	frames, code, text := s.dialName(t, "lobby", "mallory").closed()
	if len(frames) != 1 || frames[0].Type != "error" || code != 4001 || text != "banned" {
		t.Fatalf("a banned joiner got %d frames (%v), close %d %q; want one error, 4001 banned", len(frames), frames, code, text)
	}
}

// A banned name cannot read a guarded room over HTTP with its own proof.
func TestBannedNameCannotReadGuardedRoom(t *testing.T) {
	s := startServer(t, withAPI(withIdentity(map[string]any{"mode": "jwt", "jwt_key": identitySecret})))
	tok := func(name string) string {
		v, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"name": name, "exp": 4102444800}).SignedString([]byte(identitySecret))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if code, body := httpGet(t, s.URL+"/api/rooms/ops/history?token="+tok("mallory")); code != 200 {
		t.Fatalf("before the ban: %d %s", code, body)
	}
	if r := apiCall(t, "POST", s.URL+"/api/rooms/ops/kick", apiKey, "", `{"username":"mallory","ban":"1h"}`); r.status != 200 {
		t.Fatalf("ban: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/api/rooms/ops/history", "/api/rooms/ops/members"} {
		if code, body := httpGet(t, s.URL+path+"?token="+tok("mallory")); code != http.StatusUnauthorized {
			t.Fatalf("banned %s: %d %s, want 401", path, code, body)
		}
		if code, _ := httpGet(t, s.URL+path+"?token="+tok("alice")); code != 200 {
			t.Fatalf("alice %s: %d", path, code)
		}
	}
}

// A step that fails after the event was published: members have it, so a
// frame with a ref is acked (and its resend acked again, not delivered twice).
func TestFailureAfterPublishIsAcked(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		fastLimits(c)
		c.Pipelines[pipeline.Message] = append([]pipeline.Step{{Use: "test_fail_after"}}, c.Pipelines[pipeline.Message]...)
	})
	alice, bob := member(t, s, "", "alice"), member(t, s, "", "bob")
	alice.next("online")
	alice.send(map[string]any{"body": "late", "ref": "L1"})
	m := alice.expect("message")
	if a := alice.expect("ack"); a.ID != m.ID {
		t.Fatalf("ack %s, want id %s", a.raw, m.ID)
	}
	alice.send(map[string]any{"body": "late", "ref": "L1"})
	if a := alice.expect("ack"); a.ID != m.ID {
		t.Fatalf("resend acked %s, want %s", a.raw, m.ID)
	}
	if got := bodiesUntil(bob, "late"); len(got) != 1 {
		t.Fatalf("bob got %q", got)
	}
	quiet(t, bob, alice, "the resend of a late failure")
	alice.next("message") // the probe
	// Without a ref the sender is told what failed, as before.
	alice.send(map[string]any{"body": "late"})
	alice.expect("message")
	if e := alice.expect("error"); e.Code != pipeline.CodeInternal {
		t.Fatalf("no ref: %s", e.raw)
	}
}

// In plain mode a resend is matched by the name the frame asks for: a guest
// who renamed itself in the frame, and reconnects with that name, is acked.
func TestResendAfterRename(t *testing.T) {
	s := startServer(t, fastLimits)
	bob := member(t, s, "", "bob")
	guest := s.dial(t, "", nil)
	guest.expect("history")
	guest.next("online")
	frame := map[string]any{"body": "first words", "username": "alice", "ref": "R1"}
	guest.send(frame)
	m := guest.next("message")
	guest.next("ack")
	guest.conn.Close()
	alice := member(t, s, "", "alice")
	alice.send(frame)
	if a := alice.next("ack"); a.ID != m.ID {
		t.Fatalf("resend acked %s, want %s", a.raw, m.ID)
	}
	alice.send(map[string]any{"body": "end"})
	if got := bodiesUntil(bob, "end"); strings.Count(strings.Join(got, "\n"), "first words") != 1 {
		t.Fatalf("bob got %q", got)
	}
}

// The server API refuses join and leave as types, as the WebSocket does, and
// cleans the names it is given like every name.
func TestPostKindsAndNames(t *testing.T) {
	s := startServer(t, nil)
	for _, typ := range []string{"join", "leave", "online", "typo"} {
		if _, err := s.Post(t.Context(), "lobby", "ops", pipeline.Inbound{Type: typ, Body: "x"}); pipeline.AsError(err).Code != pipeline.CodeUnknownType {
			t.Fatalf("type %q: %v, want unknown_type", typ, err)
		}
	}
	frame, err := s.Post(t.Context(), "lobby", " ops\u202e\a "+strings.Repeat("x", 100), pipeline.Inbound{Body: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(frame), "\u202e") || strings.Contains(string(frame), `\u0007`) || strings.Contains(string(frame), strings.Repeat("x", 40)) {
		t.Fatalf("an API name went out uncleaned: %s", frame)
	}
}
