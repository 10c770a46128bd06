package cluster_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
)

// apiKey is the server API key of every node.
const apiKey = "cluster-test-key-0123456789abcdef-01"

// call makes one server API request to n with the key.
func (n *node) call(method, path, body string) (int, string) {
	n.t.Helper()
	req, err := http.NewRequest(method, "http://"+n.addr+path, strings.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s on %s: %v", method, path, n.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// closeOf reads conn until it closes and returns the close code and text,
// and the types of the frames read on the way.
func closeOf(t *testing.T, conn *websocket.Conn) (code int, text string, types []string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text, types
			}
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		var e envelope
		_ = json.Unmarshal(b, &e)
		types = append(types, e.Type)
	}
}

// dialNamed opens a raw connection to n as name (the username cookie).
func dialNamed(t *testing.T, n *node, name, room string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Cookie": {"username=" + b64(name)}}
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/chatsocket?room="+room, h)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", n.name, name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Three processes: the server API of any one acts on the members of all —
// the room list, a delete, a kick and a ban — and `chatserver api` drives it.
func TestAPIAcrossProcesses(t *testing.T) {
	prefix := redistest.Prefix(t)
	n1, n2, n3 := startNode(t, "node1", prefix), startNode(t, "node2", prefix), startNode(t, "node3", prefix)

	alice := dial(t, n1, "alice", "room=lobby")
	alice.history()
	testutil.Eventually(t, 5*time.Second, "alice's online", func() bool { return len(alice.of("online")) >= 1 })
	bob2, bob3 := dialNamed(t, n2, "bob", "lobby"), dialNamed(t, n3, "bob", "lobby")

	for _, n := range []*node{n1, n2, n3} {
		testutil.Eventually(t, 10*time.Second, n.name+" to count 3 in lobby", func() bool {
			_, body := n.call("GET", "/api/rooms", "")
			return body == `[{"room":"lobby","members":3}]`
		})
	}

	// The CLI, as an operator runs it, against node 3.
	cmd := exec.Command(binary, "api", "rooms", "--server", "http://"+n3.addr)
	cmd.Env = append(os.Environ(), "CHATSERVER_API_KEY="+apiKey)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != `[{"room":"lobby","members":3}]` {
		t.Fatalf("chatserver api rooms: %v: %s", err, out)
	}

	// Said on node 1, deleted through node 2: alice (node 1) hears it.
	alice.send("regrettable")
	var id string
	testutil.Eventually(t, 5*time.Second, "alice's message", func() bool {
		ms := alice.of("message")
		if len(ms) > 0 {
			id = ms[0].ID
		}
		return id != ""
	})
	if code, body := n2.call("DELETE", "/api/rooms/lobby/messages/"+id, ""); code != 204 {
		t.Fatalf("DELETE through node 2: %d %s", code, body)
	}
	testutil.Eventually(t, 5*time.Second, "alice to get the delete", func() bool {
		ds := alice.of("delete")
		return len(ds) == 1 && ds[0].ID == id
	})
	if _, body := n3.call("GET", "/api/rooms/lobby/history", ""); strings.Contains(body, id) {
		t.Fatalf("node 3's history still has the deleted message: %s", body)
	}

	// Kicked and banned through node 1: bob's connections on nodes 2 and 3 close.
	if code, body := n1.call("POST", "/api/rooms/lobby/kick", `{"username":"bob","ban":"1h"}`); code != 200 || body != `{"kicked":2}` {
		t.Fatalf("kick through node 1: %d %s", code, body)
	}
	for _, c := range []*websocket.Conn{bob2, bob3} {
		if code, text, _ := closeOf(t, c); code != 4001 || text != "kicked" {
			t.Fatalf("bob closed with %d %q, want 4001 kicked", code, text)
		}
	}
	code, text, types := closeOf(t, dialNamed(t, n2, "bob", "lobby"))
	if code != 4001 || text != "banned" || strings.Join(types, ",") != "error" {
		t.Fatalf("banned bob on node 2: frames %v, close %d %q; want one error, then 4001 banned", types, code, text)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
