package client

import (
	"encoding/json"
	"strconv"
)

// Frame types the server sends. A custom kind's envelopes carry
// the kind's name, e.g. "typing".
const (
	TypeMessage = "message"
	TypeOnline  = "online"
	TypeOffline = "offline"
	TypeHistory = "history"
	TypeError   = "error"
	TypeAck     = "ack"
	TypeDelete  = "delete"
	// TypeGap is an envelope saying that data.missed frames of the room
	// were lost (a node held more than it could while its Redis was away).
	TypeGap = "gap"
)

// Close codes after which the client does not reconnect. A refused join
// (1008 before the history frame) is final too: see Options.MaxRefusals.
const (
	// CloseKicked is a kick or ban through the server API.
	CloseKicked = 4001
	// CloseTokenExpired is a JWT that expired while connected; the client
	// reconnects only when Options.TokenFunc can give it a new token.
	CloseTokenExpired = 4002
)

// Event is one frame from the server: an envelope (message, online, offline,
// a custom kind), a history frame, an ack, an error or a delete. Fields a
// type does not use are zero.
type Event struct {
	Type     string          `json:"type"`
	ID       string          `json:"id,omitempty"`
	Room     string          `json:"room,omitempty"`
	ClientID int64           `json:"client_id,omitempty"`
	Username string          `json:"username,omitempty"`
	Body     string          `json:"body,omitempty"`
	HTML     string          `json:"html,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	To       string          `json:"to,omitempty"`
	Datetime string          `json:"datetime,omitempty"`
	TS       int64           `json:"ts,omitempty"`

	// Messages are a history frame's envelopes not delivered before (each
	// is also delivered as an Event of its own, with FromHistory set).
	Messages []Event `json:"messages,omitempty"`
	// Complete is false in a history frame answering ?since= when that id
	// was no longer in the history: there may be a gap.
	Complete *bool `json:"complete,omitempty"`

	// Ref is an ack's or an error's: the ref of the frame it answers.
	Ref string `json:"ref,omitempty"`
	// Code and Reason are an error's.
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`

	// FromHistory is set on envelopes that came in a history frame (the
	// first join, or the recovery after a reconnect), not live.
	FromHistory bool `json:"-"`
	// Raw is the frame as received (for an envelope from a history frame,
	// the envelope's own JSON).
	Raw json.RawMessage `json:"-"`
}

// Message is what Send sends. Every field is optional except as
// the server's pipeline requires (a message needs a non-blank Body).
type Message struct {
	// Type is "message" (when empty) or a custom kind of the server.
	Type string `json:"type,omitempty"`
	Body string `json:"body,omitempty"`
	// Username renames the sender where the server allows it; empty means
	// Options.Username.
	Username string `json:"username,omitempty"`
	// Data is a JSON object carried into the envelope.
	Data json.RawMessage `json:"data,omitempty"`
	// To sends a direct message to the member(s) of that name in the room.
	To string `json:"to,omitempty"`
	// Ref identifies the frame for its ack (1-64 printable ASCII); empty
	// means one the client makes.
	Ref string `json:"ref,omitempty"`
}

// Ack is the server's answer to an accepted frame: ID is the envelope it
// produced, empty when it produced none (as /who does).
type Ack struct {
	Ref string
	ID  string
}

// Member is one connection in a room, as GET /api/rooms/{room}/members lists it.
type Member struct {
	ClientID int64  `json:"client_id"`
	Username string `json:"username"`
}

// Error is a refusal: Code is the server's error code (invalid_json, empty,
// too_long, rate_limited, rejected, internal, unknown_type, no_recipient, …),
// "too_big" for a frame over Options.MaxFrameBytes or closed with 1009, or,
// for a refused handshake, "http_" and the status.
type Error struct {
	Code   string
	Reason string
	Ref    string
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return "chatserver: " + e.Code
	}
	return "chatserver: " + e.Code + ": " + e.Reason
}

// CloseError is how the server ended the client for good (CloseKicked,
// CloseTokenExpired, or 1008 for a refused join), as Err reports it.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return "chatserver: closed by the server: " + strconv.Itoa(e.Code) + " " + e.Reason
}
