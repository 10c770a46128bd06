package plugins

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// defaultConfig mirrors the pipelines of config/chatserver.yaml.
func defaultConfig() pipeline.Config {
	return pipeline.Config{
		pipeline.Join: []pipeline.Step{
			step("username", map[string]any{"cookie": "username", "guest_format": "游客%d"}),
			step("broadcast", nil),
		},
		pipeline.Message: []pipeline.Step{
			step("username", map[string]any{"allow_rename": true, "max_length": 32}),
			step("validate", map[string]any{"max_length": 2000}),
			step("ratelimit", map[string]any{"rate": 5, "burst": 10}),
			step("render_html", map[string]any{"template": "message.html"}),
			step("history", nil),
			step("broadcast", nil),
		},
		pipeline.Leave: []pipeline.Step{step("broadcast", nil)},
	}
}

func TestDefaultPipelines(t *testing.T) {
	deps, pub, hist := testDeps(t)
	p := build(t, defaultConfig(), deps)
	s := newSender(7)
	s.cookies["username"] = base64.StdEncoding.EncodeToString([]byte("张三"))

	tests := []struct {
		name     string
		ev       *pipeline.Event
		wantCode string
		want     map[string]any // fields of the published frame
		wantKeep bool
		wantHTML []string
	}{
		{
			name: "join",
			ev:   &pipeline.Event{Kind: pipeline.Join, Sender: s},
			want: map[string]any{"type": "online", "username": "张三"},
		},
		{
			name:     "message",
			ev:       messageEvent(s, "  <script>alert(1)</script> ", nil),
			want:     map[string]any{"type": "message", "username": "张三", "body": "<script>alert(1)</script>"},
			wantKeep: true,
			wantHTML: []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "张三"},
		},
		{
			name:     "rename",
			ev:       messageEvent(s, "hi", ptr("<img src=x onerror=alert(1)>")),
			want:     map[string]any{"type": "message", "username": "<img src=x onerror=alert(1)>", "body": "hi"},
			wantKeep: true,
			wantHTML: []string{"&lt;img src=x onerror=alert(1)&gt;"},
		},
		{
			name:     "empty message is rejected before anything is published",
			ev:       messageEvent(s, " ", nil),
			wantCode: pipeline.CodeEmpty,
		},
		{
			name: "leave",
			ev:   &pipeline.Event{Kind: pipeline.Leave, Sender: s},
			want: map[string]any{"type": "offline", "username": "<img src=x onerror=alert(1)>"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(pub.calls)
			start := time.Now().Add(-time.Second)
			err := p.Run(context.Background(), tt.ev)
			if got := code(err); got != tt.wantCode {
				t.Fatalf("code %q (err %v), want %q", got, err, tt.wantCode)
			}
			if tt.wantCode != "" {
				if len(pub.calls) != before {
					t.Fatal("a rejected event was published")
				}
				return
			}
			if len(pub.calls) != before+1 {
				t.Fatalf("%d publishes, want 1", len(pub.calls)-before)
			}
			c := pub.calls[before]
			if c.keep != tt.wantKeep {
				t.Errorf("keep = %v, want %v", c.keep, tt.wantKeep)
			}
			m := decode(t, c.frame)
			for _, k := range []string{"id", "type", "room", "client_id", "username", "datetime", "ts"} {
				if _, ok := m[k]; !ok {
					t.Errorf("frame %s has no %q", c.frame, k)
				}
			}
			for k, v := range tt.want {
				if m[k] != v {
					t.Errorf("%s = %v, want %v", k, m[k], v)
				}
			}
			if m["room"] != "lobby" || m["client_id"] != float64(7) || m["id"] != c.id || c.room != "lobby" {
				t.Errorf("frame %s published as (room %q, id %q)", c.frame, c.room, c.id)
			}
			dt, err := time.ParseInLocation("2006-01-02 15:04:05", m["datetime"].(string), time.Local)
			if err != nil || dt.Before(start.Truncate(time.Second)) {
				t.Errorf("datetime %v: %v", m["datetime"], err)
			}
			if ts := int64(m["ts"].(float64)); ts < start.UnixMilli() || ts > time.Now().UnixMilli() {
				t.Errorf("ts %d is not now", ts)
			}
			html, _ := m["html"].(string)
			for _, w := range tt.wantHTML {
				if !strings.Contains(html, w) {
					t.Errorf("html %s does not contain %s", html, w)
				}
			}
			if len(tt.wantHTML) == 0 && html != "" {
				t.Errorf("unexpected html %s", html)
			}
		})
	}
	if len(hist.calls) != 0 {
		t.Errorf("history appended %d times beside the publisher", len(hist.calls))
	}
}

// The message pipeline lets a client's burst through and then limits it,
// at the default 5/s with bursts of 10.
func TestDefaultPipelinesRateLimit(t *testing.T) {
	deps, pub, _ := testDeps(t)
	p := build(t, defaultConfig(), deps)
	s := newSender(7)
	var limited int
	for i := 0; i < 11; i++ {
		if code(p.Run(context.Background(), messageEvent(s, "hi", nil))) == pipeline.CodeRateLimited {
			limited++
		}
	}
	// A slow machine may earn a token back during the loop (one per 200ms), so
	// only the upper bound of what got through is exact.
	if len(pub.calls) < 10 || len(pub.calls)+limited != 11 {
		t.Errorf("%d published, %d limited; want 10 and 1", len(pub.calls), limited)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     pipeline.Config
		wantErr []string
	}{
		{"unknown plugin names the known ones",
			pipeline.Config{pipeline.Message: []pipeline.Step{step("validate", nil), step("spellcheck", nil)}},
			[]string{"pipelines.message[1]", `unknown plugin "spellcheck"`, "broadcast", "history", "ratelimit", "render_html", "username", "validate"}},
		{"unknown option names the key",
			pipeline.Config{pipeline.Join: []pipeline.Step{step("username", map[string]any{"cookies": "u"})}},
			[]string{"pipelines.join[0] (username)", "cookies"}},
		{"wrong option type names the key",
			pipeline.Config{pipeline.Message: []pipeline.Step{step("ratelimit", map[string]any{"burst": "ten"})}},
			[]string{"pipelines.message[0] (ratelimit)", "burst"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deps, _, _ := testDeps(t)
			_, err := pipeline.Build(tt.cfg, deps, pipeline.BuildOptions{})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
