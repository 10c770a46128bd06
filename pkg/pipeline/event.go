package pipeline

import (
	"encoding/json"
	"sync/atomic"
	"time"
)

// Kind says which pipeline an event runs through.
type Kind string

// The three pipelines of a room. Their names are the keys under `pipelines:` in YAML.
const (
	Join    Kind = "join"
	Message Kind = "message"
	Leave   Kind = "leave"
)

// EnvelopeType is the wire type of the envelope an event of kind k
// broadcasts: online for a join, offline for a leave, message otherwise.
func (k Kind) EnvelopeType() string {
	switch k {
	case Join:
		return TypeOnline
	case Leave:
		return TypeOffline
	}
	return TypeMessage
}

// Kinds lists every pipeline kind in the order config files show them.
var Kinds = []Kind{Join, Message, Leave}

// Envelope types as they appear in the `type` field on the wire (SPEC §5).
const (
	TypeOnline  = "online"
	TypeOffline = "offline"
	TypeMessage = "message"
	TypeHistory = "history"
	TypeError   = "error"
)

// Envelope is one server → client frame of the wire protocol. It is a comparable
// struct (no slices or maps) on purpose: Event.Frame memoises the encoding and
// detects a change by comparing the envelope it encoded with the current one.
type Envelope struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Room     string `json:"room"`
	ClientID int64  `json:"client_id"`
	Username string `json:"username"`
	Body     string `json:"body,omitempty"`
	HTML     string `json:"html,omitempty"`
	Datetime string `json:"datetime"`
	TS       int64  `json:"ts"`
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

// Inbound is one client → server frame: `{"body": "hello", "username": "alice"}`.
// Username is a pointer so that "absent" and "empty" differ: only a present name
// asks for a rename.
type Inbound struct {
	Body     string  `json:"body"`
	Username *string `json:"username,omitempty"`
}

// Event is what flows through a pipeline: the envelope being built, the sender,
// and, for message events, what the client sent. Plugins change Envelope in place.
//
// An Event belongs to the goroutine that runs its pipeline; plugins must not keep
// it after their handler returns.
type Event struct {
	Kind     Kind
	Envelope Envelope
	// In is the decoded client frame (message events only).
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

	frame     []byte
	encoded   Envelope
	down      time.Duration // time spent in later steps; see observe
	downErr   error         // what the later steps returned; see observe
	completed bool
}

// Completed reports whether the event went through every step of its
// pipeline: no step rejected or dropped it. A plugin acting after next
// returned uses it to tell "the rest accepted it" from "a later step dropped it".
func (ev *Event) Completed() bool { return ev.completed }

// Frame returns the JSON encoding of the envelope, encoding it at most once per
// distinct envelope value (history and broadcast both need it).
func (ev *Event) Frame() ([]byte, error) {
	if ev.frame != nil && ev.encoded == ev.Envelope {
		return ev.frame, nil
	}
	b := ev.Envelope.AppendJSON(make([]byte, 0, ev.Envelope.jsonSize()))
	ev.frame, ev.encoded = b, ev.Envelope
	return b, nil
}

// Reply sends env to the sender alone. It does not pass through any pipeline.
func (ev *Event) Reply(env Envelope) error {
	if env.Room == "" {
		env.Room = ev.Envelope.Room
	}
	b, err := json.Marshal(&env)
	if err != nil {
		return err
	}
	return ev.Sender.Send(b)
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
