package plugins

import (
	"context"
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
			p, err := pipeline.Build(pipeline.Config{Message: []pipeline.Step{step("filter", tt.with)}}, pipeline.Deps{}, pipeline.BuildOptions{})
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
