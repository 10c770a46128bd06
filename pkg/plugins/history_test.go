package plugins

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func TestHistory(t *testing.T) {
	rejectAfter := step("validate", map[string]any{"max_length": 1})
	tests := []struct {
		name        string
		with        map[string]any
		after       []pipeline.Step // steps after history
		kind        pipeline.Kind
		wantCode    string
		wantAppends int
		wantPublish int
		wantKeep    bool // Keep as the publisher saw it
	}{
		{"without broadcast it appends itself", nil, nil, pipeline.Message, "", 1, 0, false},
		{"with broadcast the publisher keeps it", nil, []pipeline.Step{step("broadcast", nil)}, pipeline.Message, "", 0, 1, true},
		{"a later rejection keeps nothing", nil, []pipeline.Step{rejectAfter}, pipeline.Message, pipeline.CodeTooLong, 0, 0, false},
		{"join not kept by default", nil, []pipeline.Step{step("broadcast", nil)}, pipeline.Join, "", 0, 1, false},
		{"leave not kept by default", nil, nil, pipeline.Leave, "", 0, 0, false},
		{"online kept when asked", map[string]any{"kinds": []string{"message", "online"}}, nil, pipeline.Join, "", 1, 0, false},
		{"offline kept when asked (comma list)", map[string]any{"kinds": "offline"}, []pipeline.Step{step("broadcast", nil)}, pipeline.Leave, "", 0, 1, true},
		{"message dropped from kinds", map[string]any{"kinds": []string{"online"}}, nil, pipeline.Message, "", 0, 0, false},
		{"a custom kind kept by default", nil, []pipeline.Step{step("broadcast", nil)}, "typing", "", 0, 1, true},
		{"a custom kind not in kinds", map[string]any{"kinds": "message"}, []pipeline.Step{step("broadcast", nil)}, "typing", "", 0, 1, false},
		{"a custom kind in kinds", map[string]any{"kinds": "typing"}, nil, "typing", "", 1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deps, pub, hist := testDeps(t)
			steps := append([]pipeline.Step{step("history", tt.with)}, tt.after...)
			p := build(t, pipeline.Config{pipeline.Join: steps, pipeline.Message: steps, pipeline.Leave: steps, "typing": steps}, deps)
			s := newSender(7)
			s.SetUsername("alice")
			ev := &pipeline.Event{Kind: tt.kind, Sender: s, In: pipeline.Inbound{Body: "hi"}, Envelope: pipeline.Envelope{Body: "hi"}}
			if tt.kind != pipeline.Message {
				ev.Envelope.Body = ""
			}
			err := p.Run(context.Background(), ev)
			if got := code(err); got != tt.wantCode {
				t.Fatalf("code %q (err %v), want %q", got, err, tt.wantCode)
			}
			if len(hist.calls) != tt.wantAppends || len(pub.calls) != tt.wantPublish {
				t.Fatalf("%d appends, %d publishes; want %d, %d", len(hist.calls), len(pub.calls), tt.wantAppends, tt.wantPublish)
			}
			if len(pub.calls) == 1 && pub.calls[0].keep != tt.wantKeep {
				t.Errorf("publish keep = %v, want %v", pub.calls[0].keep, tt.wantKeep)
			}
			if len(hist.calls) == 1 {
				a := hist.calls[0]
				m := decode(t, a.frame)
				if a.room != "lobby" || a.id == "" || m["id"] != a.id || m["room"] != "lobby" {
					t.Errorf("append(room %q, id %q) of %s: the envelope is not stamped", a.room, a.id, a.frame)
				}
				if m["type"] != tt.kind.EnvelopeType() || m["username"] != "alice" || m["client_id"] != float64(7) || m["ts"] == float64(0) {
					t.Errorf("appended frame %s is incomplete", a.frame)
				}
			}
		})
	}
}

func TestHistoryAppendError(t *testing.T) {
	deps, _, hist := testDeps(t)
	hist.err = errors.New("store down")
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("history", nil)}}, deps)
	err := p.Run(context.Background(), messageEvent(newSender(1), "hi", nil))
	if err == nil || !errors.Is(err, hist.err) || !strings.Contains(err.Error(), `room "lobby"`) {
		t.Fatalf("got %v, want the store's error wrapped with the room", err)
	}
	if code(err) != "?" {
		t.Errorf("a store failure must not be shown as a rejection: %v", err)
	}
}

func TestHistoryOptions(t *testing.T) {
	tests := []struct {
		name    string
		with    map[string]any
		deps    pipeline.Deps
		wantErr string
	}{
		{"defaults", nil, pipeline.Deps{History: &fakeHistory{}}, ""},
		{"no history store", nil, pipeline.Deps{Publisher: &fakePublisher{}}, "no history store"},
		{"custom kind", map[string]any{"kinds": []string{"message", "typing"}}, pipeline.Deps{History: &fakeHistory{}}, ""},
		{"not a kind name", map[string]any{"kinds": []string{"message", "Typing!"}}, pipeline.Deps{History: &fakeHistory{}}, `"Typing!"`},
		{"a server frame is no kind", map[string]any{"kinds": "ack"}, pipeline.Deps{History: &fakeHistory{}}, `"ack"`},
		{"join is no envelope type", map[string]any{"kinds": "join"}, pipeline.Deps{History: &fakeHistory{}}, `"join"`},
		{"unknown key", map[string]any{"size": 100}, pipeline.Deps{History: &fakeHistory{}}, "size"},
		{"wrong type", map[string]any{"kinds": 3}, pipeline.Deps{History: &fakeHistory{}}, "kinds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkBuild(t, pipeline.Message, "history", tt.with, tt.deps, tt.wantErr)
		})
	}
}
