package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/plugins"
)

const identitySecret = "0123456789abcdef0123456789abcdef"

func cookieHeader(cookie string) http.Header {
	h := http.Header{}
	h.Set("Cookie", cookie)
	return h
}

// withIdentity puts both username steps in the given mode.
func withIdentity(with map[string]any) func(*config.Config) {
	return func(c *config.Config) {
		c.Pipelines[pipeline.Join][0] = pipeline.Step{Use: "username", With: with}
		c.Pipelines[pipeline.Message][0] = pipeline.Step{Use: "username", With: with}
	}
}

// A join without a valid proof gets an error frame and close 1008; a valid
// one joins under the proven name, which messages cannot change.
func TestJoinNeedsAProvenIdentity(t *testing.T) {
	tok := func(name string, exp time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"name": name, "exp": time.Now().Add(exp).Unix()}).SignedString([]byte(identitySecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name   string
		with   map[string]any
		query  string
		cookie string
		want   string // "" means refused
	}{
		{"jwt valid", map[string]any{"mode": "jwt", "jwt_key": identitySecret}, "token=" + tok("alice", time.Hour), "", "alice"},
		{"jwt expired", map[string]any{"mode": "jwt", "jwt_key": identitySecret}, "token=" + tok("alice", -time.Minute), "", ""},
		{"jwt tampered", map[string]any{"mode": "jwt", "jwt_key": identitySecret}, "token=" + tok("alice", time.Hour) + "x", "", ""},
		{"jwt missing", map[string]any{"mode": "jwt", "jwt_key": identitySecret}, "", "", ""},
		{"signed valid", map[string]any{"mode": "signed", "secret": identitySecret, "cookie": "identity"}, "", "identity=" + plugins.SignUsername([]byte(identitySecret), "bob"), "bob"},
		{"signed forged", map[string]any{"mode": "signed", "secret": identitySecret, "cookie": "identity"}, "", "identity=" + plugins.SignUsername([]byte("another secret of 32 bytes......"), "bob"), ""},
		{"signed plain cookie", map[string]any{"mode": "signed", "secret": identitySecret, "cookie": "identity"}, "", "username=" + b64("bob"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, withIdentity(tt.with))
			// A member is in the room and has said something: the room
			// has history and presence that a refused joiner must not see.
			member := s.dial(t, "token="+tok("carol", time.Hour), cookieHeader("identity="+plugins.SignUsername([]byte(identitySecret), "carol")))
			member.expect("history")
			member.expect("online")
			member.send(map[string]any{"body": "the room's secret"})
			member.expect("message")

			h := http.Header{}
			if tt.cookie != "" {
				h.Set("Cookie", tt.cookie)
			}
			c := s.dial(t, tt.query, h)
			if tt.want == "" {
				// Nothing of the room before (or after) the refusal: the
				// error is the first frame, then the close.
				if e := c.expect("error"); e.Code != pipeline.CodeRejected {
					t.Fatalf("got %s", e.raw)
				}
				if code := c.closeCode(); code != websocket.ClosePolicyViolation {
					t.Fatalf("close code %d, want 1008", code)
				}
				// Nobody heard of it: the member's next frame is its own echo.
				member.send(map[string]any{"body": "still alone"})
				if f := member.read(); f.Type != "message" || f.Body != "still alone" {
					t.Fatalf("the member heard %s, want its own message", f.raw)
				}
				return
			}
			if h := c.expect("history"); len(h.Messages) != 1 || h.Messages[0].Body != "the room's secret" {
				t.Fatalf("an accepted joiner's history: %s", h.raw)
			}
			if on := c.expect("online"); on.Username != tt.want {
				t.Fatalf("online as %q, want %q", on.Username, tt.want)
			}
			c.send(map[string]any{"body": "hi", "username": "mallory"})
			if m := c.expect("message"); m.Username != tt.want {
				t.Fatalf("rename to mallory took: %s", m.raw)
			}
		})
	}
}
