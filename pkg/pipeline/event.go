package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Kind says which pipeline an event runs through: one of the three built-in
// kinds, or a custom kind that a config declares by naming a pipeline after
// it (`pipelines: { typing: [...] }`).
type Kind string

// The three built-in pipelines of a room. Their names are the keys under
// `pipelines:` in YAML.
const (
	Join    Kind = "join"
	Message Kind = "message"
	Leave   Kind = "leave"
)

// EnvelopeType is the wire type of the envelope an event of kind k
// broadcasts: online for a join, offline for a leave, message for a message,
// and the kind's own name for a custom kind.
func (k Kind) EnvelopeType() string {
	switch k {
	case Join:
		return TypeOnline
	case Leave:
		return TypeOffline
	}
	return string(k)
}

// Custom reports whether k is a custom kind (not join, message or leave).
func (k Kind) Custom() bool { return k != Join && k != Message && k != Leave }

// Kinds lists the built-in kinds in the order config files show them.
var Kinds = []Kind{Join, Message, Leave}

// Envelope types as they appear in the `type` field on the wire.
const (
	TypeOnline  = "online"
	TypeOffline = "offline"
	TypeMessage = "message"
	TypeHistory = "history"
	TypeError   = "error"
	TypeAck     = "ack"
	TypeDelete  = "delete"
	// TypeGap is the frame saying that frames of the room were lost (a
	// node held more than broker.outbox_size while Redis was unreachable):
	// data.missed says how many.
	TypeGap = "gap"
)

// kindName is what a custom kind's name must look like: it becomes an
// envelope type that clients switch on, so it is short, lower case and safe
// in any language's identifiers.
var kindName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// CheckKind says why k cannot name a pipeline, or returns nil. The built-in
// kinds are fine; a custom kind must match [a-z][a-z0-9_]{0,31} and must not
// take the name of a frame the server sends itself (a client could not tell
// a custom "error" from the server's).
func CheckKind(k Kind) error {
	switch string(k) {
	case string(Join), string(Message), string(Leave):
		return nil
	case TypeOnline, TypeOffline, TypeHistory, TypeError, TypeAck, TypeDelete, TypeGap:
		return fmt.Errorf("kind %q is the name of a frame the server sends; pick another name", k)
	}
	if !kindName.MatchString(string(k)) {
		return fmt.Errorf("kind %q: a custom kind is 1-32 characters of a-z, 0-9 and _, starting with a letter", k)
	}
	return nil
}

// Envelope is one server → client frame of the wire protocol.
type Envelope struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Room     string `json:"room"`
	ClientID int64  `json:"client_id"`
	Username string `json:"username"`
	// To is the name a direct message is addressed to (see Inbound.To).
	To   string `json:"to,omitempty"`
	Body string `json:"body,omitempty"`
	HTML string `json:"html,omitempty"`
	// Data is a JSON object the client sent (Inbound.Data), as the pipeline
	// left it: plugins may read and replace it (SetData). Empty: no data.
	Data     json.RawMessage `json:"data,omitempty"`
	Datetime string          `json:"datetime"`
	TS       int64           `json:"ts"`
}

// same reports whether e and o encode to the same JSON.
func (e *Envelope) same(o *Envelope) bool {
	return e.ID == o.ID && e.Type == o.Type && e.Room == o.Room && e.ClientID == o.ClientID &&
		e.Username == o.Username && e.To == o.To && e.Body == o.Body && e.HTML == o.HTML &&
		e.Datetime == o.Datetime && e.TS == o.TS && bytes.Equal(e.Data, o.Data)
}

// DatetimeLayout is the seed's `datetime` format, in server local time.
const DatetimeLayout = "2006-01-02 15:04:05"

// Stamp sets Datetime and TS from t.
func (e *Envelope) Stamp(t time.Time) {
	e.Datetime = formatDatetime(t)
	e.TS = t.UnixMilli()
}

// lastDatetime caches the formatted second most recently stamped: a busy
// room stamps many events per second, and formatting is most of a stamp.
var lastDatetime atomic.Pointer[stampedSecond]

type stampedSecond struct {
	unix int64
	loc  *time.Location
	s    string
}

