package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"strings"
	"sync"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// fakeSender is a connection for tests: it records what it is sent.
type fakeSender struct {
	id      int64
	room    string
	cookies map[string]string
	query   map[string]string

	pipeline.SenderState // name and values, as every Sender keeps them

	mu   sync.Mutex
	sent [][]byte
}

func newSender(id int64) *fakeSender {
	return &fakeSender{id: id, room: "lobby", cookies: map[string]string{}, query: map[string]string{}}
}

func (s *fakeSender) ID() int64                         { return s.id }
func (s *fakeSender) Room() string                      { return s.room }
func (s *fakeSender) Cookie(name string) (string, bool) { v, ok := s.cookies[name]; return v, ok }
func (s *fakeSender) Query(name string) string          { return s.query[name] }
func (s *fakeSender) RemoteAddr() string                { return "192.0.2.1:50000" }
func (s *fakeSender) Send(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, append([]byte(nil), frame...))
	return nil
}

type published struct {
	room, id string
	frame    []byte
	keep     bool
}

// fakePublisher records every Publish; err, if set, is returned instead.
type fakePublisher struct {
	mu    sync.Mutex
	calls []published
	err   error
}

func (p *fakePublisher) Publish(_ context.Context, pub pipeline.Publication) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.calls = append(p.calls, published{pub.Room, pub.ID, append([]byte(nil), pub.Frame...), pub.Keep})
	return nil
}

type appended struct {
	room, id string
	frame    []byte
}

// fakeHistory records every Append; err, if set, is returned instead.
type fakeHistory struct {
	mu    sync.Mutex
	calls []appended
	err   error
}

func (h *fakeHistory) Append(_ context.Context, room, id string, frame []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return h.err
	}
	h.calls = append(h.calls, appended{room, id, append([]byte(nil), frame...)})
	return nil
}

// testDeps are the services of a test server: recording fakes and the real
// message template.
func testDeps(t *testing.T) (pipeline.Deps, *fakePublisher, *fakeHistory) {
	t.Helper()
	tmpl, err := template.ParseFiles("../../templates/message.html")
	if err != nil {
		t.Fatal(err)
	}
	pub, hist := &fakePublisher{}, &fakeHistory{}
	return pipeline.Deps{Publisher: pub, History: hist, Templates: tmpl}, pub, hist
}

// build builds the pipelines of cfg or fails the test.
func build(t *testing.T, cfg pipeline.Config, deps pipeline.Deps) *pipeline.Pipelines {
	t.Helper()
	p, err := pipeline.Build(cfg, deps, pipeline.BuildOptions{})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// step is shorthand for a pipeline step.
func step(use string, with map[string]any) pipeline.Step {
	return pipeline.Step{Use: use, With: with}
}

// messageEvent is a message event from s, as the server decodes it.
func messageEvent(s pipeline.Sender, body string, rename *string) *pipeline.Event {
	return &pipeline.Event{Kind: pipeline.Message, Sender: s, In: pipeline.Inbound{Body: body, Username: rename}}
}

// code is the rejection code of err, "" for nil, "?" for a non-*Error.
func code(err error) string {
	if err == nil {
		return ""
	}
	var pe *pipeline.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return "?"
}

// decode decodes a published frame into a map, so tests see the wire keys.
func decode(t *testing.T, frame []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(frame, &m); err != nil {
		t.Fatalf("frame %s: %v", frame, err)
	}
	return m
}

func ptr[T any](v T) *T { return &v }

// checkBuild builds a pipeline whose kind pipeline is the one step use with
// options with, and checks the outcome: no error when wantErr is "", else an
// error containing wantErr.
func checkBuild(t *testing.T, kind pipeline.Kind, use string, with map[string]any, deps pipeline.Deps, wantErr string) {
	t.Helper()
	cfg := pipeline.Config{kind: {step(use, with)}}
	_, err := pipeline.Build(cfg, deps, pipeline.BuildOptions{})
	switch {
	case wantErr == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
		t.Fatalf("error %v, want one containing %q", err, wantErr)
	}
}
