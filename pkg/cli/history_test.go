package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/history"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seedRedis writes n envelopes to room under prefix and returns them.
func seedRedis(t *testing.T, prefix, room string, n int) []string {
	t.Helper()
	st, err := history.NewRedis(history.RedisOptions{URL: redistest.SharedURL, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var frames []string
	for i := 0; i < n; i++ {
		f := fmt.Sprintf(`{"id":"id-%d","type":"message","room":%q,"client_id":1,"username":"alice","body":"m%d <b>","datetime":"2026-11-25 21:04:%02d","ts":%d}`, i, room, i, i, 1764104645000+i)
		if err := st.Append(context.Background(), room, fmt.Sprint("id-", i), []byte(f)); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	if err := st.Close(); err != nil { // flushes
		t.Fatal(err)
	}
	return frames
}

func TestHistoryDumpAndClear(t *testing.T) {
	prefix := redistest.Prefix(t)
	cfg := writeConfig(t, fmt.Sprintf("history:\n  store: redis\nredis:\n  url: %q\n  key_prefix: %q\n", redistest.SharedURL, prefix))
	frames := seedRedis(t, prefix, "lobby", 5)
	seedRedis(t, prefix, "other", 2)

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"jsonl default room lobby", nil, strings.Join(frames, "\n") + "\n"},
		{"jsonl limit", []string{"--limit", "2"}, strings.Join(frames[3:], "\n") + "\n"},
		{"json", []string{"--format", "json"}, "[\n" + strings.Join(frames, ",\n") + "\n]\n"},
		{"text", []string{"--format", "text", "--limit", "2"},
			"2026-11-25 21:04:03 alice: m3 <b>\n2026-11-25 21:04:04 alice: m4 <b>\n"},
		{"empty room json", []string{"--room", "nobody", "--format", "json"}, "[]\n"},
		{"empty room jsonl", []string{"--room", "nobody"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"history", "dump", "--config", cfg}, tt.args...)...)
			if code != 0 || out != tt.want {
				t.Fatalf("exit %d, stderr %q\nstdout:\n%s\nwant:\n%s", code, errOut, out, tt.want)
			}
		})
	}
	t.Run("json parses", func(t *testing.T) {
		_, out, _ := runCLI(t, "history", "dump", "--config", cfg, "--format", "json")
		var v []map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil || len(v) != 5 {
			t.Fatalf("%v, %d entries", err, len(v))
		}
	})

	code, out, errOut := runCLI(t, "history", "clear", "--config", cfg, "--room", "lobby")
	if code != 0 || !strings.Contains(out, "lobby") {
		t.Fatalf("clear: exit %d, %q %q", code, out, errOut)
	}
	if _, out, _ := runCLI(t, "history", "dump", "--config", cfg); out != "" {
		t.Fatalf("lobby after clear: %q", out)
	}
	if _, out, _ := runCLI(t, "history", "dump", "--config", cfg, "--room", "other"); strings.Count(out, "\n") != 2 {
		t.Fatalf("clear touched another room: %q", out)
	}
}

func TestHistoryCommandErrors(t *testing.T) {
	memory := writeConfig(t, "history:\n  store: memory\n")
	badURL := writeConfig(t, "history:\n  store: redis\nredis:\n  url: \"redis://127.0.0.1:6379/notadb\"\n")
	down := writeConfig(t, fmt.Sprintf("history:\n  store: redis\nredis:\n  url: \"redis://127.0.0.1:%d/0\"\n", redistest.FreePort(t)))
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"memory dump", []string{"history", "dump", "--config", memory}, 2, "cannot be dumped from another one"},
		{"memory dump default config", []string{"history", "dump"}, 2, "history.store: memory"},
		{"memory clear", []string{"history", "clear", "--config", memory, "--room", "lobby"}, 2, "cannot be cleared"},
		{"bad url", []string{"history", "dump", "--config", badURL}, 2, "redis.url"},
		{"serve bad url", []string{"serve", "--config", badURL, "--addr", "127.0.0.1:0"}, 2, "redis.url"},
		{"redis down", []string{"history", "dump", "--config", down}, 1, "connection refused"},
		{"clear without room", []string{"history", "clear", "--config", memory}, 2, "needs --room"},
		{"bad room", []string{"history", "dump", "--room", "a b"}, 2, "--room"},
		{"bad format", []string{"history", "dump", "--format", "xml"}, 2, "--format"},
		{"bad limit", []string{"history", "dump", "--limit", "-1"}, 2, "--limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, _, errOut := runCLI(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if n := strings.Count(errOut, "\n"); n != 1 {
				t.Fatalf("stderr has %d lines, want 1: %q", n, errOut)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}
