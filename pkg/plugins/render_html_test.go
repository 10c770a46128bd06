package plugins

import (
	"context"
	"html/template"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func TestRenderHTML(t *testing.T) {
	deps, _, _ := testDeps(t)
	tests := []struct {
		name    string
		env     pipeline.Envelope
		want    []string // substrings of the html
		wantNot []string
	}{
		{
			name: "plain message",
			env:  pipeline.Envelope{ID: "m1", ClientID: 7, Username: "alice", Body: "hello", Datetime: "2026-11-25 21:04:05"},
			want: []string{`id="mm1"`, `data-client="7"`, `<b class="user">alice</b>`, `<span class="body">hello</span>`, `<time datetime="2026-11-25 21:04:05">`},
		},
		{
			name:    "script body is escaped",
			env:     pipeline.Envelope{ID: "m2", Username: "bob", Body: "<script>alert(1)</script>"},
			want:    []string{"&lt;script&gt;alert(1)&lt;/script&gt;"},
			wantNot: []string{"<script>"},
		},
		{
			name:    "markup username is escaped",
			env:     pipeline.Envelope{ID: "m3", Username: "<img src=x onerror=alert(1)>", Body: "hi"},
			want:    []string{"&lt;img src=x onerror=alert(1)&gt;"},
			wantNot: []string{"<img"},
		},
		{
			name:    "attribute breakout in id is escaped",
			env:     pipeline.Envelope{ID: `x" onmouseover="alert(1)`, Username: "eve", Body: "hi"},
			wantNot: []string{`" onmouseover="`},
		},
	}
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("render_html", nil)}}, deps)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := &pipeline.Event{Kind: pipeline.Message, Sender: newSender(7), Envelope: tt.env}
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			html := ev.Envelope.HTML
			for _, w := range tt.want {
				if !strings.Contains(html, w) {
					t.Errorf("html %s\ndoes not contain %s", html, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(html, w) {
					t.Errorf("html %s\ncontains %s", html, w)
				}
			}
		})
	}
}

func TestRenderHTMLOnlyMessages(t *testing.T) {
	deps, _, _ := testDeps(t)
	steps := []pipeline.Step{step("render_html", nil)}
	p := build(t, pipeline.Config{pipeline.Join: steps, pipeline.Leave: steps}, deps)
	for _, k := range []pipeline.Kind{pipeline.Join, pipeline.Leave} {
		ev := &pipeline.Event{Kind: k, Sender: newSender(1), Envelope: pipeline.Envelope{Username: "alice"}}
		if err := p.Run(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		if ev.Envelope.HTML != "" {
			t.Errorf("%s event got html %q", k, ev.Envelope.HTML)
		}
	}
}

func TestRenderHTMLBuild(t *testing.T) {
	inline := template.Must(template.New("short.html").Parse(`<p>{{.Username}}: {{.Body}}</p>`))
	template.Must(inline.New("broken.html").Parse(`{{.NoSuchField}}`))
	real, _, _ := testDeps(t)
	tests := []struct {
		name      string
		templates *template.Template
		with      map[string]any
		wantErr   string
		wantHTML  string
	}{
		{"real template by default", real.Templates, nil, "", ""},
		{"inline template", inline, map[string]any{"template": "short.html"}, "", "<p>a&lt;b: x&amp;y</p>"},
		{"no templates", nil, nil, `template "message.html"`, ""},
		{"missing template is named", inline, map[string]any{"template": "nope.html"}, `template "nope.html" not found`, ""},
		{"template that cannot run fails at build", inline, map[string]any{"template": "broken.html"}, "NoSuchField", ""},
		{"empty name", inline, map[string]any{"template": ""}, "template must not be empty", ""},
		{"unknown key", inline, map[string]any{"file": "x"}, "file", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := pipeline.Config{pipeline.Message: []pipeline.Step{step("render_html", tt.with)}}
			p, err := pipeline.Build(cfg, pipeline.Deps{Templates: tt.templates}, pipeline.BuildOptions{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ev := &pipeline.Event{Kind: pipeline.Message, Sender: newSender(1), Envelope: pipeline.Envelope{Username: "a<b", Body: "x&y"}}
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			if tt.wantHTML != "" && ev.Envelope.HTML != tt.wantHTML {
				t.Errorf("html %q, want %q", ev.Envelope.HTML, tt.wantHTML)
			}
		})
	}
	// Building must not freeze the server's template set: it may still add
	// templates (html/template refuses Parse after a set executed).
	if _, err := inline.New("later.html").Parse(`later`); err != nil {
		t.Errorf("the server's template set was frozen by Build: %v", err)
	}
}
