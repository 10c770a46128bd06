package plugins

import (
	"context"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name     string
		with     map[string]any
		body     string
		wantCode string
		wantBody string
	}{
		{"plain", nil, "hello", "", "hello"},
		{"trimmed", nil, "  hello \n", "", "hello"},
		{"keeps newlines and tabs", nil, "line 1\n\tline 2", "", "line 1\n\tline 2"},
		{"strips control characters", nil, "he\x00l\x1bl\ro\u0085", "", "hello"},
		{"keeps bidi text", nil, "שלום world", "", "שלום world"},
		{"empty", nil, "", pipeline.CodeEmpty, ""},
		{"whitespace only", nil, " \n\t ", pipeline.CodeEmpty, ""},
		{"control characters only", nil, "\x00\x07", pipeline.CodeEmpty, ""},
		{"invalid utf-8", nil, "ab\xffcd", pipeline.CodeInvalidJSON, ""},
		{"at the limit in runes", map[string]any{"max_length": 5}, "你好世界啊", "", "你好世界啊"},
		{"over the limit in runes", map[string]any{"max_length": 5}, "你好世界啊!", pipeline.CodeTooLong, ""},
		{"limit counts after trimming", map[string]any{"max_length": 2}, "   ab   ", "", "ab"},
		{"default limit 2000", nil, strings.Repeat("中", 2000), "", strings.Repeat("中", 2000)},
		{"default limit 2001", nil, strings.Repeat("中", 2001), pipeline.CodeTooLong, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("validate", tt.with)}}, pipeline.Deps{})
			ev := messageEvent(newSender(1), tt.body, nil)
			err := p.Run(context.Background(), ev)
			if got := code(err); got != tt.wantCode {
				t.Fatalf("code %q (err %v), want %q", got, err, tt.wantCode)
			}
			if err != nil {
				return
			}
			if ev.Envelope.Body != tt.wantBody || ev.In.Body != tt.wantBody {
				t.Errorf("envelope body %q, inbound body %q; want %q", ev.Envelope.Body, ev.In.Body, tt.wantBody)
			}
		})
	}
}

func TestValidateTooLongReasonNamesLimit(t *testing.T) {
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("validate", map[string]any{"max_length": 3})}}, pipeline.Deps{})
	err := p.Run(context.Background(), messageEvent(newSender(1), "abcd", nil))
	if pe := pipeline.AsError(err); pe.Code != pipeline.CodeTooLong || !strings.Contains(pe.Reason, "3") {
		t.Fatalf("got %v, want too_long naming the limit 3", err)
	}
}

func TestValidateLetsOtherKindsThrough(t *testing.T) {
	tests := []struct {
		name string
		kind pipeline.Kind
	}{
		{"join", pipeline.Join},
		{"leave", pipeline.Leave},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			steps := []pipeline.Step{step("validate", nil)}
			p := build(t, pipeline.Config{pipeline.Join: steps, pipeline.Leave: steps}, pipeline.Deps{})
			ev := &pipeline.Event{Kind: tt.kind, Sender: newSender(1)}
			if err := p.Run(context.Background(), ev); err != nil {
				t.Fatalf("a %s event without a body was rejected: %v", tt.kind, err)
			}
		})
	}
}

func TestValidateOptions(t *testing.T) {
	tests := []struct {
		name    string
		with    map[string]any
		wantErr string
	}{
		{"defaults", nil, ""},
		{"unknown key", map[string]any{"min_length": 1}, "min_length"},
		{"wrong type", map[string]any{"max_length": []int{1}}, "max_length"},
		{"zero", map[string]any{"max_length": 0}, "max_length must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkBuild(t, pipeline.Message, "validate", tt.with, pipeline.Deps{}, tt.wantErr)
		})
	}
}
