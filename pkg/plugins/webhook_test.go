package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

func TestWebhook(t *testing.T) {
	tests := []struct {
		name     string
		handler  http.HandlerFunc // nil: the endpoint is down
		with     map[string]any
		wantCode string // "" ok, "internal" for a plain error
		wantBody string // what is broadcast, "" for nothing
		reply    string // what the sender alone gets, "" for nothing
		reason   string
	}{
		{name: "pass", handler: answer(200, `{"action":"pass"}`), wantBody: "hello"},
		{name: "204 is pass", handler: answer(204, ``), wantBody: "hello"},
		{name: "modify", handler: answer(200, `{"action":"modify","body":"HELLO\u0000"}`), wantBody: "HELLO"},
		{name: "modify to nothing", handler: answer(200, `{"action":"modify","body":" "}`), wantCode: pipeline.CodeEmpty},
		{name: "reject", handler: answer(200, `{"action":"reject","reason":"no shouting"}`), wantCode: pipeline.CodeRejected, reason: "no shouting"},
		{name: "reply", handler: answer(200, `{"action":"reply","reply":"pong"}`), reply: "pong"},
		{name: "pass with a reply", handler: answer(200, `{"action":"pass","reply":"noted"}`), wantBody: "hello", reply: "noted"},
		{name: "slow, fail closed", handler: slow, with: map[string]any{"timeout": "50ms"}, wantCode: pipeline.CodeInternal},
		{name: "slow, fail open", handler: slow, with: map[string]any{"timeout": "50ms", "fail_open": true}, wantBody: "hello"},
		{name: "500", handler: answer(500, `oops`), wantCode: pipeline.CodeInternal},
		{name: "500, fail open", handler: answer(500, `oops`), with: map[string]any{"fail_open": true}, wantBody: "hello"},
		{name: "invalid JSON reply", handler: answer(200, `{"action":`), wantCode: pipeline.CodeInternal},
		{name: "unknown action", handler: answer(200, `{"action":"explode"}`), wantCode: pipeline.CodeInternal},
		{name: "endpoint down", handler: nil, wantCode: pipeline.CodeInternal},
		{name: "endpoint down, fail open", handler: nil, with: map[string]any{"fail_open": true}, wantBody: "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := downURL(t)
			if tt.handler != nil {
				srv := httptest.NewServer(tt.handler)
				t.Cleanup(srv.Close)
				url = srv.URL
			}
			with := map[string]any{"url": url}
			for k, v := range tt.with {
				with[k] = v
			}
			deps, pub, _ := testDeps(t)
			p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("webhook", with), step("broadcast", nil)}}, deps)
			s := newSender(3)
			ev := messageEvent(s, "hello", nil)
			ev.Envelope.Body = "hello"
			err := p.Run(context.Background(), ev)
			switch {
			case tt.wantCode == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.wantCode != "" && pipeline.AsError(err).Code != tt.wantCode:
				t.Fatalf("err = %v, want code %s", err, tt.wantCode)
			}
			var pe *pipeline.Error
			if tt.wantCode == pipeline.CodeInternal && errors.As(err, &pe) {
				t.Errorf("a failed call is shown as %v; want an internal error that is logged", err)
			}
			if tt.reason != "" && !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err %v lacks reason %q", err, tt.reason)
			}
			if tt.wantBody == "" && len(pub.calls) > 0 {
				t.Errorf("broadcast %s", pub.calls[0].frame)
			}
			if tt.wantBody != "" && (len(pub.calls) != 1 || decode(t, pub.calls[0].frame)["body"] != tt.wantBody) {
				t.Errorf("broadcast %v, want body %q", pub.calls, tt.wantBody)
			}
			if tt.reply == "" && len(s.sent) > 0 {
				t.Errorf("replied %s", s.sent[0])
			}
			if tt.reply != "" {
				if len(s.sent) != 1 {
					t.Fatalf("%d replies, want 1", len(s.sent))
				}
				if r := decode(t, s.sent[0]); r["body"] != tt.reply || r["username"] != SystemName {
					t.Errorf("reply %s", s.sent[0])
				}
			}
		})
	}
}

// The request carries the event as documented, the configured headers, and
// only the configured kinds.
func TestWebhookRequest(t *testing.T) {
	var got []WebhookRequest
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req WebhookRequest
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		got, auth = append(got, req), r.Header.Get("Authorization")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	deps, _, _ := testDeps(t)
	p := build(t, pipeline.Config{
		pipeline.Join:    []pipeline.Step{step("webhook", map[string]any{"url": srv.URL})},
		pipeline.Message: []pipeline.Step{step("username", nil), step("webhook", map[string]any{"url": srv.URL, "headers": map[string]any{"Authorization": "Bearer t0k"}})},
	}, deps)
	s := newSender(9)
	s.SetUsername("ann")
	if err := p.Run(context.Background(), &pipeline.Event{Kind: pipeline.Join, Sender: s}); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background(), messageEvent(s, "hi", nil)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d calls, want 1 (joins are not in the default kinds)", len(got))
	}
	r := got[0]
	if r.Event != "message" || r.Room != "lobby" || r.ClientID != 9 || r.Username != "ann" || r.Body != "hi" || r.Envelope.Username != "ann" {
		t.Errorf("request %+v", r)
	}
	if auth != "Bearer t0k" {
		t.Errorf("Authorization %q", auth)
	}
}

func TestWebhookOptions(t *testing.T) {
	tests := []struct {
		with map[string]any
		want string
	}{
		{nil, "url is required"},
		{map[string]any{"url": "ftp://x"}, "http:// or https://"},
		{map[string]any{"url": "http://x", "timeout": "0s"}, "timeout must be positive"},
		{map[string]any{"url": "http://x", "kinds": "message,online"}, `unknown kind "online"`},
	}
	for _, tt := range tests {
		_, err := pipeline.Build(pipeline.Config{pipeline.Message: []pipeline.Step{step("webhook", tt.with)}}, pipeline.Deps{}, pipeline.BuildOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("with %v: err = %v, want %q", tt.with, err, tt.want)
		}
	}
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// slow answers after 2s, or when the caller gives up (which the server
// notices once the request body was read).
func slow(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-time.After(2 * time.Second):
	case <-r.Context().Done():
	}
	w.WriteHeader(http.StatusNoContent)
}

// downURL is the URL of a port nothing listens on.
func downURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// A step keeps its connections for the next messages: two rounds of 8
// concurrent messages open 8 connections, not 8 then 6 more (as a client on
// http.DefaultTransport, which keeps 2 idle connections per host, would).
func TestWebhookReusesConnections(t *testing.T) {
	var conns atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // hold every call of a round until all are in
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	deps, _, _ := testDeps(t)
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("webhook", map[string]any{"url": srv.URL})}}, deps)
	const concurrent = 8
	for round := range 2 {
		var wg sync.WaitGroup
		for i := range concurrent {
			wg.Go(func() {
				if err := p.Run(context.Background(), messageEvent(newSender(int64(i+1)), "hi", nil)); err != nil {
					t.Error(err)
				}
			})
		}
		testutil.Eventually(t, 5*time.Second, "every call of the round in", func() bool { return conns.Load() >= concurrent })
		for range concurrent {
			release <- struct{}{}
		}
		wg.Wait()
		if n := conns.Load(); n != concurrent {
			t.Fatalf("round %d: %d connections opened, want %d", round, n, concurrent)
		}
	}
}
