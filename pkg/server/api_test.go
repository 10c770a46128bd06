package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
)

// Keys: the write routes need one of the configured keys (either, for
// rotation) and do not exist without keys; the reads are open unless
// api.protect_reads; refusals are 401 {"code":"unauthorized"} and counted.
func TestAPIAuth(t *testing.T) {
	off := startServer(t, nil)
	on := startServer(t, withAPI())
	protected := startServer(t, withAPI(func(c *config.Config) { c.API.ProtectReads = true }))
	kick := `{"username":"nobody"}`
	tests := []struct {
		name   string
		srv    *testServer
		method string
		path   string
		auth   string // the whole Authorization header; "" sends none
		body   string
		status int
		code   string // the error code, for errors
	}{
		{"api off: kick does not exist", off, "POST", "/api/rooms/lobby/kick", "Bearer " + apiKey, kick, 404, "not_found"},
		{"api off: delete does not exist", off, "DELETE", "/api/rooms/lobby/messages/x", "Bearer " + apiKey, "", 404, "not_found"},
		{"api off: post does not exist", off, "POST", "/api/rooms/lobby/messages", "Bearer " + apiKey, `{"username":"a","body":"b"}`, 404, "not_found"},
		{"api off: reads are open", off, "GET", "/api/rooms", "", "", 200, ""},
		{"no header", on, "POST", "/api/rooms/lobby/kick", "", kick, 401, "unauthorized"},
		{"wrong scheme", on, "POST", "/api/rooms/lobby/kick", "Basic " + apiKey, kick, 401, "unauthorized"},
		{"empty bearer", on, "POST", "/api/rooms/lobby/kick", "Bearer ", kick, 401, "unauthorized"},
		{"wrong key of the same length", on, "POST", "/api/rooms/lobby/kick", "Bearer " + strings.Repeat("x", len(apiKey)), kick, 401, "unauthorized"},
		{"last byte differs", on, "POST", "/api/rooms/lobby/kick", "Bearer " + apiKey[:len(apiKey)-1] + "9", kick, 401, "unauthorized"},
		{"a prefix of the key", on, "POST", "/api/rooms/lobby/kick", "Bearer " + apiKey[:10], kick, 401, "unauthorized"},
		{"the key and more", on, "POST", "/api/rooms/lobby/kick", "Bearer " + apiKey + "x", kick, 401, "unauthorized"},
		{"a key for delete is checked before the id", on, "DELETE", "/api/rooms/lobby/messages/x", "Bearer nope", "", 401, "unauthorized"},
		{"a key is checked before the room name", on, "POST", "/api/rooms/bad%20room/kick", "", kick, 401, "unauthorized"},
		{"first key", on, "POST", "/api/rooms/lobby/kick", "Bearer " + apiKey, kick, 200, ""},
		{"second key (rotation)", on, "POST", "/api/rooms/lobby/kick", "Bearer " + apiKey2, kick, 200, ""},
		{"scheme in any case", on, "POST", "/api/rooms/lobby/kick", "bearer " + apiKey, kick, 200, ""},
		{"reads open by default", on, "GET", "/api/rooms/lobby/history", "", "", 200, ""},
		{"protected: rooms", protected, "GET", "/api/rooms", "", "", 401, "unauthorized"},
		{"protected: history", protected, "GET", "/api/rooms/lobby/history", "", "", 401, "unauthorized"},
		{"protected: members, bad key", protected, "GET", "/api/rooms/lobby/members", "Bearer " + apiKey + "!", "", 401, "unauthorized"},
		{"protected: members with a key", protected, "GET", "/api/rooms/lobby/members", "Bearer " + apiKey, "", 200, ""},
		{"protected: the document stays public", protected, "GET", "/api/openapi.json", "", "", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, tt.srv.URL+tt.path, strings.NewReader(tt.body))
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct{ Code, Reason string }
			_ = json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != tt.status || e.Code != tt.code {
				t.Fatalf("%d %q (%s), want %d %q", resp.StatusCode, e.Code, e.Reason, tt.status, tt.code)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
			if strings.Contains(e.Reason, apiKey[5:]) {
				t.Errorf("the reason shows the key: %q", e.Reason)
			}
		})
	}
	// Refusals are counted by reason: on the second server, 4 without a
	// usable header (none twice, Basic, empty), 5 with a wrong key.
	if got := counterValue(t, on, `chatserver_api_unauthorized_total{reason="missing"}`); got != 4 {
		t.Errorf("missing refusals counted %v, want 4", got)
	}
	if got := counterValue(t, on, `chatserver_api_unauthorized_total{reason="invalid"}`); got != 5 {
		t.Errorf("invalid refusals counted %v, want 5", got)
	}
}

