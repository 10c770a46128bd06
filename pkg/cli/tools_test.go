package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "github.com/chatserver/chatserver/pkg/plugins"
)

func TestPluginsList(t *testing.T) {
	code, out, _ := runCLI(t, "plugins", "list")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, re := range []string{
		`(?m)^ratelimit\s+per-client token bucket`,
		`(?m)^    rate\s+float64 = 5$`,
		`(?m)^    burst\s+int = 10$`,
		`(?m)^    timeout\s+time.Duration = 2s$`,
		`(?m)^    mask\s+string = "\*"$`,
		`(?m)^broadcast\s+fans the event out`,
		`(?m)^commands\s`, `(?m)^filter\s`, `(?m)^webhook\s`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("plugins list lacks %s:\n%s", re, out)
		}
	}
}

func TestPluginsListJSON(t *testing.T) {
	code, out, _ := runCLI(t, "plugins", "list", "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var list []pluginJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	got := map[string]map[string]any{}
	for _, p := range list {
		got[p.Name] = map[string]any{}
		for _, o := range p.Options {
			got[p.Name][o.Key] = o.Default
		}
	}
	if got["ratelimit"]["burst"] != 10.0 || got["webhook"]["timeout"] != "2s" || got["broadcast"] == nil {
		t.Errorf("plugins list --json: %v", got)
	}
}

func TestPipelineRun(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	yaml := `pipelines:
  message:
    - use: username
    - use: validate
    - use: commands
    - use: filter
      name: swears
      with: { words: [darn] }
    - use: render_html
    - use: history
    - use: broadcast
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("pipelines:\n  message:\n    - use: nosuch\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want []string // regexps on stdout (or stderr when code != 0)
		not  []string
	}{
		{"message goes through, reported not performed", []string{"--body", "darn it", "--username", "ann"}, 0, []string{
			`(?m)^  1\. username\s+\S+\s+ok$`, `(?m)^  4\. swears\s`, `(?m)^  7\. broadcast\s`,
			`result: went through every step`, `envelope: \{.*"username":"ann","body":"\*\*\*\* it"`,
			`would broadcast to lobby \(keep in history: true\): \{.*"body":"\*\*\*\* it"`,
		}, []string{`would reply`}},
		{"reply to the sender alone", []string{"--body", "/who", "--room", "den"}, 0, []string{
			`would reply to the sender: \{.*"room":"den".*"username":"system","body":"0 in den: "`,
			`result: dropped by a step`,
		}, []string{`would broadcast`}},
		{"rejection names the step", []string{"--body", "   "}, 0, []string{
			`(?m)^  2\. validate\s+\S+\s+error: empty: body is empty$`,
			`result: rejected, the sender gets error empty: body is empty`,
		}, []string{`would broadcast`, `3\. commands`}},
		{"join", []string{"--event", "join"}, 0, []string{`pipeline join:`, `would broadcast to lobby \(keep in history: false\): \{.*"type":"online".*"username":"游客1"`}, nil},
		{"bad event", []string{"--event", "shout"}, 2, []string{`--event "shout"`}, nil},
		{"bad config", []string{"--config", bad}, 2, []string{`bad.yaml`, `unknown plugin "nosuch"`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"pipeline", "run", "--config", cfg}, tt.args...)
			code, out, errOut := runCLI(t, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			if code != 0 {
				out = errOut
			}
			for _, re := range tt.want {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("output lacks %s:\n%s", re, out)
				}
			}
			for _, re := range tt.not {
				if regexp.MustCompile(re).MatchString(out) {
					t.Errorf("output has %s:\n%s", re, out)
				}
			}
			if strings.Contains(out, "goroutine ") {
				t.Errorf("stack trace in output")
			}
		})
	}
}
