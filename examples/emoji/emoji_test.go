package emoji_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/examples/emoji"
	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/pipeline/pipelinetest"
	_ "github.com/chatserver/chatserver/pkg/plugins" // the built-ins the pipeline uses
)

func TestEmoji(t *testing.T) {
	e := emoji.New(emoji.Options{Codes: map[string]string{"party": "🥳", "smile": ":-)"}})
	tests := []struct{ in, want string }{
		{"hi :wave:", "hi 👋"},
		{":party: time", "🥳 time"},
		{"overridden :smile:", "overridden :-)"},
		{"unknown :nope: stays", "unknown :nope: stays"},
	}
	for _, tt := range tests {
		ev := &pipeline.Event{Kind: pipeline.Message, Envelope: pipeline.Envelope{Body: tt.in}}
		h := e.Wrap(pipeline.HandlerFunc(func(context.Context, *pipeline.Event) error { return nil }))
		if err := h.Handle(context.Background(), ev); err != nil || ev.Envelope.Body != tt.want {
			t.Errorf("%q → %q (%v), want %q", tt.in, ev.Envelope.Body, err, tt.want)
		}
	}
}

// The plugin beside the built-ins it runs with, through the test kit.
func TestEmojiInPipeline(t *testing.T) {
	room := pipelinetest.New(t, `
message:
  - use: username
  - use: validate
  - use: emoji
    with: { codes: { party: "🥳" } }
  - use: render_html
  - use: history
  - use: broadcast
`)
	got := room.Member("ann").Say("<b>:party:</b>")
	if got.Err != nil || got.Broadcast().Body != "<b>🥳</b>" || !strings.Contains(got.Broadcast().HTML, "&lt;b&gt;🥳") || len(got.Kept) != 1 {
		t.Fatalf("%+v", got)
	}
}

// TestCustomBinary builds examples/emoji/cmd/chatserver-emoji, runs it with a
// config that uses the plugin, and sees the plugin act over a real WebSocket.
func TestCustomBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "chatserver-emoji")
	build := exec.Command("go", "build", "-o", bin, "./examples/emoji/cmd/chatserver-emoji")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	addr := freeAddr(t)
	cfg := filepath.Join(dir, "chatserver.yaml")
	yaml := fmt.Sprintf(`server:
  addr: %q
pipelines:
  message:
    - use: username
      with: { allow_rename: true }
    - use: validate
    - use: emoji
      with: { codes: { party: "🥳" } }
    - use: render_html
    - use: broadcast
`, addr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	// plugins list shows the custom plugin next to the built-in ones.
	out, err := exec.Command(bin, "plugins", "list").Output()
	if err != nil || !strings.Contains(string(out), "emoji") || !strings.Contains(string(out), "broadcast") {
		t.Fatalf("plugins list: %v\n%s", err, out)
	}
	// The config's own tests pass with the custom binary.
	out, err = exec.Command(bin, "pipeline", "test", "--config", cfg, "pipeline_test.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 passed, 0 failed") {
		t.Fatalf("pipeline test: %v\n%s", err, out)
	}

	// Logs go to a file (an *os.File is handed to the child as is, so no
	// goroutine of ours writes it while the test reads it).
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	logs := logFile(logf.Name())
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	waitReady(t, "http://"+addr+"/healthz", exited)

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/chatsocket", nil)
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, logs.String())
	}
	defer conn.Close()
	if err := conn.WriteJSON(map[string]string{"body": "hello :wave: :party:", "username": "alice"}); err != nil {
		t.Fatal(err)
	}
	for {
		var env pipeline.Envelope
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := conn.ReadJSON(&env); err != nil {
			t.Fatalf("read: %v\n%s", err, logs.String())
		}
		if env.Type != pipeline.TypeMessage {
			continue // history, online
		}
		if env.Body != "hello 👋 🥳" || env.Username != "alice" || !strings.Contains(env.HTML, "hello 👋 🥳") {
			t.Errorf("message %+v", env)
		}
		break
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after SIGTERM\n%s", logs.String())
	}
}

// logFile prints the server's log in failure messages.
type logFile string

func (f logFile) String() string {
	b, _ := os.ReadFile(string(f))
	return "server log:\n" + string(b)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady polls url until it answers 200, the process exits, or 20s pass.
func waitReady(t *testing.T, url string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("server exited early: %v", err)
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready after 20s", url)
}