// Bad input to every route that takes some: the status and the code, and
// nothing changed.
func TestAPIBadInput(t *testing.T) {
	s := startServer(t, withAPI(func(c *config.Config) { c.WebSocket.MaxMessageBytes = 256 }))
	alice := s.joined(t, "lobby", "alice")
	tests := []struct {
		name         string
		method, path string
		ctype, body  string
		status       int
		code         string
		reason       string // a part of the reason, when it matters
	}{
		{"kick: not JSON", "POST", "/api/rooms/lobby/kick", "", `{"username":`, 400, "invalid_json", ""},
		{"kick: trailing data", "POST", "/api/rooms/lobby/kick", "", `{"username":"a"} {}`, 400, "invalid_json", "trailing"},
		{"kick: an array", "POST", "/api/rooms/lobby/kick", "", `["alice"]`, 400, "invalid_json", ""},
		{"kick: username of the wrong type", "POST", "/api/rooms/lobby/kick", "", `{"username":5}`, 400, "invalid_json", "username"},
		{"kick: unknown field", "POST", "/api/rooms/lobby/kick", "", `{"username":"alice","reason":"x"}`, 400, "invalid_json", "reason"},
		{"kick: no username", "POST", "/api/rooms/lobby/kick", "", `{"ban":"10m"}`, 400, "invalid_json", "username"},
		{"kick: empty username", "POST", "/api/rooms/lobby/kick", "", `{"username":""}`, 400, "invalid_json", "username"},
		{"kick: blank username", "POST", "/api/rooms/lobby/kick", "", `{"username":"  "}`, 400, "invalid_json", "username"},
		{"kick: ban not a duration", "POST", "/api/rooms/lobby/kick", "", `{"username":"alice","ban":"forever"}`, 400, "invalid_json", "ban"},
		{"kick: negative ban", "POST", "/api/rooms/lobby/kick", "", `{"username":"alice","ban":"-1m"}`, 400, "invalid_json", "ban"},
		{"kick: ban of the wrong type", "POST", "/api/rooms/lobby/kick", "", `{"username":"alice","ban":600}`, 400, "invalid_json", "ban"},
		{"kick: text/plain", "POST", "/api/rooms/lobby/kick", "text/plain", `{"username":"alice"}`, 415, "unsupported_media_type", ""},
		{"kick: form", "POST", "/api/rooms/lobby/kick", "application/x-www-form-urlencoded", `username=alice`, 415, "unsupported_media_type", ""},
		{"kick: oversize body", "POST", "/api/rooms/lobby/kick", "", `{"username":"` + strings.Repeat("a", 300) + `"}`, 413, "too_large", "256"},
		{"kick: room with a space", "POST", "/api/rooms/bad%20room/kick", "", `{"username":"alice"}`, 400, "bad_request", "room"},
		{"kick: room too long", "POST", "/api/rooms/" + strings.Repeat("r", 65) + "/kick", "", `{"username":"alice"}`, 400, "bad_request", "room"},
		{"kick: room with a colon", "POST", "/api/rooms/a:b/kick", "", `{"username":"alice"}`, 400, "bad_request", "room"},
		{"delete: invalid room", "DELETE", "/api/rooms/%C3%A9t%C3%A9/messages/x", "", "", 400, "bad_request", "room"},
		{"delete: unknown id", "DELETE", "/api/rooms/lobby/messages/nope", "", "", 404, "not_found", ""},
		{"history: invalid room", "GET", "/api/rooms/a%2Fb/history", "", "", 400, "bad_request", ""},
		{"history: limit not a number", "GET", "/api/rooms/lobby/history?limit=x", "", "", 400, "bad_request", "limit"},
		{"history: limit 0", "GET", "/api/rooms/lobby/history?limit=0", "", "", 400, "bad_request", "limit"},
		{"history: negative limit", "GET", "/api/rooms/lobby/history?limit=-3", "", "", 400, "bad_request", "limit"},
		{"history: unknown before", "GET", "/api/rooms/lobby/history?before=nope", "", "", 404, "not_found", ""},
		{"history: empty before", "GET", "/api/rooms/lobby/history?before=", "", "", 404, "not_found", ""},
		{"members: invalid room", "GET", "/api/rooms/..%2A/members", "", "", 400, "bad_request", ""},
		{"kick: GET is not a route", "GET", "/api/rooms/lobby/kick", "", "", 405, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := apiCall(t, tt.method, s.URL+tt.path, apiKey, tt.ctype, tt.body)
			code, reason := r.errorCode()
			if r.status != tt.status || code != tt.code || !strings.Contains(reason, tt.reason) {
				t.Fatalf("%d %q %q, want %d %q containing %q", r.status, code, reason, tt.status, tt.code, tt.reason)
			}
		})
	}
	// Nobody was kicked by a bad request: alice still talks.
	alice.send(map[string]any{"body": "still here"})
	if f := alice.next("message"); f.Body != "still here" {
		t.Fatalf("alice got %s", f.raw)
	}
}

