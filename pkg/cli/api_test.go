package cli

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/server"
)

const cliAPIKey = "cli-test-key-0123456789abcdef-0001"

// startAPIServer runs a real server with the API on (cliAPIKey).
func startAPIServer(t *testing.T) string {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.Keys = []string{cliAPIKey}
	srv, err := server.New(cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	})
	return ts.URL
}

// `chatserver api` against a real server: what it prints and its exit code
// (0 done, 1 the server or the network said no, 2 bad usage).
func TestAPICommands(t *testing.T) {
	url := startAPIServer(t)
	dead := httptest.NewServer(nil)
	deadURL := dead.URL
	dead.Close() // nothing listens there now
	tests := []struct {
		name   string
		key    string
		args   []string
		code   int
		stdout string // a part of stdout (exit 0) or of the one error line
	}{
		{"rooms", "", []string{"api", "rooms", "--server", url}, 0, "[]"},
		{"post", cliAPIKey, []string{"api", "post", "lobby", "build 42 is green", "--username", "deploy-bot", "--data", `{"build":42}`, "--server", url}, 0, `"body":"build 42 is green"`},
		{"post of an unknown kind", cliAPIKey, []string{"api", "post", "lobby", "x", "--username", "deploy-bot", "--type", "shout", "--server", url}, 1, "400 unknown_type"},
		{"kick with a ban", cliAPIKey, []string{"api", "kick", "lobby", "bob", "--ban", "10m", "--server", url}, 0, `{"kicked":0}`},
		{"kick without a key", "", []string{"api", "kick", "lobby", "bob", "--server", url}, 2, "CHATSERVER_API_KEY"},
		{"kick with a wrong key", strings.Repeat("w", 40), []string{"api", "kick", "lobby", "bob", "--server", url}, 1, "401 unauthorized: the key is not valid"},
		{"kick with a bad ban", cliAPIKey, []string{"api", "kick", "lobby", "bob", "--ban", "forever", "--server", url}, 2, "--ban"},
		{"kick without a name", cliAPIKey, []string{"api", "kick", "lobby", "--server", url}, 2, "ROOM NAME"},
		{"delete of an unknown id", cliAPIKey, []string{"api", "delete", "lobby", "nope", "--server", url}, 1, "404 not_found"},
		{"delete in a bad room", cliAPIKey, []string{"api", "delete", "bad room", "x", "--server", url}, 2, "room"},
		{"post without --username", cliAPIKey, []string{"api", "post", "lobby", "hi", "--server", url}, 2, "--username"},
		{"post with bad --data", cliAPIKey, []string{"api", "post", "lobby", "hi", "--username", "bot", "--data", "[1]", "--server", url}, 2, "--data"},
		{"a server URL that is not http", cliAPIKey, []string{"api", "kick", "lobby", "bob", "--server", "ftp://x"}, 2, "--server"},
		{"nobody at the server URL", "", []string{"api", "rooms", "--server", deadURL}, 1, "connection refused"},
		{"unknown subcommand", "", []string{"api", "frob"}, 2, "frob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(APIKeyEnv, tt.key)
			code, out, errs := runCLI(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tt.code, out, errs)
			}
			where := out
			if code != 0 {
				where = errs
				if strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "chatserver: ") {
					t.Errorf("not one error line: %q", errs)
				}
			}
			if !strings.Contains(where, tt.stdout) {
				t.Fatalf("want %q in %q", tt.stdout, where)
			}
			if strings.Contains(out+errs, cliAPIKey) {
				t.Fatalf("the key was printed")
			}
		})
	}
}
