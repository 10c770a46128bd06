package server

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/history"
)

func TestIsPresence(t *testing.T) {
	tests := []struct {
		frame string
		want  bool
	}{
		{`{"id":"0192f0c4-7e17-46eb-9f1e-11f5707ea0ec","type":"online","room":"r","client_id":1}`, true},
		{`{"id":"0192f0c4-7e17-46eb-9f1e-11f5707ea0ec","type":"offline","room":"r","client_id":1}`, true},
		{`{"id":"0192f0c4-7e17-46eb-9f1e-11f5707ea0ec","type":"message","room":"r","body":"x"}`, false},
		// the words inside a string are escaped, so they never match
		{`{"id":"1","type":"message","room":"r","body":"\"type\":\"online\""}`, false},
		{`{"id":"\"type\":\"online\"","type":"message","room":"r"}`, false},
		// however long the id a plugin set
		{`{"id":"` + strings.Repeat("x", 1000) + `","type":"offline","room":"r"}`, true},
		{`{"id":"1","type":"onlineish","room":"r"}`, false},
		{`{"type":"history","room":"r","messages":[]}`, false},
		{``, false},
	}
	for _, tt := range tests {
		if got := isPresence([]byte(tt.frame)); got != tt.want {
			t.Errorf("isPresence(%s) = %v, want %v", tt.frame, got, tt.want)
		}
	}
}

// The send queue bounds messages; presence has an allowance of
// presence_limit frames beyond it (see client.enqueue). The client has no
// writer here (it never started), so nothing drains its queue.
func TestEnqueueAllowsAPresenceBurst(t *testing.T) {
	const sendQueue, presenceLimit = 4, 10
	online := queued{id: "p", f: newOutFrame([]byte(`{"id":"p","type":"online"}`)), presence: true}
	message := queued{id: "m", f: newOutFrame([]byte(`{"id":"m","type":"message"}`)), kept: true}
	tests := []struct {
		name      string
		presence  int // presence frames queued first
		messages  int // then messages
		wantSlow  bool
		wantQueue int
	}{
		{"messages up to send_queue", 0, sendQueue, false, sendQueue},
		{"one message more is too slow", 0, sendQueue + 1, true, 0},
		{"a presence burst within the allowance", sendQueue + presenceLimit, 0, false, sendQueue + presenceLimit},
		{"one presence frame more is too slow", sendQueue + presenceLimit + 1, 0, true, 0},
		{"messages after a presence burst", presenceLimit, sendQueue, false, presenceLimit + sendQueue},
		{"too many messages after a presence burst", presenceLimit, sendQueue + 1, true, 0},
		{"a message after a full presence allowance", sendQueue + presenceLimit, 1, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, func(c *config.Config) {
				c.WebSocket.SendQueue, c.WebSocket.PresenceLimit = sendQueue, presenceLimit
			})
			c := newClient(s, 1, "r")
			var last error
			for range tt.presence {
				if err := c.enqueue(online); err != nil && last == nil {
					last = err
				}
			}
			for range tt.messages {
				if err := c.enqueue(message); err != nil && last == nil {
					last = err
				}
			}
			if slow := last == errClientSlow; slow != tt.wantSlow {
				t.Fatalf("first error %v, want slow=%v", last, tt.wantSlow)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if !tt.wantSlow && len(c.queue) != tt.wantQueue {
				t.Errorf("queue holds %d frames, want %d", len(c.queue), tt.wantQueue)
			}
		})
	}
}

// The writer tests count goroutines by this name in stack dumps (see
// writers in client_test.go); a rename must not leave them counting nothing.
func TestWriterLoopName(t *testing.T) {
	name := runtime.FuncForPC(reflect.ValueOf((*client).writeLoop).Pointer()).Name()
	if !strings.HasSuffix(name, "/pkg/server.(*client).writeLoop") {
		t.Fatalf("writeLoop is %q: update writers() in client_test.go", name)
	}
}

func TestTailIDs(t *testing.T) {
	entries := func(n int) []history.Entry {
		es := make([]history.Entry, n)
		for i := range es {
			es[i].ID = fmt.Sprint(i)
		}
		return es
	}
	tests := []struct {
		entries, n int
		want       []string
	}{
		{0, 3, []string{}},
		{2, 3, []string{"0", "1"}},
		{5, 3, []string{"2", "3", "4"}},
	}
	for _, tt := range tests {
		if got := tailIDs(entries(tt.entries), tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("tailIDs(%d entries, %d) = %v, want %v", tt.entries, tt.n, got, tt.want)
		}
	}
}

