package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/pipeline/pipelinetest"
)

// `chatserver pipeline test FILE…` runs YAML test cases against the
// configured pipelines, for the CI of configs (in the spirit of Benthos'
// config unit tests). A file:
//
//	tests:
//	  - name: a message is cleaned, rendered and kept
//	    member: { name_cookie: alice }      # the sender's handshake; it joins first
//	    others: [bob]                       # other members of the room, by name
//	    event: { body: "  hi <b>  " }       # the frame: type, body, username, data, to
//	    expect:
//	      envelope: { type: message, username: alice, body: "hi <b>" }
//	      html_contains: ["&lt;b&gt;"]
//	      html_lacks: ["<b>"]
//	      kept: true
//	  - name: an empty body is refused
//	    event: { body: "   " }
//	    expect: { error: empty }

// pipelineTestFile is one file of cases.
type pipelineTestFile struct {
	Tests []pipelineTestCase `yaml:"tests"`
}

type pipelineTestCase struct {
	Name   string     `yaml:"name"`
	Member testMember `yaml:"member"`
	Others []string   `yaml:"others"`
	Event  testEvent  `yaml:"event"`
	Expect testExpect `yaml:"expect"`
	Line   int        `yaml:"-"`
}

// testMember is the sender's handshake. It joins (runs the join pipeline)
// before the event, as every connection does, unless the event is the join.
type testMember struct {
	// Name is the name the connection goes by before its join ("").
	Name string `yaml:"name"`
	// NameCookie sets the seed's cookie: username=base64(NameCookie).
	NameCookie string            `yaml:"name_cookie"`
	Cookies    map[string]string `yaml:"cookies"`
	Query      map[string]string `yaml:"query"`
}

// testEvent is the frame the member sends; type join or leave runs that
// pipeline instead.
type testEvent struct {
	Type     string         `yaml:"type"`
	Body     string         `yaml:"body"`
	Username *string        `yaml:"username"`
	Data     map[string]any `yaml:"data"`
	To       string         `yaml:"to"`
}

// testExpect is what must hold after the event. Unset fields are not checked.
type testExpect struct {
	// Error is the code the sender is told; empty: the event is accepted.
	Error          string         `yaml:"error"`
	ReasonContains string         `yaml:"reason_contains"`
	Envelope       map[string]any `yaml:"envelope"`
	HTMLContains   []string       `yaml:"html_contains"`
	HTMLLacks      []string       `yaml:"html_lacks"`
	// Broadcast: whether the event was published (to the room or directly).
	Broadcast *bool `yaml:"broadcast"`
	// Kept: whether it was added to the room's history.
	Kept *bool `yaml:"kept"`
	// DirectTo: the recipient of the direct message it published.
	DirectTo      string `yaml:"direct_to"`
	ReplyContains string `yaml:"reply_contains"`
}

func newPipelineTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test [--config FILE] FILE...",
		Short: "Run YAML test cases (an event in, expectations out) against the configured pipelines",
		Long: `Runs each case of each FILE against the pipelines of the config: a fresh room,
the case's member joins, sends the event, and the expectations are checked
(envelope fields, html contains/lacks, error code, reply text, broadcast,
kept in history). Nothing is broadcast or stored for real; webhook steps do
make their calls. Prints a line per case and a diff of what differed; exits
0 when every case passed, 1 when one failed, 2 on a bad file or config.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("name at least one test file")}
			}
			return nil
		},
		RunE: runPipelineTests,
	}
	addConfigFlag(cmd)
	return cmd
}

func runPipelineTests(cmd *cobra.Command, files []string) error {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	passed, failed := 0, 0
	for _, f := range files {
		cases, err := readPipelineTests(f)
		if err != nil {
			return usageError{err}
		}
		for _, tc := range cases {
			problems, err := runPipelineCase(cfg.Pipelines, tc)
			if err != nil {
				return fmt.Errorf("%s: test %q: %w", f, tc.Name, err)
			}
			if len(problems) == 0 {
				passed++
				fmt.Fprintf(out, "ok   %s: %s\n", f, tc.Name)
				continue
			}
			failed++
			fmt.Fprintf(out, "FAIL %s:%d: %s\n", f, tc.Line, tc.Name)
			for _, p := range problems {
				fmt.Fprintf(out, "    %s\n", p)
			}
		}
	}
	fmt.Fprintf(out, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return errTestsFailed
	}
	return nil
}

// errTestsFailed exits 1; the report above it says what failed.
var errTestsFailed = errors.New("pipeline tests failed")

// readPipelineTests reads a file of cases strictly: an unknown key is an
// error naming its line.
func readPipelineTests(path string) ([]pipelineTestCase, error) {
	data, err := os.ReadFile(path) //nolint:gosec // reading the file the user named is the point
	if err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var file pipelineTestFile
	if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(file.Tests) == 0 {
		return nil, fmt.Errorf("%s: no tests (want a list under `tests:`)", path)
	}
	// Line numbers of the cases, for the report.
	if len(root.Content) == 1 {
		for i := 0; i+1 < len(root.Content[0].Content); i += 2 {
			if root.Content[0].Content[i].Value == "tests" {
				for j, n := range root.Content[0].Content[i+1].Content {
					if j < len(file.Tests) {
						file.Tests[j].Line = n.Line
					}
				}
			}
		}
	}
	for i, tc := range file.Tests {
		if tc.Name == "" {
			return nil, fmt.Errorf("%s:%d: test %d has no name", path, tc.Line, i+1)
		}
	}
	return file.Tests, nil
}

// runPipelineCase runs one case in a fresh room and returns what differed.
func runPipelineCase(pc pipeline.Config, tc pipelineTestCase) ([]string, error) {
	room, err := pipelinetest.BuildConfig(pc, pipeline.BuildOptions{})
	if err != nil {
		return nil, err
	}
	defer room.Close()
	for _, name := range tc.Others {
		room.Member(name)
	}
	var opts []pipelinetest.MemberOption
	if tc.Member.NameCookie != "" {
		opts = append(opts, pipelinetest.NameCookie(tc.Member.NameCookie))
	}
	for k, v := range tc.Member.Cookies {
		opts = append(opts, pipelinetest.Cookie(k, v))
	}
	for k, v := range tc.Member.Query {
		opts = append(opts, pipelinetest.Query(k, v))
	}
	m := room.Member(tc.Member.Name, opts...)

	var res *pipelinetest.Result
	switch pipeline.Kind(tc.Event.Type) {
	case pipeline.Join:
		res = m.Join()
	case pipeline.Leave:
		if j := m.Join(); j.Err != nil {
			return []string{fmt.Sprintf("the member's join was refused: %s: %s", j.Err.Code, j.Err.Reason)}, nil
		}
		res = m.Leave()
	default:
		if j := m.Join(); j.Err != nil {
			return []string{fmt.Sprintf("the member's join was refused: %s: %s", j.Err.Code, j.Err.Reason)}, nil
		}
		in := pipeline.Inbound{Type: tc.Event.Type, Body: tc.Event.Body, Username: tc.Event.Username, To: tc.Event.To}
		if tc.Event.Data != nil {
			if in.Data, err = json.Marshal(tc.Event.Data); err != nil {
				return nil, fmt.Errorf("event.data: %w", err)
			}
		}
		res = m.Run(in)
	}
	return checkResult(res, tc.Expect), nil
}

// checkResult compares res with want, a line per difference.
func checkResult(res *pipelinetest.Result, want testExpect) []string {
	var diffs []string
	differ := func(what string, got, want any) {
		diffs = append(diffs, fmt.Sprintf("%s: got %s, want %s", what, show(got), show(want)))
	}
	gotCode := ""
	if res.Err != nil {
		gotCode = res.Err.Code
	}
	if gotCode != want.Error {
		what := "error"
		if res.Err != nil {
			what = "error (" + res.Err.Reason + ")"
		}
		differ(what, orNone(gotCode), orNone(want.Error))
	}
	if want.ReasonContains != "" && (res.Err == nil || !strings.Contains(res.Err.Reason, want.ReasonContains)) {
		differ("error reason", reasonOf(res.Err), "one containing "+show(want.ReasonContains))
	}
	env := res.Event.Envelope
	if len(res.Published) > 0 {
		env = res.Published[0].Envelope
	}
	if len(want.Envelope) > 0 {
		var got map[string]any
		b, _ := json.Marshal(env)
		_ = json.Unmarshal(b, &got)
		keys := make([]string, 0, len(want.Envelope))
		for k := range want.Envelope {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !jsonEqual(got[k], want.Envelope[k]) {
				differ("envelope."+k, got[k], want.Envelope[k])
			}
		}
	}
	for _, s := range want.HTMLContains {
		if !strings.Contains(env.HTML, s) {
			differ("html", env.HTML, "one containing "+show(s))
		}
	}
	for _, s := range want.HTMLLacks {
		if strings.Contains(env.HTML, s) {
			differ("html", env.HTML, "one without "+show(s))
		}
	}
	if want.Broadcast != nil && (len(res.Published) > 0) != *want.Broadcast {
		differ("broadcast", len(res.Published) > 0, *want.Broadcast)
	}
	if want.Kept != nil && (len(res.Kept) > 0) != *want.Kept {
		differ("kept in history", len(res.Kept) > 0, *want.Kept)
	}
	if want.DirectTo != "" && (len(res.Published) == 0 || res.Published[0].To != want.DirectTo) {
		to := ""
		if len(res.Published) > 0 {
			to = res.Published[0].To
		}
		differ("direct message to", orNone(to), want.DirectTo)
	}
	if want.ReplyContains != "" && !slices.ContainsFunc(res.Replies, func(e pipeline.Envelope) bool {
		return strings.Contains(e.Body, want.ReplyContains)
	}) {
		bodies := make([]string, len(res.Replies))
		for i, r := range res.Replies {
			bodies[i] = r.Body
		}
		differ("replies", bodies, "one containing "+show(want.ReplyContains))
	}
	return diffs
}

// jsonEqual compares a decoded JSON value with a YAML one, as JSON.
func jsonEqual(got, want any) bool {
	b, err := json.Marshal(want)
	if err != nil {
		return false
	}
	var w any
	if json.Unmarshal(b, &w) != nil {
		return false
	}
	return reflect.DeepEqual(got, w)
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func orNone(code string) string {
	if code == "" {
		return "none (accepted)"
	}
	return code
}

func reasonOf(e *pipeline.Error) string {
	if e == nil {
		return "no error"
	}
	return e.Reason
}