// DELETE removes the message from the history (the API's and a joiner's)
// and tells the members; a second DELETE is a 404.
func TestAPIDelete(t *testing.T) {
	s := startServer(t, withAPI(fastLimits))
	alice := s.joined(t, "lobby", "alice")
	bob := s.joined(t, "lobby", "bob")
	alice.next("online") // bob's
	var ids []string
	for i := range 3 {
		alice.send(map[string]any{"body": fmt.Sprint("m", i)})
		ids = append(ids, alice.next("message").ID)
		bob.next("message")
	}
	r := apiCall(t, "DELETE", s.URL+"/api/rooms/lobby/messages/"+ids[1], apiKey, "", "")
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	for _, c := range []*wsClient{alice, bob} {
		f := c.next("delete")
		if want := fmt.Sprintf(`{"type":"delete","room":"lobby","id":%q}`, ids[1]); string(f.raw) != want {
			t.Fatalf("delete frame %s, want %s", f.raw, want)
		}
	}
	var hist []frame
	r = apiCall(t, "GET", s.URL+"/api/rooms/lobby/history", "", "", "")
	if err := json.Unmarshal(r.body, &hist); err != nil || len(hist) != 2 || hist[0].ID != ids[0] || hist[1].ID != ids[2] {
		t.Fatalf("history after delete: %s", r.body)
	}
	carol := s.dialName(t, "lobby", "carol")
	if h := carol.expect("history"); len(h.Messages) != 2 || h.Messages[0].ID != ids[0] || h.Messages[1].ID != ids[2] {
		t.Fatalf("a joiner's history after delete: %s", h.raw)
	}
	r = apiCall(t, "DELETE", s.URL+"/api/rooms/lobby/messages/"+ids[1], apiKey, "", "")
	if code, _ := r.errorCode(); r.status != 404 || code != "not_found" {
		t.Fatalf("second DELETE: %d %s", r.status, r.body)
	}
	r = apiCall(t, "DELETE", s.URL+"/api/rooms/elsewhere/messages/"+ids[0], apiKey, "", "")
	if r.status != 404 {
		t.Fatalf("DELETE of a message of another room: %d %s", r.status, r.body)
	}
}

// A kick closes every connection of the name in the room with 4001
// "kicked", and nobody else's; the others see it leave.
func TestAPIKick(t *testing.T) {
	s := startServer(t, withAPI())
	alice := s.joined(t, "lobby", "alice")
	bob1 := s.joined(t, "lobby", "bob")
	bob2 := s.joined(t, "lobby", "bob")
	bobOps := s.joined(t, "ops", "bob")
	testutil.Eventually(t, 5*time.Second, "3 members in lobby", func() bool {
		_, body := httpGet(t, s.URL+"/api/rooms/lobby/members")
		return strings.Count(body, "client_id") == 3
	})
	r := apiCall(t, "POST", s.URL+"/api/rooms/lobby/kick", apiKey, "", `{"username":"bob"}`)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != `{"kicked":2}` {
		t.Fatalf("kick: %d %s", r.status, r.body)
	}
	for _, c := range []*wsClient{bob1, bob2} {
		if _, code, text := c.closed(); code != 4001 || text != "kicked" {
			t.Fatalf("bob closed with %d %q, want 4001 kicked", code, text)
		}
	}
	gone := 0
	for gone < 2 {
		if f := alice.next("offline"); f.Username == "bob" {
			gone++
		}
	}
	bobOps.send(map[string]any{"body": "still in ops"})
	if f := bobOps.next("message"); f.Body != "still in ops" {
		t.Fatalf("bob in ops got %s", f.raw)
	}
	r = apiCall(t, "POST", s.URL+"/api/rooms/lobby/kick", apiKey, "", `{"username":"nobody"}`)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != `{"kicked":0}` {
		t.Fatalf("kick of nobody: %d %s", r.status, r.body)
	}
	// Kicked without a ban: bob may come back at once.
	s.joined(t, "lobby", "bob")
}

