package plugins

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func usernamePipeline(t *testing.T, kind pipeline.Kind, with map[string]any) *pipeline.Pipelines {
	t.Helper()
	return build(t, pipeline.Config{kind: {step("username", with)}}, pipeline.Deps{})
}

func TestUsernameJoin(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name    string
		with    map[string]any
		cookies map[string]string
		want    string
	}{
		{"no cookie: guest", nil, nil, "游客7"},
		{"std base64, padded", nil, map[string]string{"username": b64([]byte("张三"))}, "张三"},
		{"std base64 of ascii", nil, map[string]string{"username": "YWxpY2U="}, "alice"},
		{"unpadded", nil, map[string]string{"username": "YWxpY2U"}, "alice"},
		{"url-safe alphabet", nil, map[string]string{"username": base64.URLEncoding.EncodeToString([]byte("a>?b"))}, "a>?b"},
		{"url-safe unpadded", nil, map[string]string{"username": base64.RawURLEncoding.EncodeToString([]byte("ü>>?"))}, "ü>>?"},
		{"percent-encoded padding", nil, map[string]string{"username": "YWxpY2U%3D"}, "alice"},
		{"quoted cookie", nil, map[string]string{"username": `"YWxpY2U="`}, "alice"},
		{"garbage: guest", nil, map[string]string{"username": "!!!not base64***"}, "游客7"},
		{"mixed alphabets: guest", nil, map[string]string{"username": "ab+c-d"}, "游客7"},
		{"empty cookie: guest", nil, map[string]string{"username": ""}, "游客7"},
		{"decodes to blanks: guest", nil, map[string]string{"username": b64([]byte(" \x00\t "))}, "游客7"},
		{"control characters stripped", nil, map[string]string{"username": b64([]byte("  al\x00i\x1bce\n "))}, "alice"},
		{"bidi overrides stripped", nil, map[string]string{"username": b64([]byte("\u202Eevil\u2066x\u2069"))}, "evilx"},
		{"invalid utf-8 dropped", nil, map[string]string{"username": b64([]byte("bo\xffb"))}, "bob"},
		{"bounded in runes", map[string]any{"max_length": 4}, map[string]string{"username": b64([]byte("诸葛孔明先生"))}, "诸葛孔明"},
		{"cut then trimmed", map[string]any{"max_length": 3}, map[string]string{"username": b64([]byte("ab cd"))}, "ab"},
		{"other cookie name", map[string]any{"cookie": "nick"}, map[string]string{"username": "YWxpY2U=", "nick": "Ym9i"}, "bob"},
		{"cookies disabled", map[string]any{"cookie": ""}, map[string]string{"username": "YWxpY2U="}, "游客7"},
		{"guest format", map[string]any{"guest_format": "guest-%d"}, nil, "guest-7"},
		{"reserved name: guest", nil, map[string]string{"username": b64([]byte("system"))}, "游客7"},
		{"reserved name in any case, after cleaning: guest", nil, map[string]string{"username": b64([]byte(" SyStem\u202e "))}, "游客7"},
		{"names that only contain it are fine", nil, map[string]string{"username": b64([]byte("systems"))}, "systems"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := usernamePipeline(t, pipeline.Join, tt.with)
			s := newSender(7)
			for k, v := range tt.cookies {
				s.cookies[k] = v
			}
			ev := &pipeline.Event{Kind: pipeline.Join, Sender: s}
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			if ev.Envelope.Username != tt.want || s.Username() != tt.want {
				t.Errorf("envelope %q, sender %q; want %q", ev.Envelope.Username, s.Username(), tt.want)
			}
		})
	}
}

func TestUsernameMessage(t *testing.T) {
	tests := []struct {
		name    string
		with    map[string]any
		current string
		cookie  string
		rename  *string
		want    string
	}{
		{"keeps current name", nil, "alice", "Ym9i", nil, "alice"},
		{"rename allowed", map[string]any{"allow_rename": true}, "alice", "", ptr("carol"), "carol"},
		{"rename cleaned", map[string]any{"allow_rename": true}, "alice", "", ptr(" \u202Ec\x07arol\n"), "carol"},
		{"rename bounded in runes", map[string]any{"allow_rename": true, "max_length": 2}, "alice", "", ptr("王小明"), "王小"},
		{"rename ignored when not allowed", nil, "alice", "", ptr("carol"), "alice"},
		{"empty rename keeps current", map[string]any{"allow_rename": true}, "alice", "", ptr(""), "alice"},
		{"blank rename keeps current", map[string]any{"allow_rename": true}, "alice", "", ptr(" \x00 "), "alice"},
		{"blank rename without name: guest", map[string]any{"allow_rename": true}, "", "", ptr("  "), "游客7"},
		{"reserved rename ignored", map[string]any{"allow_rename": true}, "alice", "", ptr("system"), "alice"},
		{"reserved rename ignored in any case, after cleaning", map[string]any{"allow_rename": true}, "alice", "", ptr("\u202eSYSTEM\n"), "alice"},
		{"reserved rename without name: guest", map[string]any{"allow_rename": true}, "", "", ptr("System"), "游客7"},
		{"reserved cookie without name: guest", nil, "", "c3lzdGVt", nil, "游客7"},
		{"no name yet: cookie", nil, "", "Ym9i", nil, "bob"},
		{"no name, no cookie: guest", nil, "", "", nil, "游客7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := usernamePipeline(t, pipeline.Message, tt.with)
			s := newSender(7)
			s.SetUsername(tt.current)
			if tt.cookie != "" {
				s.cookies["username"] = tt.cookie
			}
			ev := messageEvent(s, "hi", tt.rename)
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			if ev.Envelope.Username != tt.want || s.Username() != tt.want {
				t.Errorf("envelope %q, sender %q; want %q", ev.Envelope.Username, s.Username(), tt.want)
			}
		})
	}
}

func TestUsernameLeave(t *testing.T) {
	tests := []struct {
		name, current, want string
	}{
		{"current name", "alice", "alice"},
		{"nameless member: cookie", "", "bob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := usernamePipeline(t, pipeline.Leave, nil)
			s := newSender(7)
			s.SetUsername(tt.current)
			s.cookies["username"] = "Ym9i" // "bob": read only when there is no name yet
			ev := &pipeline.Event{Kind: pipeline.Leave, Sender: s}
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			if ev.Envelope.Username != tt.want {
				t.Errorf("got %q, want %q", ev.Envelope.Username, tt.want)
			}
		})
	}
}

func TestUsernameOptions(t *testing.T) {
	tests := []struct {
		name    string
		with    map[string]any
		wantErr string // substring; "" means no error
	}{
		{"defaults", nil, ""},
		{"all keys", map[string]any{"cookie": "u", "guest_format": "g%d", "allow_rename": true, "max_length": 8}, ""},
		{"unknown key", map[string]any{"max_len": 8}, "max_len"},
		{"wrong type", map[string]any{"max_length": "long"}, "max_length"},
		{"zero max_length", map[string]any{"max_length": 0}, "max_length must be at least 1"},
		{"guest format without verb", map[string]any{"guest_format": "guest"}, "guest_format"},
		{"guest format with two verbs", map[string]any{"guest_format": "%d-%d"}, "guest_format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pipeline.Build(pipeline.Config{pipeline.Join: []pipeline.Step{step("username", tt.with)}}, pipeline.Deps{}, pipeline.BuildOptions{})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			case err != nil && !strings.Contains(err.Error(), "pipelines.join[0] (username)"):
				t.Errorf("error %q does not name the step", err)
			}
		})
	}
}
