// Package pipelinetest runs chatserver pipelines in a test, as the server
// runs them, without a server: a plugin author builds a pipeline from the
// YAML steps a config would hold, with the real plugin registry and the
// templates embedded in chatserver, runs events as a fake member, and reads
// what was broadcast, replied, kept in history or refused. No hand-written
// fakes of Sender, Publisher or HistoryWriter.
//
//	func TestShout(t *testing.T) {
//		room := pipelinetest.New(t, `
//	message:
//	  - use: username
//	  - use: validate
//	  - use: shout
//	  - use: render_html
//	  - use: history
//	  - use: broadcast
//	`)
//		alice := room.Member("alice")
//		got := alice.Say("hello")
//		if got.Err != nil || got.Broadcast().Body != "HELLO!" { … }
//	}
//
// The built-in plugins register themselves when their package is imported:
// blank-import github.com/chatserver/chatserver/pkg/plugins in the test to
// use them beside your own.
package pipelinetest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/url"
	"slices"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/chatserver/chatserver"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// TB is the part of testing.TB the kit uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Room is a room of fake members with its pipelines, its history and a
// record of everything its pipelines published.
type Room struct {
	// Name is the room's name ("lobby").
	Name string

	p *pipeline.Pipelines

	mu        sync.Mutex
	published []Published
	history   []pipeline.Envelope
	members   []*Member
	nextID    int64
}

// Published is one publication of a pipeline, its frame decoded.
type Published struct {
	pipeline.Publication
	Envelope pipeline.Envelope
}

// New builds the pipelines in yamlSteps — the text under `pipelines:` in a
// config, one list of steps per kind — for a room named "lobby", or fails
// the test. Kinds it leaves out have empty pipelines. The pipelines are
// closed when the test ends.
func New(t TB, yamlSteps string) *Room {
	t.Helper()
	r, err := Build(yamlSteps)
	if err != nil {
		t.Fatalf("pipelinetest: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// Build is New without a test: for tools (`chatserver pipeline test`).
func Build(yamlSteps string) (*Room, error) {
	var cfg pipeline.Config
	if err := yaml.Unmarshal([]byte(yamlSteps), &cfg); err != nil {
		return nil, fmt.Errorf("pipelines are not valid YAML: %w", err)
	}
	return BuildConfig(cfg, pipeline.BuildOptions{})
}

// BuildConfig builds cfg's pipelines (the config's `pipelines:` section as
// loaded) for a room named "lobby".
func BuildConfig(cfg pipeline.Config, bo pipeline.BuildOptions) (*Room, error) {
	tmpl, err := Templates()
	if err != nil {
		return nil, err
	}
	r := &Room{Name: "lobby"}
	deps := pipeline.Deps{Publisher: (*publisher)(r), History: (*historian)(r), Members: (*roster)(r), Templates: tmpl}
	if r.p, err = pipeline.Build(cfg, deps, bo); err != nil {
		return nil, err
	}
	return r, nil
}

// Templates parses the templates embedded in chatserver (message.html,
// index.html), as the server does with no templates.dir.
func Templates() (*template.Template, error) {
	sub, err := fs.Sub(chatserver.Templates, "templates")
	if err != nil {
		return nil, err
	}
	return template.New("").ParseFS(sub, "*.html")
}

// Close closes the plugins that hold resources.
func (r *Room) Close() error { return r.p.Close() }

// Pipelines returns the built pipelines.
func (r *Room) Pipelines() *pipeline.Pipelines { return r.p }

// Published returns everything the room's pipelines published so far.
func (r *Room) Published() []Published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.published)
}

// History returns the room's history, oldest first: what a broadcast kept
// and what history steps appended themselves.
func (r *Room) History() []pipeline.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.history)
}

// MemberOption configures a Member's handshake.
type MemberOption func(*Member)

// Cookie gives the member a handshake cookie.
func Cookie(name, value string) MemberOption {
	return func(m *Member) { m.cookies[name] = value }
}

// NameCookie gives the member the seed's name cookie: username=base64(name).
func NameCookie(name string) MemberOption {
	return Cookie("username", base64.StdEncoding.EncodeToString([]byte(name)))
}

// Query gives the member a handshake query parameter (?token=…).
func Query(name, value string) MemberOption {
	return func(m *Member) { m.query.Set(name, value) }
}

// Member is a fake connection to the room: it implements pipeline.Sender and
// records what is sent to it alone.
type Member struct {
	room    *Room
	id      int64
	cookies map[string]string
	query   url.Values
	pipeline.SenderState

	mu      sync.Mutex
	replies [][]byte
}

// Member adds a member to the room. name is the name it goes by before any
// pipeline ran ("" for a fresh connection, which the username plugin names
// from its cookie or as a guest); it has client id 1, 2, … in order. It is
// listed by the room's Members service at once (plugins such as commands'
// /who and direct messages see it); Join runs the join pipeline.
func (r *Room) Member(name string, opts ...MemberOption) *Member {
	r.mu.Lock()
	r.nextID++
	m := &Member{room: r, id: r.nextID, cookies: map[string]string{}, query: url.Values{}}
	r.members = append(r.members, m)
	r.mu.Unlock()
	m.SetUsername(name)
	for _, o := range opts {
		o(m)
	}
	return m
}

