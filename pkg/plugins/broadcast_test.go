package plugins

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func TestBroadcast(t *testing.T) {
	preset := pipeline.Envelope{ID: "fixed", Type: pipeline.TypeMessage, Room: "other", ClientID: 99, Username: "server-name", Datetime: "2026-11-25 21:04:05", TS: 1764104645123}
	tests := []struct {
		name     string
		kind     pipeline.Kind
		env      pipeline.Envelope
		wantType string
		check    func(t *testing.T, m map[string]any)
	}{
		{"message stamped from the sender", pipeline.Message, pipeline.Envelope{Body: "hi", HTML: "<p>hi</p>"}, pipeline.TypeMessage,
			func(t *testing.T, m map[string]any) {
				if m["room"] != "lobby" || m["client_id"] != float64(7) || m["username"] != "alice" || m["body"] != "hi" || m["html"] != "<p>hi</p>" {
					t.Errorf("frame %v", m)
				}
			}},
		{"server stamps win", pipeline.Message, func() pipeline.Envelope { e := preset; e.Body = "hi"; return e }(), pipeline.TypeMessage,
			func(t *testing.T, m map[string]any) {
				if m["id"] != "fixed" || m["room"] != "other" || m["client_id"] != float64(99) || m["username"] != "server-name" ||
					m["ts"] != float64(1764104645123) || m["datetime"] != "2026-11-25 21:04:05" {
					t.Errorf("preset fields overwritten: %v", m)
				}
			}},
		{"online carries no body or html", pipeline.Join, pipeline.Envelope{Body: "stray", HTML: "<p>stray</p>"}, pipeline.TypeOnline,
			func(t *testing.T, m map[string]any) {
				if _, ok := m["body"]; ok {
					t.Errorf("online frame has a body: %v", m)
				}
				if _, ok := m["html"]; ok {
					t.Errorf("online frame has html: %v", m)
				}
			}},
		{"offline carries no body or html", pipeline.Leave, pipeline.Envelope{Body: "stray", HTML: "x"}, pipeline.TypeOffline,
			func(t *testing.T, m map[string]any) {
				if _, ok := m["body"]; ok {
					t.Errorf("offline frame has a body: %v", m)
				}
				if _, ok := m["html"]; ok {
					t.Errorf("offline frame has html: %v", m)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deps, pub, _ := testDeps(t)
			var sawPublished bool
			after := pipeline.PluginFunc(func(next pipeline.Handler) pipeline.Handler {
				return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
					sawPublished = ev.Published
					return next.Handle(ctx, ev)
				})
			})
			pl, err := NewBroadcast(deps.Publisher)
			if err != nil {
				t.Fatal(err)
			}
			h := pl.Wrap(after.Wrap(pipeline.HandlerFunc(func(context.Context, *pipeline.Event) error { return nil })))
			s := newSender(7)
			s.SetUsername("alice")
			ev := &pipeline.Event{Kind: tt.kind, Sender: s, Envelope: tt.env}
			if err := h.Handle(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			if !ev.Published || !sawPublished {
				t.Errorf("Published = %v, seen by the next step = %v; want true, true", ev.Published, sawPublished)
			}
			if len(pub.calls) != 1 {
				t.Fatalf("%d publishes, want 1", len(pub.calls))
			}
			c := pub.calls[0]
			m := decode(t, c.frame)
			if m["type"] != tt.wantType || m["id"] == "" || m["id"] != c.id || m["room"] != c.room || c.keep {
				t.Errorf("publish(room %q, id %q, keep %v) of %s", c.room, c.id, c.keep, c.frame)
			}
			if _, err := time.ParseInLocation(pipeline.DatetimeLayout, m["datetime"].(string), time.Local); err != nil || m["ts"] == float64(0) {
				t.Errorf("bad time stamp in %s", c.frame)
			}
			tt.check(t, m)
		})
	}
}

func TestBroadcastPublishError(t *testing.T) {
	deps, pub, _ := testDeps(t)
	pub.err = errors.New("broker down")
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("broadcast", nil)}}, deps)
	ev := messageEvent(newSender(1), "hi", nil)
	err := p.Run(context.Background(), ev)
	if !errors.Is(err, pub.err) || !strings.Contains(err.Error(), `room "lobby"`) {
		t.Fatalf("got %v, want the publisher's error wrapped with the room", err)
	}
	if ev.Published {
		t.Error("Published set although Publish failed")
	}
}

func TestBroadcastNeedsPublisher(t *testing.T) {
	tests := []struct {
		name    string
		deps    pipeline.Deps
		with    map[string]any
		wantErr string
	}{
		{"no publisher", pipeline.Deps{History: &fakeHistory{}}, nil, "no publisher"},
		{"takes no options", pipeline.Deps{Publisher: &fakePublisher{}}, map[string]any{"keep": true}, `"keep"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pipeline.Build(pipeline.Config{pipeline.Leave: []pipeline.Step{step("broadcast", tt.with)}}, tt.deps, pipeline.BuildOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "pipelines.leave[0] (broadcast)") {
				t.Fatalf("error %v, want one naming the step and containing %q", err, tt.wantErr)
			}
		})
	}
}
