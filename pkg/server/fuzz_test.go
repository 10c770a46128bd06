package server

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
	_ "github.com/chatserver/chatserver/pkg/plugins"
)

// FuzzDecodeInbound feeds decodeInbound any frame: it must not panic, must
// either decode or say invalid_json in a bounded reason, and what it decodes
// must be what encoding/json sees in the frame.
func FuzzDecodeInbound(f *testing.F) {
	for _, s := range []string{
		`{"body": "hello", "username": "alice"}`, `{"body": ""}`, `{}`, `[1,2]`, `"x"`, `null`,
		`{"body": 5}`, `{"body": "a", "username": null}`, "{\"body\": \"\xff\"}", `{"body": "\ud800"}`,
		`{"body":"` + strings.Repeat("[", 100) + `"}`, strings.Repeat("[", 10000), `{"body":"x","body":"y"}`,
		`{"type":"typing","data":{"a":[1,{"b":null}]},"to":"bob","ref":"r-1"}`, `{"body":"x","tо":"bob"}`,
		`{"data":[1]}`, `{"data":null,"ref":"x"}`, `{"ref":""}`, `{"ref":"` + strings.Repeat("r", 65) + `"}`,
		`{"to":" "}`, `{"body":"x"} {"body":"y"}`, `{"Body":"x"}`, `{"ref":"é"}`, `{"type":5,"ref":"k"}`,
	} {
		f.Add(websocket.TextMessage, []byte(s))
	}
	f.Add(websocket.BinaryMessage, []byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, mt int, data []byte) {
		in, perr := decodeInbound(mt, data)
		if perr != nil {
			if perr.Code != pipeline.CodeInvalidJSON || perr.Reason == "" || len(perr.Reason) > 200 {
				t.Fatalf("rejection %+v", perr)
			}
			if in.Type != "" || in.Body != "" || in.Username != nil || in.Data != nil || in.To != "" {
				t.Fatalf("rejected frame decoded to %+v", in)
			}
			if in.Ref != "" && !validRef(in.Ref) {
				t.Fatalf("rejection carries an invalid ref %q", in.Ref)
			}
			return
		}
		if mt != websocket.TextMessage || !utf8.Valid(data) {
			t.Fatalf("accepted a frame of type %d / invalid UTF-8", mt)
		}
		// What encoding/json sees, case-sensitively: only the six fields.
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(data, &fields); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		str := func(k string) string {
			var v string
			_ = json.Unmarshal(fields[k], &v)
			return v
		}
		for k := range fields {
			switch k {
			case "type", "body", "username", "data", "to", "ref":
			default:
				t.Fatalf("accepted a frame with field %q", k)
			}
		}
		if in.Type != str("type") || in.Body != str("body") || in.To != str("to") || in.Ref != str("ref") ||
			(in.Username != nil) != (fields["username"] != nil && string(fields["username"]) != "null") {
			t.Fatalf("decoded %+v, json says %s", in, data)
		}
		if in.Ref != "" && !validRef(in.Ref) {
			t.Fatalf("accepted ref %q", in.Ref)
		}
		if in.Data != nil && (pipeline.CheckData(in.Data) != nil || in.Data[0] != '{') {
			t.Fatalf("accepted data %s", in.Data)
		}
	})
}

// fuzzSender is a connection with a cookie, for the pipeline fuzz target.
type fuzzSender struct {
	id     int64
	cookie string
	mu     sync.Mutex
	name   string
	values map[any]any
	sent   int
}