func formatDatetime(t time.Time) string {
	sec, loc := t.Unix(), t.Location()
	if c := lastDatetime.Load(); c != nil && c.unix == sec && c.loc == loc {
		return c.s
	}
	s := t.Format(DatetimeLayout)
	lastDatetime.Store(&stampedSecond{unix: sec, loc: loc, s: s})
	return s
}

// Inbound is one client → server frame:
//
//	{"type": "message", "body": "hello", "username": "alice", "data": {…}, "to": "bob", "ref": "r1"}
//
// Every field is optional; a seed client sends only body and username.
// Username is a pointer so that "absent" and "empty" differ: only a present
// name asks for a rename.
type Inbound struct {
	// Type names the pipeline the event runs through: "message" (also when
	// empty) or a custom kind.
	Type     string  `json:"type,omitempty"`
	Body     string  `json:"body"`
	Username *string `json:"username,omitempty"`
	// Data is a JSON object carried into the envelope's data.
	Data json.RawMessage `json:"data,omitempty"`
	// To makes the event a direct message to the members of the room with
	// that name (and the sender's own connection); it is never kept.
	To string `json:"to,omitempty"`
	// Ref is the client's name for this frame: the ack and any error answering
	// it carry it, and a resent ref is acknowledged without running again.
	Ref string `json:"ref,omitempty"`
}

// Kind is the pipeline the frame asks for: Type, or message when it is empty.
func (in *Inbound) Kind() Kind {
	if in.Type == "" {
		return Message
	}
	return Kind(in.Type)
}

// Event is what flows through a pipeline: the envelope being built, the sender,
// and, for message events, what the client sent. Plugins change Envelope in place.
//
// An Event belongs to the goroutine that runs its pipeline; plugins must not keep
// it after their handler returns.
type Event struct {
	Kind     Kind
	Envelope Envelope
	// In is the decoded client frame (message and custom-kind events).
	In Inbound
	// Sender is the connection the event is about. For join and leave it is the
	// member joining or leaving.
	Sender Sender
	// Keep asks that the event be kept in the room's history. The history plugin
	// sets it; the broadcast plugin passes it to the publisher so that append and
	// fan-out happen in one order for the room.
	Keep bool
	// Published is set by the broadcast plugin once the event was handed to the
	// publisher (and so, if Keep was set, appended to history too).
	Published bool
	// Quiet asks the publisher not to fan this presence event out: the room
	// is over websocket.presence_limit, so only the member joining hears its
	// own online (and history keeps it if Keep). The server sets it before
	// the pipeline runs; it travels in Publication, so it holds whatever
	// context a plugin publishes with.
	Quiet bool
	// ExpiresAt, when a join step sets it, is when the identity the sender
	// proved runs out (a token's exp): the server closes the connection then.
	ExpiresAt time.Time

	frame     []byte
	encoded   Envelope
	down      time.Duration // time spent in later steps; see observe
	downErr   error         // what the later steps returned; see observe
	completed bool
}

// NewEvent returns an event of kind from s, carrying in, with the envelope
// the server starts every pipeline with: a new id, the kind's type, the
// sender's room, client id and current name, in's to and data, and the
// time. The server, `chatserver pipeline run` and the test kit build events
// with it, so a plugin sees the same start everywhere.
func NewEvent(kind Kind, s Sender, in Inbound) *Event {
	ev := &Event{Kind: kind, In: in, Sender: s}
	ev.Envelope = Envelope{
		ID:       uuid.NewString(),
		Type:     kind.EnvelopeType(),
		Room:     s.Room(),
		ClientID: s.ID(),
		Username: s.Username(),
		To:       in.To,
		Data:     in.Data,
	}
	ev.Envelope.Stamp(time.Now())
	return ev
}

// Completed reports whether the event went through every step of its
// pipeline: no step rejected or dropped it. A plugin acting after next
// returned uses it to tell "the rest accepted it" from "a later step dropped it".
func (ev *Event) Completed() bool { return ev.completed }

