//go:build linux && (amd64 || arm64)

package server

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
)

// If the idle poller fails (an epoll error), the readers parked in it are
// woken and wait in their goroutines from then on, as do connections that
// come later: nothing is left unread.
func TestIdlePollerFailureWakesParkedReaders(t *testing.T) {
	s := newTestServer(t, func(c *config.Config) {
		c.FastPaths.IdleReader, c.FastPaths.IdlePoller = true, true
		c.WebSocket.PresenceLimit = 1 // no presence frames but a joiner's own
	})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/chatsocket?room=poll"
	dial := func() *websocket.Conn {
		t.Helper()
		conn, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// next reads frames until one of type typ with body (any body if "").
	next := func(conn *websocket.Conn, typ, body string) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			var f struct{ Type, Body string }
			if err := conn.ReadJSON(&f); err != nil {
				t.Fatalf("waiting for %s %q: %v", typ, body, err)
			}
			if f.Type == typ && (body == "" || f.Body == body) {
				return
			}
		}
	}
	members := func() []*client {
		s.hub.mu.RLock()
		defer s.hub.mu.RUnlock()
		r := s.hub.rooms["poll"]
		if r == nil {
			return nil
		}
		r.mu.RLock()
		defer r.mu.RUnlock()
		return append([]*client(nil), r.members...)
	}
	allParked := func(want bool) func() bool {
		return func() bool {
			cs := members()
			for _, c := range cs {
				c.mu.Lock()
				bc := c.bc
				c.mu.Unlock()
				if bc == nil || bc.parked.Load() != want {
					return false
				}
			}
			return len(cs) > 0
		}
	}
	send := func(conn *websocket.Conn, body string) {
		t.Helper()
		b, _ := json.Marshal(map[string]string{"body": body})
		if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
			t.Fatal(err)
		}
	}

	a, b := dial(), dial()
	next(a, "online", "")
	next(b, "online", "")
	testutil.Eventually(t, 5*time.Second, "both readers parked", allParked(true))

	s.idlePoller().fail(errors.New("injected epoll failure"))
	testutil.Eventually(t, 5*time.Second, "both readers woken", allParked(false))
	send(a, "after the failure")
	next(b, "message", "after the failure")
	late := dial()
	next(late, "online", "")
	send(late, "from a late joiner")
	next(a, "message", "from a late joiner")
	send(b, "still read")
	next(late, "message", "still read")
	if allParked(true)() {
		t.Fatal("a reader parked in a failed poller")
	}
}
