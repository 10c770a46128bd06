package plugins_test

import (
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/pipeline/pipelinetest"
	"github.com/chatserver/chatserver/pkg/plugins"
)

// The commands plugin through the test kit: what alice's line does to her
// name, the room and her own screen.
func TestCommands(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantCode  string
		wantName  string // alice's name afterwards
		published string // body broadcast, "" for none
		replyHas  string // in the system reply to alice alone, "" for no reply
		reasonHas string
	}{
		{"plain message passes", "hello", "", "alice", "hello", "", ""},
		{"nick renames and replies alone", "/nick  Bob\u202e ", "", "Bob", "", "you are now Bob", ""},
		{"nick is bounded like usernames", "/nick " + strings.Repeat("x", 40), "", strings.Repeat("x", 8), "", "you are now", ""},
		{"nick without name", "/nick   ", pipeline.CodeRejected, "alice", "", "", "usage: /nick NAME"},
		{"nick to the reserved name", "/nick system", pipeline.CodeRejected, "alice", "", "", "reserved name"},
		{"nick to the reserved name, any case, after cleaning", "/nick \u202eSYSTEM", pipeline.CodeRejected, "alice", "", "", "reserved name"},
		{"me is an action, broadcast", "/me waves", "", "alice", "* alice waves", "", ""},
		{"me without action", "/me", pipeline.CodeRejected, "alice", "", "", "usage: /me"},
		{"who replies the members", "/who", "", "alice", "", "2 in lobby: alice, bob", ""},
		{"double slash escapes", "//nick is a command", "", "alice", "/nick is a command", "", ""},
		{"unknown command lists the known ones", "/shrug", pipeline.CodeRejected, "alice", "", "", "unknown command /shrug (commands: /nick NAME, /me ACTION, /who)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := pipelinetest.New(t, `
message:
  - use: username
  - use: validate
  - use: commands
    with: { max_name_length: 8 }
  - use: render_html
  - use: broadcast
`)
			alice := room.Member("alice")
			room.Member("bob")
			got := alice.Say(tt.body)
			if code := errCode(got.Err); code != tt.wantCode || !strings.Contains(reason(got.Err), tt.reasonHas) {
				t.Fatalf("error %+v, want code %q with %q", got.Err, tt.wantCode, tt.reasonHas)
			}
			if alice.Username() != tt.wantName {
				t.Errorf("alice is now %q, want %q", alice.Username(), tt.wantName)
			}
			switch {
			case tt.published == "" && len(got.Published) > 0:
				t.Errorf("broadcast %s", got.Published[0].Frame)
			case tt.published != "" && (len(got.Published) != 1 || got.Broadcast().Body != tt.published):
				t.Errorf("broadcast %+v, want body %q", got.Published, tt.published)
			}
			switch {
			case tt.replyHas == "" && len(got.Replies) > 0:
				t.Errorf("replied %+v", got.Replies[0])
			case tt.replyHas != "":
				if len(got.Replies) != 1 {
					t.Fatalf("%d replies, want 1", len(got.Replies))
				}
				r := got.Replies[0]
				if r.Type != "message" || r.Username != plugins.SystemName || r.ClientID != 0 || r.Room != "lobby" ||
					!strings.Contains(r.Body, tt.replyHas) || !strings.Contains(r.HTML, "system") {
					t.Errorf("reply %+v, want a system message holding %q", r, tt.replyHas)
				}
			}
		})
	}
}

func errCode(e *pipeline.Error) string {
	if e == nil {
		return ""
	}
	return e.Code
}

func reason(e *pipeline.Error) string {
	if e == nil {
		return ""
	}
	return e.Reason
}
