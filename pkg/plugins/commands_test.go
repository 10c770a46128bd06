package plugins

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

type fakeMembers []pipeline.Member

func (m fakeMembers) Members(context.Context, string) ([]pipeline.Member, error) { return m, nil }

func TestCommands(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantCode   string
		wantName   string // the sender's name afterwards
		published  string // body broadcast, "" for none
		replyHas   string // in the reply to the sender, "" for no reply
		reasonHave string
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
			deps, pub, _ := testDeps(t)
			deps.Members = fakeMembers{{ClientID: 1, Username: "alice"}, {ClientID: 2, Username: "bob"}}
			p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{
				step("username", nil),
				step("validate", nil),
				step("commands", map[string]any{"max_name_length": 8}),
				step("render_html", nil),
				step("broadcast", nil),
			}}, deps)
			s := newSender(1)
			s.name = "alice"
			err := p.Run(context.Background(), messageEvent(s, tt.body, nil))
			if code(err) != tt.wantCode {
				t.Fatalf("err = %v, want code %q", err, tt.wantCode)
			}
			var pe *pipeline.Error
			if tt.reasonHave != "" && (!errors.As(err, &pe) || !strings.Contains(pe.Reason, tt.reasonHave)) {
				t.Errorf("reason %v lacks %q", err, tt.reasonHave)
			}
			if s.Username() != tt.wantName {
				t.Errorf("sender name %q, want %q", s.Username(), tt.wantName)
			}
			switch {
			case tt.published == "" && len(pub.calls) > 0:
				t.Errorf("broadcast %s", pub.calls[0].frame)
			case tt.published != "":
				if len(pub.calls) != 1 || decode(t, pub.calls[0].frame)["body"] != tt.published {
					t.Errorf("broadcast %v, want body %q", pub.calls, tt.published)
				}
			}
			switch {
			case tt.replyHas == "" && len(s.sent) > 0:
				t.Errorf("replied %s", s.sent[0])
			case tt.replyHas != "":
				if len(s.sent) != 1 {
					t.Fatalf("%d replies, want 1", len(s.sent))
				}
				r := decode(t, s.sent[0])
				if r["type"] != "message" || r["username"] != SystemName || r["client_id"] != 0.0 || r["room"] != "lobby" ||
					!strings.Contains(r["body"].(string), tt.replyHas) || !strings.Contains(r["html"].(string), "system") {
					t.Errorf("reply %s, want a system message holding %q", s.sent[0], tt.replyHas)
				}
			}
		})
	}
}

func TestCommandsNeedsMembers(t *testing.T) {
	_, err := pipeline.Build(pipeline.Config{pipeline.Message: []pipeline.Step{step("commands", nil)}}, pipeline.Deps{}, pipeline.BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "member list") {
		t.Fatalf("err = %v", err)
	}
}

// A name proven at join (signed cookie or JWT) cannot be changed with /nick.
func TestCommandsNickRefusedForProvenNames(t *testing.T) {
	deps, _, _ := testDeps(t)
	deps.Members = fakeMembers{}
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("commands", nil)}}, deps)
	s := newSender(1)
	s.name = "alice"
	s.SetValue(verifiedKey{}, "alice")
	err := p.Run(context.Background(), messageEvent(s, "/nick mallory", nil))
	if code(err) != pipeline.CodeRejected || s.Username() != "alice" {
		t.Fatalf("err = %v, name %q: a proven name was changed", err, s.Username())
	}
}