// Frame returns the JSON encoding of the envelope, encoding it at most once per
// distinct envelope value (history and broadcast both need it).
func (ev *Event) Frame() ([]byte, error) {
	if ev.frame != nil && ev.encoded.same(&ev.Envelope) {
		return ev.frame, nil
	}
	if err := CheckData(ev.Envelope.Data); err != nil {
		return nil, err
	}
	b := ev.Envelope.AppendJSON(make([]byte, 0, ev.Envelope.jsonSize()))
	ev.frame, ev.encoded = b, ev.Envelope
	ev.encoded.Data = bytes.Clone(ev.Envelope.Data) // a plugin may change Data in place
	return b, nil
}

// CheckData returns an error unless data is empty or a JSON object.
func CheckData(data json.RawMessage) error {
	if len(data) == 0 {
		return nil
	}
	if !json.Valid(data) {
		return fmt.Errorf("data is not valid JSON")
	}
	if i := bytes.IndexFunc(data, func(r rune) bool { return r != ' ' && r != '\t' && r != '\n' && r != '\r' }); data[i] != '{' {
		return fmt.Errorf("data must be a JSON object")
	}
	return nil
}

// SetData replaces the envelope's data with v encoded as JSON, which must be
// an object (a struct or a map); nil removes it.
func (ev *Event) SetData(v any) error {
	if v == nil {
		ev.Envelope.Data = nil
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding data: %w", err)
	}
	if err := CheckData(b); err != nil {
		return err
	}
	ev.Envelope.Data = b
	return nil
}

// Reply sends env to the sender alone. It does not pass through any pipeline.
func (ev *Event) Reply(env Envelope) error {
	if env.Room == "" {
		env.Room = ev.Envelope.Room
	}
	if err := CheckData(env.Data); err != nil {
		return err
	}
	return ev.Sender.Send(env.AppendJSON(nil))
}

// Sender is the connection an event came from, as plugins see it. Implementations
// are safe for concurrent use.
type Sender interface {
	// ID is the per-node connection number (the envelope's client_id).
	ID() int64
	// Room is the room the connection is in.
	Room() string
	// Username is the name the connection currently goes by ("" before any
	// username step ran).
	Username() string
	// SetUsername renames the connection for the events that follow.
	SetUsername(name string)
	// Cookie returns the named cookie of the WebSocket handshake request.
	Cookie(name string) (string, bool)
	// Query returns a query parameter of the handshake request.
	Query(name string) string
	// RemoteAddr is the client's address (host:port).
	RemoteAddr() string
	// Send queues a frame for the sender alone. It never blocks; a client whose
	// queue is full is disconnected and Send returns an error.
	Send(frame []byte) error
	// Value returns per-connection state a plugin stored under key, or nil.
	// State dies with the connection, so plugins need no cleanup on leave.
	Value(key any) any
	// SetValue stores per-connection state under key.
	SetValue(key, value any)
}

// SenderState is what every Sender keeps besides its connection: the name it
// goes by and the plugins' per-connection values, safe for concurrent use.
// Embed it in a Sender that is not a WebSocket connection (the server API's
// caller, `pipeline run`, the test kit's members) for Username, SetUsername,
// Value and SetValue.
type SenderState struct {
	mu     sync.Mutex
	name   string
	values map[any]any
}

// Username implements Sender.
func (s *SenderState) Username() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name
}

// SetUsername implements Sender.
func (s *SenderState) SetUsername(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.name = name
}

// Value implements Sender.
func (s *SenderState) Value(key any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.values[key]
}

// SetValue implements Sender.
func (s *SenderState) SetValue(key, value any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = map[any]any{}
	}
	s.values[key] = value
}

// Trusted is implemented by a Sender whose name the server vouches for: a
// backend posting through the server API, not a connection. Identity steps
// take its name as proven, and per-client rate limits do not apply to it.
type Trusted interface {
	Trusted() bool
}

// IsTrusted reports whether s is a Trusted sender.
func IsTrusted(s Sender) bool {
	t, ok := s.(Trusted)
	return ok && t.Trusted()
}

// SetBody replaces the body of a message event, inbound and envelope alike.
// When the body changes, html that an earlier render_html step rendered from
// the old one is dropped: a stale rendering must never go out (it would show
// the original text); clients render an envelope without html from its
// fields. Plugins that transform bodies belong before render_html.
func (ev *Event) SetBody(body string) {
	if body != ev.Envelope.Body {
		ev.Envelope.HTML = ""
	}
	ev.In.Body, ev.Envelope.Body = body, body
}