// A joiner drops live deliveries that its history frame already held, until
// the first kept frame newer than the history (then nothing older can come).
func TestEnqueueDropsRepeatsOfHistory(t *testing.T) {
	c := newClient(newTestServer(t, nil), 1, "r")
	c.histSeen = []string{"a", "b"}
	frame := func(id string, kept bool) queued {
		return queued{id: id, f: newOutFrame([]byte(`{"id":"` + id + `"}`)), kept: kept}
	}
	for _, q := range []queued{frame("b", true), frame("p", false), frame("c", true), frame("a", true)} {
		if err := c.enqueue(q); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var got []string
	for _, q := range c.queue {
		got = append(got, q.id)
	}
	// b repeats the history; p is presence (proves nothing); c is newer, so
	// a, after it, is let through.
	if want := []string{"p", "c", "a"}; !slices.Equal(got, want) || c.histSeen != nil {
		t.Fatalf("queued %v (histSeen %v), want %v and histSeen cleared", got, c.histSeen, want)
	}
}

// A real server's connections take the pong-taking wait (readable): the
// hijacked connection keeps the read buffer gorilla reads through and, where
// the wait is built and fast_paths.idle_reader is on, the raw socket. Without
// them the reader would park in gorilla's ReadMessage on a 4 KB stack, and
// every other test would still pass (gorilla's own pong handler also extends
// the deadline). That gorilla really reads through the buffer is
// TestReaderMissesNothingGorillaReadAhead's to show.
func TestHijackedConnectionKeepsSocketAndBuffer(t *testing.T) {
	s := newTestServer(t, nil)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/chatsocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var bc *batchConn // set once the 101 is written (a client joins its room before)
	testutil.Eventually(t, 5*time.Second, "the client's connection", func() bool {
		s.hub.mu.RLock()
		defer s.hub.mu.RUnlock()
		if r := s.hub.rooms[DefaultRoom]; r != nil {
			r.mu.RLock()
			defer r.mu.RUnlock()
			if len(r.members) == 1 {
				c := r.members[0]
				c.mu.Lock()
				bc = c.bc
				c.mu.Unlock()
			}
		}
		return bc != nil
	})
	if bc.br == nil {
		t.Fatal("no read buffer of our own: gorilla reads through its own")
	}
	switch on := s.cfg.FastPaths.IdleReader; {
	case peekBuilt && on && bc.raw == nil:
		t.Fatal("no raw socket: the reader cannot wait outside gorilla")
	case !on && bc.raw != nil:
		t.Fatal("fast_paths.idle_reader is off, yet the reader may wait outside gorilla")
	}
}

// The history frame, written by hand, is what encoding/json (without HTML
// escaping, as every frame) would make of it.
func TestAppendHistoryFrame(t *testing.T) {
	type historyFrame struct {
		Type     string            `json:"type"`
		Room     string            `json:"room"`
		Messages []json.RawMessage `json:"messages"`
		Complete *bool             `json:"complete,omitempty"`
	}
	yes, no := true, false
	entries := []history.Entry{
		{ID: "1", Frame: []byte(`{"id":"1","type":"message","html":"<b>&amp;</b>"}`)},
		{ID: "2", Frame: []byte(`{"id":"2","type":"online"}`)},
	}
	for _, tt := range []struct {
		entries  []history.Entry
		complete *bool
	}{{nil, nil}, {entries, nil}, {entries, &yes}, {entries[:1], &no}} {
		want := historyFrame{Type: "history", Room: "a.b-c_D", Messages: []json.RawMessage{}, Complete: tt.complete}
		for _, e := range tt.entries {
			want.Messages = append(want.Messages, e.Frame)
		}
		var buf strings.Builder
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(want); err != nil {
			t.Fatal(err)
		}
		if got := string(appendHistoryFrame(nil, "a.b-c_D", tt.entries, tt.complete)); got != strings.TrimSuffix(buf.String(), "\n") {
			t.Errorf("got  %s\nwant %s", got, buf.String())
		}
	}
}