func (s *fuzzSender) ID() int64    { return s.id }
func (s *fuzzSender) Room() string { return "fuzz" }
func (s *fuzzSender) Username() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name
}
func (s *fuzzSender) SetUsername(n string) { s.mu.Lock(); s.name = n; s.mu.Unlock() }
func (s *fuzzSender) Cookie(name string) (string, bool) {
	return s.cookie, name == "username" && s.cookie != ""
}
func (s *fuzzSender) Query(string) string { return "" }
func (s *fuzzSender) RemoteAddr() string  { return "192.0.2.1:1" }
func (s *fuzzSender) Send(b []byte) error { s.mu.Lock(); s.sent++; s.mu.Unlock(); return nil }
func (s *fuzzSender) Value(k any) any     { s.mu.Lock(); defer s.mu.Unlock(); return s.values[k] }
func (s *fuzzSender) SetValue(k, v any)   { s.mu.Lock(); s.values[k] = v; s.mu.Unlock() }

// FuzzMessagePipeline runs a handshake cookie and a frame through the default
// config's join and message pipelines, as readLoop does, on a real server
// (store, broker, templates). No step may fail with `internal` (a panic is
// turned into one), and whatever is published must be a well-formed envelope
// whose html holds the user's strings as text only.
func FuzzMessagePipeline(f *testing.F) {
	f.Add("YWxpY2U=", []byte(`{"body": "hello <b>bob</b>"}`))
	f.Add("", []byte(`{"body": "hi", "username": "<img src=x onerror=alert(1)>"}`))
	f.Add("PHNjcmlwdD4", []byte(`{"body": "\u202e\u0000</div><script>alert(1)</script>", "username": "  "}`))
	f.Add("%3D%3D", []byte(`{"body": " \t\n "}`))
	f.Add("5byg5LiJ", []byte(`{"body": "`+strings.Repeat("字", 2001)+`"}`))
	f.Add("\"\"", []byte("{\"body\": \"\xed\xa0\x80\"}"))
	s := newTestServer(f, func(c *config.Config) {
		c.Pipelines[pipeline.Message][2].With = map[string]any{"rate": 1e9, "burst": 1 << 30} // fuzz the content, not the limiter
	})
	var seq int64
	f.Fuzz(func(t *testing.T, cookie string, data []byte) {
		seq++
		sender := &fuzzSender{id: seq, cookie: cookie, values: map[any]any{}}
		ctx := context.Background()
		p := s.Pipelines()
		join := &pipeline.Event{Kind: pipeline.Join, Sender: sender, Envelope: pipeline.Envelope{ID: "j", Type: pipeline.TypeOnline, Room: "fuzz", ClientID: seq}}
		if err := p.Run(ctx, join); err != nil {
			t.Fatalf("join refused: %v", err)
		}
		if n := sender.Username(); n == "" || utf8.RuneCountInString(n) > 32 || !utf8.ValidString(n) {
			t.Fatalf("join name %q", n)
		}
		in, perr := decodeInbound(websocket.TextMessage, data)
		if perr != nil {
			return
		}
		ev := &pipeline.Event{Kind: pipeline.Message, In: in, Sender: sender,
			Envelope: pipeline.Envelope{ID: "m", Type: pipeline.TypeMessage, Room: "fuzz", ClientID: seq, Username: sender.Username()}}
		err := p.Run(ctx, ev)
		if err != nil {
			if pe := pipeline.AsError(err); pe.Code == pipeline.CodeInternal {
				t.Fatalf("internal error (a panic?): %v", err)
			}
			return
		}
		entries, err := s.store.Recent(ctx, "fuzz", 1)
		if err != nil || len(entries) != 1 {
			t.Fatalf("history after an accepted message: %v %d", err, len(entries))
		}
		var env pipeline.Envelope
		if err := json.Unmarshal(entries[0].Frame, &env); err != nil {
			t.Fatalf("published frame is not JSON: %v", err)
		}
		if env.Body == "" || utf8.RuneCountInString(env.Body) > 2000 || !utf8.ValidString(env.Body) || env.HTML == "" {
			t.Fatalf("published envelope %s", entries[0].Frame)
		}
		if strings.Count(env.HTML, "<") != tagsInEmptyMessage {
			t.Fatalf("user markup reached html: %q", env.HTML)
		}
	})
}

// tagsInEmptyMessage is how many "<" templates/message.html itself writes.
const tagsInEmptyMessage = 10
