// Package history keeps the last messages of each room. Stores hold encoded
// envelopes (the exact bytes that were broadcast), so they know nothing of the
// wire format beyond the `id` field, and `history dump` prints what clients saw.
package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
)

// Entry is one stored envelope.
type Entry struct {
	ID    string
	Frame []byte
}

// Store is a room-keyed history of bounded size.
//
// Implementations are safe for concurrent use. Appends to one room are kept in
// the order Append was called; readers see entries oldest first. A store trims
// each room to its size on every append.
type Store interface {
	// Append adds frame, whose envelope id is id, to the end of room's history.
	Append(ctx context.Context, room, id string, frame []byte) error
	// Recent returns the newest limit entries of room, oldest first; limit <= 0
	// means all that are kept.
	Recent(ctx context.Context, room string, limit int) ([]Entry, error)
	// Clear empties room's history.
	Clear(ctx context.Context, room string) error
	// Delete removes the entry whose id is id from room's history (the
	// server API's DELETE), keeping the order of the others. It returns
	// ErrNotFound when room's history does not hold id.
	Delete(ctx context.Context, room, id string) error
	// Ping reports whether the store is reachable (for /readyz).
	Ping(ctx context.Context) error
	// Close flushes what is pending and releases the store.
	Close() error
}

// ErrUnsupported is returned by operations a store cannot perform, such as
// clearing an in-memory store that lives in another process.
var ErrUnsupported = errors.New("history: not supported by this store")

// ErrNotFound is Delete's answer for an id the room's history does not hold
// (never kept, evicted, or deleted already).
var ErrNotFound = errors.New("history: no such entry")

// Since returns the entries after the one whose id is id. If id is not among
// them (evicted, or never seen), it returns all entries and complete=false, so a
// reconnecting client gets everything there is and knows it may have a gap.
func Since(entries []Entry, id string) (after []Entry, complete bool) {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].ID == id {
			return entries[i+1:], true
		}
	}
	return entries, false
}

// IDOf returns the envelope id of frame, or "" if it has none. Envelopes are
// encoded with the id first ({"id":"…"; pipeline.Envelope.AppendJSON), so
// the common case is read without decoding; it runs for every entry a join
// reads from Redis and for every frame the Redis broker receives.
func IDOf(frame []byte) string {
	const head = `{"id":"`
	if bytes.HasPrefix(frame, []byte(head)) {
		rest := frame[len(head):]
		if end := bytes.IndexByte(rest, '"'); end >= 0 && bytes.IndexByte(rest[:end], '\\') < 0 {
			return string(rest[:end])
		}
	}
	var v struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(frame, &v)
	return v.ID
}

// Valid returns the entries whose frame is a JSON value, and how many were
// not. A shared Redis can hold a corrupted or foreign element; one such entry
// must not cost a whole room its history frame or API answer. The common case,
// all valid, returns entries itself without copying.
func Valid(entries []Entry) (valid []Entry, dropped int) {
	for i, e := range entries {
		if json.Valid(e.Frame) {
			continue
		}
		valid = append(make([]Entry, 0, len(entries)-1), entries[:i]...)
		for _, e := range entries[i:] {
			if json.Valid(e.Frame) {
				valid = append(valid, e)
			}
		}
		return valid, len(entries) - len(valid)
	}
	return entries, 0
}