// Result is what one event did.
type Result struct {
	// Event is the event after its pipeline.
	Event *pipeline.Event
	// Err is the refusal the sender would be told (nil when accepted): a
	// plugin's *pipeline.Error, or code internal for a failure or panic.
	Err *pipeline.Error
	// Cause is the error the pipeline returned, as it returned it.
	Cause error
	// Published is what the event published (to the room, or directly).
	Published []Published
	// Kept is what the event added to the room's history.
	Kept []pipeline.Envelope
	// Replies are the frames sent to the sender alone during the event.
	Replies []pipeline.Envelope
}

// Broadcast returns the envelope the event published; it fails (panics with
// a clear message, which fails the test) when it published nothing.
func (r *Result) Broadcast() pipeline.Envelope {
	if len(r.Published) == 0 {
		panic(fmt.Sprintf("pipelinetest: the event published nothing (error: %v)", r.Err))
	}
	return r.Published[0].Envelope
}

// Join runs the join pipeline for m.
func (m *Member) Join() *Result { return m.run(pipeline.Join, pipeline.Inbound{}, false) }

// Leave runs the leave pipeline for m.
func (m *Member) Leave() *Result { return m.run(pipeline.Leave, pipeline.Inbound{}, false) }

// Say sends a message with body, as the frame {"body": body}.
func (m *Member) Say(body string) *Result {
	return m.Run(pipeline.Inbound{Body: body})
}

// Run sends the frame in: its Type picks the pipeline (message when empty).
// As on the server, a type that names no custom kind — join and leave
// included — is refused with unknown_type.
func (m *Member) Run(in pipeline.Inbound) *Result { return m.run(in.Kind(), in, true) }

// run runs one event of kind for m, as the server would; frame says it is a
// client's frame (whose kind is checked), not a join or leave.
func (m *Member) run(kind pipeline.Kind, in pipeline.Inbound, frame bool) *Result {
	r := m.room
	r.mu.Lock()
	pubFrom, histFrom := len(r.published), len(r.history)
	r.mu.Unlock()
	m.mu.Lock()
	repliesFrom := len(m.replies)
	m.mu.Unlock()

	ev := pipeline.NewEvent(kind, m, in)
	res := &Result{Event: ev}
	if frame {
		res.Cause = r.p.Accepts(kind)
	}
	if res.Cause == nil {
		res.Cause = r.p.Run(context.Background(), ev)
	}
	if res.Cause != nil {
		res.Err = pipeline.AsError(res.Cause)
	}

	r.mu.Lock()
	res.Published = slices.Clone(r.published[pubFrom:])
	res.Kept = slices.Clone(r.history[histFrom:])
	r.mu.Unlock()
	m.mu.Lock()
	for _, b := range m.replies[repliesFrom:] {
		var env pipeline.Envelope
		_ = json.Unmarshal(b, &env)
		res.Replies = append(res.Replies, env)
	}
	m.mu.Unlock()
	return res
}

// Replies returns every frame sent to m alone so far, raw.
func (m *Member) Replies() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.replies)
}

// pipeline.Sender

func (m *Member) ID() int64          { return m.id }
func (m *Member) Room() string       { return m.room.Name }
func (m *Member) RemoteAddr() string { return fmt.Sprintf("192.0.2.1:%d", 40000+m.id) }
func (m *Member) Query(name string) string {
	return m.query.Get(name)
}

func (m *Member) Cookie(name string) (string, bool) {
	v, ok := m.cookies[name]
	return v, ok
}

func (m *Member) Send(frame []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replies = append(m.replies, slices.Clone(frame))
	return nil
}

// publisher records publications; a direct message to a name no member has
// is refused as the server refuses it.
type publisher Room

func (p *publisher) Publish(_ context.Context, pub pipeline.Publication) error {
	r := (*Room)(p)
	if pub.To != "" && !r.has(pub.To) {
		return pipeline.Reject(pipeline.CodeNoRecipient, "nobody named %q is in room %q", pub.To, pub.Room)
	}
	var env pipeline.Envelope
	if err := json.Unmarshal(pub.Frame, &env); err != nil {
		return fmt.Errorf("pipelinetest: published frame is not JSON: %w", err)
	}
	pub.Frame = slices.Clone(pub.Frame)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.published = append(r.published, Published{Publication: pub, Envelope: env})
	if pub.Keep {
		r.history = append(r.history, env)
	}
	return nil
}

// historian records what history steps append themselves.
type historian Room

func (h *historian) Append(_ context.Context, _, _ string, frame []byte) error {
	var env pipeline.Envelope
	if err := json.Unmarshal(frame, &env); err != nil {
		return fmt.Errorf("pipelinetest: kept frame is not JSON: %w", err)
	}
	r := (*Room)(h)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.history = append(r.history, env)
	return nil
}

// roster lists the room's members.
type roster Room

func (l *roster) Members(context.Context, string) ([]pipeline.Member, error) {
	r := (*Room)(l)
	r.mu.Lock()
	ms := slices.Clone(r.members)
	r.mu.Unlock()
	out := make([]pipeline.Member, len(ms))
	for i, m := range ms {
		out[i] = pipeline.Member{ClientID: m.id, Username: m.Username()}
	}
	return out, nil
}

// has reports whether a member goes by name.
func (r *Room) has(name string) bool {
	ms, _ := (*roster)(r).Members(context.Background(), r.Name)
	return slices.ContainsFunc(ms, func(m pipeline.Member) bool { return m.Username == name })
}

var (
	_ pipeline.Sender        = (*Member)(nil)
	_ pipeline.Publisher     = (*publisher)(nil)
	_ pipeline.HistoryWriter = (*historian)(nil)
	_ pipeline.Members       = (*roster)(nil)
)
