package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/chatserver/chatserver/pkg/config"
)

// openAPICase is one request of TestOpenAPIMatchesRoutes: to op (METHOD and
// the documented path) on one of its servers, answered with status.
type openAPICase struct {
	op          string // "POST /api/rooms/{room}/kick"
	srv         string // main, off (no keys), protected (protect_reads), down (history store unreachable)
	path        string // "" is op's path with room=lobby
	noKey       bool
	ctype, body string
	status      int
}

// postCases are the cases of POST /api/rooms/{room}/messages; they come
// with the route (api_post_test.go), which needs the protocol core.
var postCases []openAPICase

// mainConfig changes the main server of TestOpenAPIMatchesRoutes (the post
// cases add a plugin refusing on demand).
var mainConfig []func(*config.Config)

// The document served at /api/openapi.json holds to the routes: every /api
// route is documented, every documented operation answers (a 2xx with a
// key), and every status it documents for an operation is answered in a
// case below — and no status it does not document.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	srvs := map[string]*testServer{
		"main":      startServer(t, withAPI(append([]func(*config.Config){fastLimits, func(c *config.Config) { c.WebSocket.MaxMessageBytes = 256 }}, mainConfig...)...)),
		"off":       startServer(t, nil),
		"protected": startServer(t, withAPI(func(c *config.Config) { c.API.ProtectReads = true })),
		"down": startServer(t, withAPI(func(c *config.Config) {
			c.History.Store, c.Redis.URL = "redis", "redis://127.0.0.1:1/0" // nothing listens on port 1
		})),
	}
	var doc struct {
		OpenAPI string                                                   `json:"openapi"`
		Paths   map[string]map[string]struct{ Responses map[string]any } `json:"paths"`
	}
	r := apiCall(t, "GET", srvs["off"].URL+"/api/openapi.json", "", "", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") || json.Unmarshal(r.body, &doc) != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("GET /api/openapi.json: %d %.200s", r.status, r.body)
	}
	documented := map[string][]string{} // op → statuses
	for path, ops := range doc.Paths {
		for method, op := range ops {
			key := strings.ToUpper(method) + " " + path
			for status := range op.Responses {
				documented[key] = append(documented[key], status)
			}
		}
	}

	// Every /api route of the router is documented.
	err := chi.Walk(srvs["main"].Handler().(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasPrefix(route, "/api/") {
			if _, ok := documented[method+" "+route]; !ok {
				t.Errorf("route %s %s is not in openapi.json", method, route)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A message to delete.
	alice := srvs["main"].joined(t, "lobby", "alice")
	alice.send(map[string]any{"body": "to be deleted"})
	msgID := alice.next("message").ID

	const (
		history = "GET /api/rooms/{room}/history"
		members = "GET /api/rooms/{room}/members"
		del     = "DELETE /api/rooms/{room}/messages/{id}"
		kick    = "POST /api/rooms/{room}/kick"
		post    = "POST /api/rooms/{room}/messages"
	)
	big := `{"username":"` + strings.Repeat("x", 300) + `"}`
	cases := []openAPICase{
		{op: "GET /api/openapi.json", srv: "main", status: 200},
		{op: "GET /api/rooms", srv: "main", status: 200},
		{op: "GET /api/rooms", srv: "protected", noKey: true, status: 401},
		{op: history, srv: "main", status: 200},
		{op: history, srv: "main", path: "/api/rooms/no%20pe/history", status: 400},
		{op: history, srv: "protected", noKey: true, status: 401},
		{op: history, srv: "main", path: "/api/rooms/lobby/history?before=nope", status: 404},
		{op: history, srv: "down", status: 503},
		{op: members, srv: "main", status: 200},
		{op: members, srv: "main", path: "/api/rooms/" + strings.Repeat("r", 65) + "/members", status: 400},
		{op: members, srv: "protected", noKey: true, status: 401},
		{op: del, srv: "main", path: "/api/rooms/lobby/messages/" + msgID, status: 204},
		{op: del, srv: "main", path: "/api/rooms/a:b/messages/" + msgID, status: 400},
		{op: del, srv: "main", path: "/api/rooms/lobby/messages/" + msgID, noKey: true, status: 401},
		{op: del, srv: "main", path: "/api/rooms/lobby/messages/" + msgID, status: 404}, // deleted already
		{op: del, srv: "down", path: "/api/rooms/lobby/messages/x", status: 503},
		{op: kick, srv: "main", body: `{"username":"nobody","ban":"1m"}`, status: 200},
		{op: kick, srv: "main", body: `{"username":7}`, status: 400},
		{op: kick, srv: "main", body: `{"username":"nobody"}`, noKey: true, status: 401},
		{op: kick, srv: "off", body: `{"username":"nobody"}`, status: 404},
		{op: kick, srv: "main", body: big, status: 413},
		{op: kick, srv: "main", ctype: "text/plain", body: `{"username":"nobody"}`, status: 415},
	}
	cases = append(cases, postCases...)
	if len(postCases) == 0 {
		t.Logf("%s is not checked: the route waits for Server.Post (build with -tags apipost)", post)
		delete(documented, post)
	}

	answered := map[string]map[string]bool{} // op → statuses seen
	for i, c := range cases {
		method, route, _ := strings.Cut(c.op, " ")
		path := c.path
		if path == "" {
			path = strings.ReplaceAll(route, "{room}", "lobby")
		}
		key := apiKey
		if c.noKey {
			key = ""
		}
		t.Run(fmt.Sprintf("%d %s %d", i, c.op, c.status), func(t *testing.T) {
			r := apiCall(t, method, srvs[c.srv].URL+path, key, c.ctype, c.body)
			if r.status != c.status {
				t.Fatalf("%s %s on %s: %d %s, want %d", method, path, c.srv, r.status, r.body, c.status)
			}
			if r.status >= 400 {
				if code, _ := r.errorCode(); code == "" {
					t.Fatalf("an error without a code: %s", r.body)
				}
			}
		})
		if answered[c.op] == nil {
			answered[c.op] = map[string]bool{}
		}
		answered[c.op][strconv.Itoa(c.status)] = true
	}

	ops := make([]string, 0, len(documented))
	for op := range documented {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		ok2xx := false
		for _, status := range documented[op] {
			if !answered[op][status] {
				t.Errorf("%s documents %s, which no case answered", op, status)
			}
			ok2xx = ok2xx || strings.HasPrefix(status, "2")
		}
		if !ok2xx {
			t.Errorf("%s documents no success", op)
		}
		for status := range answered[op] {
			if !slices.Contains(documented[op], status) {
				t.Errorf("%s answered %s, which openapi.json does not document", op, status)
			}
		}
	}
	for op := range answered {
		if _, ok := documented[op]; !ok {
			t.Errorf("case for %s, which openapi.json does not document", op)
		}
	}
}

// Every $ref of openapi.json names a component it defines, and every
// operation has an id (client generators name methods after it).
func TestOpenAPIRefsResolve(t *testing.T) {
	s := startServer(t, nil)
	var doc map[string]any
	if err := json.Unmarshal(apiCall(t, "GET", s.URL+"/api/openapi.json", "", "", "").body, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				var at any = doc
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, _ := at.(map[string]any)
					at = m[part]
				}
				if !strings.HasPrefix(ref, "#/") || at == nil {
					t.Errorf("%s: $ref %q resolves to nothing", where, ref)
				}
			}
			for k, e := range v {
				walk(e, where+"/"+k)
			}
		case []any:
			for i, e := range v {
				walk(e, fmt.Sprintf("%s[%d]", where, i))
			}
		}
	}
	walk(doc, "")
	paths, _ := doc["paths"].(map[string]any)
	for path, ops := range paths {
		for method, op := range ops.(map[string]any) {
			if id, _ := op.(map[string]any)["operationId"].(string); id == "" {
				t.Errorf("%s %s has no operationId", method, path)
			}
		}
	}
}
