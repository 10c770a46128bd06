package server_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
)

// Server API keys of the tests: 32+ bytes each.
const (
	apiKey  = "api-test-key-0123456789abcdef-0001"
	apiKey2 = "api-test-key-0123456789abcdef-0002"
)

// withAPI turns the API on with apiKey and apiKey2, then applies more.
func withAPI(more ...func(*config.Config)) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.API.Keys = []string{apiKey, apiKey2}
		for _, m := range more {
			m(cfg)
		}
	}
}

// apiReply is an answer of the server API.
type apiReply struct {
	status int
	body   []byte
	header http.Header
}

// apiError decodes an error answer.
func (r apiReply) errorCode() (code, reason string) {
	var e struct{ Code, Reason string }
	_ = json.Unmarshal(r.body, &e)
	return e.Code, e.Reason
}

// apiCall makes one request: key "" sends no Authorization header; a JSON
// body gets Content-Type application/json unless ctype says otherwise.
func apiCall(t testing.TB, method, url, key, ctype, body string) apiReply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
		if ctype == "" {
			ctype = "application/json"
		}
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiReply{status: resp.StatusCode, body: b, header: resp.Header}
}

// closed reads c until its connection closes and returns the frames read
// on the way, the close code and its text (-1 and "" when the connection
// ended without a close frame).
func (c *wsClient) closed() (frames []frame, code int, text string) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return frames, ce.Code, ce.Text
			}
			return frames, -1, ""
		}
		var f frame
		_ = json.Unmarshal(b, &f)
		f.raw = b
		frames = append(frames, f)
	}
}

// dialName connects a client named name (the base64 username cookie).
func (s *testServer) dialName(t *testing.T, room, name string) *wsClient {
	t.Helper()
	return s.dialNamed(t, "room="+room, b64(name))
}

// joined dials name into room and reads its history and its own online.
func (s *testServer) joined(t *testing.T, room, name string) *wsClient {
	t.Helper()
	c := s.dialName(t, room, name)
	c.expect("history")
	c.next("online")
	return c
}