// A ban refuses the name's joins to that room: error rejected, then 4001,
// before any history, and nobody sees it join. Other names and other rooms are not affected.
func TestAPIBan(t *testing.T) {
	s := startServer(t, withAPI())
	alice := s.joined(t, "lobby", "alice")
	r := apiCall(t, "POST", s.URL+"/api/rooms/lobby/kick", apiKey, "", `{"username":"mallory","ban":"1h"}`)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != `{"kicked":0}` {
		t.Fatalf("ban: %d %s", r.status, r.body)
	}
	mallory := s.dialName(t, "lobby", "mallory")
	frames, code, text := mallory.closed()
	var errs []frame
	for _, f := range frames {
		switch f.Type {
		case "error":
			errs = append(errs, f)
		case "online", "message", "history":
			t.Fatalf("a banned joiner got %s", f.raw)
		}
	}
	if len(errs) != 1 || errs[0].Code != "rejected" || code != 4001 || text != "banned" {
		t.Fatalf("banned join: errors %v, close %d %q; want one rejected, then 4001 banned", errs, code, text)
	}
	s.joined(t, "ops", "mallory") // another room
	s.joined(t, "lobby", "bob")   // another name
	// alice saw bob join, and never mallory.
	if f := alice.next("online"); f.Username != "bob" {
		t.Fatalf("alice saw %s join, want bob", f.raw)
	}
	_, members := httpGet(t, s.URL+"/api/rooms/lobby/members")
	if strings.Contains(members, "mallory") {
		t.Fatalf("a banned joiner is listed: %s", members)
	}
}

// GET /api/rooms: rooms with members, by name, with their counts.
func TestAPIRooms(t *testing.T) {
	s := startServer(t, withAPI())
	rooms := func() string {
		r := apiCall(t, "GET", s.URL+"/api/rooms", "", "", "")
		if r.status != 200 {
			t.Fatalf("rooms: %d %s", r.status, r.body)
		}
		return strings.TrimSpace(string(r.body))
	}
	if got := rooms(); got != "[]" {
		t.Fatalf("no rooms yet: %s", got)
	}
	s.joined(t, "lobby", "alice")
	s.joined(t, "ops", "bob")
	carol := s.joined(t, "ops", "carol")
	if got, want := rooms(), `[{"room":"lobby","members":1},{"room":"ops","members":2}]`; got != want {
		t.Fatalf("rooms %s, want %s", got, want)
	}
	carol.conn.Close()
	testutil.Eventually(t, 5*time.Second, "carol to leave ops", func() bool {
		return rooms() == `[{"room":"lobby","members":1},{"room":"ops","members":1}]`
	})
}

// History pages backwards: the limit (default 50, at most history.size)
// messages before an id, oldest first.
func TestAPIHistoryPaging(t *testing.T) {
	s := startServer(t, withAPI(fastLimits, func(c *config.Config) { c.History.Size = 60 }))
	alice := s.joined(t, "lobby", "alice")
	var ids []string // of m0..m69; the history keeps m10..m69
	for i := range 70 {
		alice.send(map[string]any{"body": fmt.Sprint("m", i)})
		ids = append(ids, alice.next("message").ID)
	}
	bodies := func(query string) []string {
		r := apiCall(t, "GET", s.URL+"/api/rooms/lobby/history"+query, "", "", "")
		var fs []frame
		if r.status != 200 || json.Unmarshal(r.body, &fs) != nil {
			t.Fatalf("history%s: %d %s", query, r.status, r.body)
		}
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = f.Body
		}
		return out
	}
	span := func(from, to int) []string { // bodies m<from>..m<to-1>
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprint("m", i))
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", span(20, 70)},                                // default 50
		{"?limit=3", span(67, 70)},                        // the newest 3
		{"?limit=1000", span(10, 70)},                     // at most history.size
		{"?before=" + ids[40] + "&limit=5", span(35, 40)}, // a page back
		{"?before=" + ids[40], span(10, 40)},              // fewer than the limit are left
		{"?before=" + ids[10], []string{}},                // the oldest kept: nothing before
		{"?before=" + ids[69] + "&limit=2", span(67, 69)},
	}
	for _, tt := range tests {
		if got := bodies(tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("history%s = %v, want %v", tt.query, got, tt.want)
		}
	}
	r := apiCall(t, "GET", s.URL+"/api/rooms/lobby/history?before="+ids[5], "", "", "")
	if code, _ := r.errorCode(); r.status != 404 || code != "not_found" {
		t.Fatalf("before an evicted id: %d %s", r.status, r.body)
	}
}
