package plugins

import (
	"context"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// newRateLimit builds a ratelimit step as Build would, with a clock the test
// moves by hand, so no test depends on how fast the machine runs.
func newRateLimit(t *testing.T, with map[string]any) (pipeline.Handler, *time.Time) {
	t.Helper()
	spec, ok := pipeline.Lookup("ratelimit")
	if !ok {
		t.Fatal("ratelimit is not registered")
	}
	opts, err := pipeline.DecodeOptions(spec, with)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := spec.New(opts, pipeline.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 21, 4, 5, 0, time.UTC)
	pl.(*RateLimit).now = func() time.Time { return now }
	return pl.Wrap(pipeline.HandlerFunc(func(context.Context, *pipeline.Event) error { return nil })), &now
}

func TestRateLimit(t *testing.T) {
	type send struct {
		client   int     // index into the test's senders
		after    float64 // seconds to advance the clock first
		wantCode string
	}
	burst := func(client, n int) []send {
		s := make([]send, n)
		for i := range s {
			s[i] = send{client: client}
		}
		return s
	}
	tests := []struct {
		name  string
		with  map[string]any
		sends []send
	}{
		{"burst of 10 passes, the 11th is limited", nil,
			append(burst(0, 10), send{wantCode: pipeline.CodeRateLimited})},
		{"clients have separate buckets", nil,
			append(append(burst(0, 10), send{client: 0, wantCode: pipeline.CodeRateLimited}), burst(1, 10)...)},
		{"a token comes back after 1/rate seconds", nil,
			append(burst(0, 10),
				send{after: 0.1, wantCode: pipeline.CodeRateLimited},
				send{after: 0.1},
				send{wantCode: pipeline.CodeRateLimited})},
		{"custom rate and burst", map[string]any{"rate": 0.5, "burst": 2},
			[]send{{}, {}, {wantCode: pipeline.CodeRateLimited}, {after: 1.9, wantCode: pipeline.CodeRateLimited}, {after: 0.1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, now := newRateLimit(t, tt.with)
			senders := []*fakeSender{newSender(1), newSender(2)}
			for i, s := range tt.sends {
				*now = now.Add(time.Duration(s.after * float64(time.Second)))
				err := h.Handle(context.Background(), messageEvent(senders[s.client], "hi", nil))
				if got := code(err); got != s.wantCode {
					t.Fatalf("send %d: code %q (err %v), want %q", i+1, got, err, s.wantCode)
				}
			}
		})
	}
}

func TestRateLimitOnlyMessages(t *testing.T) {
	h, _ := newRateLimit(t, map[string]any{"burst": 1})
	s := newSender(1)
	for i := 0; i < 5; i++ {
		for _, k := range []pipeline.Kind{pipeline.Join, pipeline.Leave} {
			if err := h.Handle(context.Background(), &pipeline.Event{Kind: k, Sender: s}); err != nil {
				t.Fatalf("%s event limited: %v", k, err)
			}
		}
	}
	if err := h.Handle(context.Background(), messageEvent(s, "hi", nil)); err != nil {
		t.Fatalf("join/leave used up the message bucket: %v", err)
	}
}

// Two ratelimit steps in one pipeline keep their own buckets: a client that
// used up the first step's burst is not charged twice by the second.
func TestRateLimitStepsDoNotShareState(t *testing.T) {
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{
		step("ratelimit", map[string]any{"rate": 0.001, "burst": 3}),
		step("ratelimit", map[string]any{"rate": 0.001, "burst": 3}),
	}}, pipeline.Deps{})
	s := newSender(1)
	for i := 1; i <= 3; i++ {
		if err := p.Run(context.Background(), messageEvent(s, "hi", nil)); err != nil {
			t.Fatalf("message %d: %v (the two steps share a bucket)", i, err)
		}
	}
	if err := p.Run(context.Background(), messageEvent(s, "hi", nil)); code(err) != pipeline.CodeRateLimited {
		t.Fatalf("4th message: %v, want rate_limited", err)
	}
}

func TestRateLimitOptions(t *testing.T) {
	tests := []struct {
		name    string
		with    map[string]any
		wantErr string
	}{
		{"defaults", nil, ""},
		{"integer rate", map[string]any{"rate": 5, "burst": 10}, ""},
		{"unknown key", map[string]any{"per": "second"}, "per"},
		{"wrong type", map[string]any{"rate": "fast"}, "rate"},
		{"zero rate", map[string]any{"rate": 0}, "rate must be greater than 0"},
		{"negative rate", map[string]any{"rate": -1}, "rate must be greater than 0"},
		{"zero burst", map[string]any{"burst": 0}, "burst must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkBuild(t, pipeline.Message, "ratelimit", tt.with, pipeline.Deps{}, tt.wantErr)
		})
	}
}
