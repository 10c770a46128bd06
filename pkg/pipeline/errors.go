package pipeline

import (
	"context"
	"errors"
	"fmt"
)

// Error codes of the `error` envelope. A plugin rejects an event by
// returning an *Error; the sender gets `{"type":"error","code":…,"reason":…}`
// (with the frame's `ref` when it had one).
const (
	CodeInvalidJSON = "invalid_json"
	CodeEmpty       = "empty"
	CodeTooLong     = "too_long"
	CodeRateLimited = "rate_limited"
	CodeRejected    = "rejected"
	CodeInternal    = "internal"
	// CodeUnknownType answers a frame whose type names no pipeline of this server.
	CodeUnknownType = "unknown_type"
	// CodeNoRecipient answers a direct message to a name nobody in the room has.
	CodeNoRecipient = "no_recipient"
	// CodeNotFound answers a request for something that is not there (the
	// server API: a message id not in the history).
	CodeNotFound = "not_found"
)

// Error is a rejection the sender is told about. The connection stays open.
type Error struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Reason }

// Reject returns an *Error with the given code and a formatted reason.
func Reject(code, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// ErrorFrame is the wire form of an error envelope. Ref is the ref of the
// frame it answers, if that frame had one.
type ErrorFrame struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
	Ref    string `json:"ref,omitempty"`
}

// AckFrame acknowledges a frame that had a ref: its pipeline completed. ID
// is the id of the envelope it produced, if it produced one.
type AckFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref"`
	ID   string `json:"id,omitempty"`
}

// AsError maps any error a pipeline returned to what the sender is told: an
// *Error anywhere in the chain is shown as is; anything else is `internal`, with
// a reason that does not leak internals.
func AsError(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: CodeInternal, Reason: "the server took too long to handle this message"}
	}
	return &Error{Code: CodeInternal, Reason: "the server could not handle this message"}
}
