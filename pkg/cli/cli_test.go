package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/chatserver/chatserver/pkg/plugins"
)

// runCLI runs the command line and returns exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "chat.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExitCodesAndOneLineErrors(t *testing.T) {
	good := writeConfig(t, "history:\n  size: 50\n")
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStderr bool
	}{
		{"version", []string{"version"}, 0, []string{"chatserver ", "go1."}, nil, true},
		{"plugins list", []string{"plugins", "list"}, 0, []string{"username", "validate", "ratelimit", "render_html", "history", "broadcast"}, nil, true},
		{"unknown command", []string{"frobnicate"}, 2, nil, []string{`unknown command "frobnicate"`}, false},
		{"unknown flag", []string{"serve", "--nope"}, 2, nil, []string{"unknown flag: --nope"}, false},
		{"config check needs --config", []string{"config", "check"}, 2, nil, []string{"needs --config"}, false},
		{"config check ok", []string{"config", "check", "--config", good}, 0,
			[]string{good + ": ok", "size 50", "pipeline message:", `3. ratelimit {"rate":5,"burst":10}`, "6. broadcast",
				`"guest_format":"游客%d"`, `"jwt_leeway":"0s"`, "pipeline typing:"}, nil, true},
		{"config check prints the with: keys and redacts secrets", []string{"config", "check", "--config",
			writeConfig(t, "pipelines:\n  join:\n    - use: username\n      with: {mode: jwt, jwt_key: \"0123456789abcdef0123456789abcdef-x\"}\n")}, 0,
			[]string{`1. username {"cookie":"username"`, `"jwt_key":"<redacted>"`, `"mode":"jwt"`}, nil, true},
		{"missing file", []string{"config", "check", "--config", "/nonexistent/x.yaml"}, 2, nil, []string{"/nonexistent/x.yaml", "no such file"}, false},
		{"unknown plugin names the known ones", []string{"config", "check", "--config",
			writeConfig(t, "pipelines:\n  message:\n    - use: broadcats\n")}, 2, nil,
			[]string{"pipelines.message[0] (broadcats)", `unknown plugin "broadcats"`, "broadcast", "username"}, false},
		{"unknown option", []string{"config", "check", "--config",
			writeConfig(t, "pipelines:\n  message:\n    - use: ratelimit\n      with: {rat: 5}\n")}, 2, nil,
			[]string{"pipelines.message[0] (ratelimit)", `unknown option "rat"`, "known: rate, burst"}, false},
		{"config check redacts api keys", []string{"config", "check", "--config",
			writeConfig(t, "api:\n  keys: [\"0123456789abcdef0123456789abcdef-secret\"]\n")}, 0,
			[]string{"api: keys [<redacted>], protect_reads false"}, nil, true},
		{"config check names a short api key by index", []string{"config", "check", "--config",
			writeConfig(t, "api:\n  keys: [\"0123456789abcdef0123456789abcdef\", \"short\"]\n")}, 2, nil,
			[]string{"api.keys[1]: must be at least 32 bytes, got 5"}, false},
		{"bad yaml", []string{"config", "check", "--config", writeConfig(t, "server: [oops\n")}, 2, nil, []string{"not valid YAML"}, false},
		{"unknown key", []string{"serve", "--config", writeConfig(t, "sever:\n  addr: x\n")}, 2, nil, []string{"sever"}, false},
		{"serve cannot listen", []string{"serve", "--addr", "256.0.0.1:1"}, 1, nil, []string{"listen"}, false},
		// Refused before any dial (nothing listens on port 1).
		{"bench rooms negative dial concurrency", []string{"bench", "rooms", "--addr", "127.0.0.1:1", "--dial-concurrency", "-1"}, 2, nil,
			[]string{"dial concurrency: want 1..50000, got -1"}, false},
		{"bench rooms dial concurrency over the cap", []string{"bench", "rooms", "--addr", "127.0.0.1:1", "--dial-concurrency", "50001"}, 2, nil,
			[]string{"dial concurrency: want 1..50000, got 50001"}, false},
		{"bench rooms dial concurrency not a number", []string{"bench", "rooms", "--addr", "127.0.0.1:1", "--dial-concurrency", "many"}, 2, nil,
			[]string{"--dial-concurrency", "many"}, false},
		{"bench rooms compress not a bool", []string{"bench", "rooms", "--addr", "127.0.0.1:1", "--compress=maybe"}, 2, nil,
			[]string{"--compress", "maybe"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCLI(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tt.code, out, errs)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q: %q", w, errs)
				}
			}
			if strings.Contains(out+errs, "-secret") || strings.Contains(out+errs, `"short"`) {
				t.Errorf("a key was printed: %q %q", out, errs)
			}
			if tt.noStderr && errs != "" {
				t.Errorf("unexpected stderr %q", errs)
			}
			if tt.code != 0 {
				// One line from us (serve may log before failing).
				last := strings.TrimSpace(errs[strings.LastIndex(strings.TrimSpace(errs), "\n")+1:])
				if !strings.HasPrefix(last, "chatserver: ") || strings.Contains(errs, "goroutine ") {
					t.Errorf("error is not one clear line: %q", errs)
				}
			}
		})
	}
}

func TestBadTemplatesDirIsAConfigError(t *testing.T) {
	cfg := writeConfig(t, "templates:\n  dir: /nonexistent/templates\n")
	code, _, errs := runCLI(t, "config", "check", "--config", cfg)
	if code != 2 || !strings.Contains(errs, "templates.dir") {
		t.Fatalf("exit %d, stderr %q; want 2 naming templates.dir", code, errs)
	}
}
