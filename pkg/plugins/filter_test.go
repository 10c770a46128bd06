package plugins

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func TestFilterMask(t *testing.T) {
	f, err := NewFilter(FilterOptions{Words: []string{"darn", "École", "卧槽", "heck"}, Mask: "#"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in, want string
	}{
		{"untouched", "hello there", "hello there"},
		{"a word", "darn it", "#### it"},
		{"any case", "DARN, Darn and dArN!", "####, #### and ####!"},
		{"whole words only", "darned darnit undarn", "darned darnit undarn"},
		{"punctuation bounds words", "(darn)darn.", "(####)####."},
		{"unicode case folding", "l'ÉCOLE et l'école", "l'##### et l'#####"},
		{"counted in characters, not bytes", "卧槽 ok", "## ok"},
		{"inside CJK text there are no word bounds", "我卧槽了", "我卧槽了"},
		{"several", "heck darn heck", "#### #### ####"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.Mask(tt.in); got != tt.want {
				t.Errorf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFilterOptions(t *testing.T) {
	dir := t.TempDir()
	words := filepath.Join(dir, "words.txt")
	if err := os.WriteFile(words, []byte("# banned\n\nfoo\n  Bar  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("ok\ntwo words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		with    map[string]any
		in      string
		want    string
		wantErr string
	}{
		{"default mask", map[string]any{"words": []string{"foo"}}, "a foo", "a ***", ""},
		{"comma-separated words", map[string]any{"words": "foo,bar"}, "foo bar baz", "*** *** baz", ""},
		{"file", map[string]any{"file": words}, "FOO bar # baz", "*** *** # baz", ""},
		{"file and words add up", map[string]any{"file": words, "words": []string{"baz"}}, "foo baz", "*** ***", ""},
		{"no words", nil, "", "", "give words or a file"},
		{"long mask", map[string]any{"words": []string{"x"}, "mask": "**"}, "", "", "mask must be one character"},
		{"not a word", map[string]any{"words": []string{"a b"}}, "", "", `"a b" is not one word`},
		{"missing file", map[string]any{"file": filepath.Join(dir, "nope")}, "", "", "no such file"},
		{"bad line in file", map[string]any{"file": bad}, "", "", "bad.txt:2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := pipeline.Build(pipeline.Config{pipeline.Message: []pipeline.Step{step("filter", tt.with)}}, pipeline.Deps{}, pipeline.BuildOptions{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ev := messageEvent(newSender(1), tt.in, nil)
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			if ev.Envelope.Body != tt.want || ev.In.Body != tt.want {
				t.Errorf("body %q / in %q, want %q", ev.Envelope.Body, ev.In.Body, tt.want)
			}
		})
	}
}

// Only message bodies are filtered; presence events pass untouched.
func TestFilterIgnoresJoin(t *testing.T) {
	f, _ := NewFilter(FilterOptions{Words: []string{"x"}, Mask: "*"})
	ev := &pipeline.Event{Kind: pipeline.Join, Sender: newSender(1)}
	called := false
	h := f.Wrap(pipeline.HandlerFunc(func(context.Context, *pipeline.Event) error { called = true; return nil }))
	if err := h.Handle(context.Background(), ev); err != nil || !called || ev.Envelope.Body != "" {
		t.Errorf("join: err %v, next called %v, body %q", err, called, ev.Envelope.Body)
	}
}

// A step that changes the body after render_html drops the html rendered from
// the old body (a stale rendering would broadcast the unmasked or original
// text); a step that leaves the body as it was keeps it. Before render_html,
// the html is rendered from the changed body.
func TestBodyChangeAfterRenderHTML(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req WebhookRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		body := req.Body
		if strings.HasPrefix(body, "shout ") {
			body = strings.ToUpper(body)
		}
		_ = json.NewEncoder(w).Encode(WebhookResponse{Action: WebhookModify, Body: body})
	}))
	t.Cleanup(hook.Close)
	filter := step("filter", map[string]any{"words": []string{"darn"}})
	webhook := step("webhook", map[string]any{"url": hook.URL})
	commands := step("commands", nil)
	render := step("render_html", nil)
	tests := []struct {
		name     string
		steps    []pipeline.Step
		body     string
		wantBody string
		wantHTML string // "" for no html key; else a substring of it
	}{
		{"filter after render, masked", []pipeline.Step{render, filter}, "darn it", "**** it", ""},
		{"filter after render, clean body", []pipeline.Step{render, filter}, "fine <b>", "fine <b>", `<span class="body">fine &lt;b&gt;</span>`},
		{"filter before render", []pipeline.Step{filter, render}, "darn it", "**** it", `<span class="body">**** it</span>`},
		{"webhook modify after render, changed", []pipeline.Step{render, webhook}, "shout hi", "SHOUT HI", ""},
		{"webhook modify after render, same body", []pipeline.Step{render, webhook}, "hi", "hi", `<span class="body">hi</span>`},
		{"webhook modify before render", []pipeline.Step{webhook, render}, "shout hi", "SHOUT HI", `<span class="body">SHOUT HI</span>`},
		{"/me after render", []pipeline.Step{render, commands}, "/me waves", "* alice waves", ""},
		{"// after render", []pipeline.Step{render, commands}, "//x", "/x", ""},
		{"commands after render, plain message", []pipeline.Step{render, commands}, "hello", "hello", `<span class="body">hello</span>`},
		{"/me before render", []pipeline.Step{commands, render}, "/me waves", "* alice waves", `<span class="body">* alice waves</span>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deps, pub, _ := testDeps(t)
			deps.Members = fakeMembers{}
			steps := append([]pipeline.Step{step("username", nil), step("validate", nil)}, tt.steps...)
			steps = append(steps, step("history", nil), step("broadcast", nil))
			p := build(t, pipeline.Config{pipeline.Message: steps}, deps)
			s := newSender(1)
			s.SetUsername("alice")
			ev := messageEvent(s, tt.body, nil)
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			// history marks the frame kept: the one frame is broadcast and stored.
			if len(pub.calls) != 1 || !pub.calls[0].keep {
				t.Fatalf("published %v; want one frame, kept in history", pub.calls)
			}
			for _, frame := range [][]byte{pub.calls[0].frame} {
				m := decode(t, frame)
				if m["body"] != tt.wantBody {
					t.Errorf("body %v, want %q", m["body"], tt.wantBody)
				}
				html, has := m["html"].(string)
				switch {
				case tt.wantHTML == "" && has:
					t.Errorf("html %q went out with body %q; want none (stale)", html, m["body"])
				case tt.wantHTML != "" && !strings.Contains(html, tt.wantHTML):
					t.Errorf("html %q, want it to hold %q", html, tt.wantHTML)
				}
			}
		})
	}
}
