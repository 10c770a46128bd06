package pipeline

import (
	"context"
	"html/template"
	"log/slog"
)

// Deps are the services of the server a plugin runs in. The engine defines them
// as small interfaces so that plugins never see transport or storage types; the
// server fills them in. A field may be nil where a service is absent (for
// example in `chatserver pipeline run`); plugins that need one say so from New.
type Deps struct {
	// Publisher fans events out to a room (the broadcast plugin).
	Publisher Publisher
	// History appends to a room's history outside of a publish.
	History HistoryWriter
	// Members lists who is in a room (the commands plugin's /who).
	Members Members
	// Templates holds the message templates (render_html).
	Templates *template.Template
	// Logger is the server's logger, already labelled with the step.
	Logger *slog.Logger
}

// Publisher hands a frame to the members of a room, on every node.
//
// Publish is safe for concurrent use. For one room, frames reach every member in
// one order, and when Keep is set the frame is appended to the room's history
// in that same order — so history dump shows exactly what was broadcast. It never
// blocks on a slow client.
type Publisher interface {
	Publish(ctx context.Context, p Publication) error
}

// Publication is one frame to publish and who gets it.
type Publication struct {
	// Kind is the kind of the event published (the publisher tells a join's
	// own online from other frames by it).
	Kind  Kind
	Room  string
	ID    string // the envelope's id
	Frame []byte // the encoded envelope
	// Keep appends the frame to the room's history (never for a direct message).
	Keep bool
	// To, when set, makes it a direct message: it goes to every connection of
	// a member of that name in the room, on every node, and to the
	// connection From, and to nobody else. Nobody of that name in the room:
	// Publish returns an *Error with CodeNoRecipient.
	To   string
	From int64
	// Quiet is Event.Quiet: a presence event of a crowded room, heard only by
	// Sender (kept if Keep).
	Quiet  bool
	Sender Sender
}

// Publication returns what publishing ev's encoded envelope (frame) means.
func (ev *Event) Publication(frame []byte) Publication {
	e := &ev.Envelope
	return Publication{Kind: ev.Kind, Room: e.Room, ID: e.ID, Frame: frame, Keep: ev.Keep && e.To == "",
		To: e.To, From: e.ClientID, Quiet: ev.Quiet, Sender: ev.Sender}
}

// HistoryWriter appends one encoded envelope to a room's history.
type HistoryWriter interface {
	Append(ctx context.Context, room, id string, frame []byte) error
}

// Member is one connection in a room, as /api/rooms/{room}/members shows it.
type Member struct {
	ClientID int64  `json:"client_id"`
	Username string `json:"username"`
}

// Members lists the members of a room across all nodes.
type Members interface {
	Members(ctx context.Context, room string) ([]Member, error)
}
