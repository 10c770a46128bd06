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
		{"a direct message with data", []string{"--body", "psst", "--to", "bob", "--data", `{"k":1}`}, 0, []string{
			`would send to bob in lobby and to the sender \(a direct message\): \{.*"to":"bob".*"data":\{"k":1\}`,
		}, []string{`keep in history: true`}},
		{"bad data", []string{"--body", "x", "--data", `[1]`}, 2, []string{`--data: data must be a JSON object`}, nil},
		{"bad event", []string{"--event", "shout"}, 2, []string{`--event "shout"`, `join, message, leave`}, nil},
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

// pipeline test runs YAML cases against the configured pipelines: the
// repository's own file passes; a failing case is reported with a diff and
// exits 1; a bad file exits 2.
func TestPipelineTest(t *testing.T) {
	code, out, errOut := runCLI(t, "pipeline", "test", "../../config/chatserver_test.yaml")
	if code != 0 || !strings.Contains(out, " passed, 0 failed") {
		t.Fatalf("the repository's config tests: exit %d\n%s%s", code, out, errOut)
	}

	dir := t.TempDir()
	cases := filepath.Join(dir, "cases.yaml")
	if err := os.WriteFile(cases, []byte(`tests:
  - name: passes
    member: { name_cookie: ann }
    event: { body: "hi <i>" }
    expect: { envelope: { username: ann, body: "hi <i>" }, html_lacks: ["<i>"], kept: true }
  - name: wrong expectations
    member: { name_cookie: ann }
    event: { body: "   " }
    expect: { envelope: { body: "x" }, kept: true }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "pipeline", "test", cases)
	for _, want := range []string{"ok   " + cases + ": passes", "FAIL " + cases + ":6: wrong expectations",
		`error (body is empty): got "empty", want "none (accepted)"`, `envelope.body: got null, want "x"`,
		`kept in history: got false, want true`, "1 passed, 1 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}

	bad := filepath.Join(dir, "bad.yaml")
	for _, body := range []string{"tests:\n  - name: x\n    expect: { eror: empty }\n", "tests: []\n", "tests:\n  - event: {}\n"} {
		if err := os.WriteFile(bad, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, errOut := runCLI(t, "pipeline", "test", bad); code != 2 || !strings.Contains(errOut, "bad.yaml") {
			t.Errorf("%q: exit %d (%s), want 2 naming the file", body, code, errOut)
		}
	}
}
