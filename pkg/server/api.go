package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// The server API (README: Server API; openapi.json documents it). Reads are
// public unless api.protect_reads; writes need a key and do not exist (404)
// without one. Every error is {"code": …, "reason": …}: the codes of the
// WebSocket's error frames where they apply, mapped to statuses by
// apiStatus, and a few of the API's own below.

// Error codes of the server API besides the pipeline's.
const (
	codeNotFound     = pipeline.CodeNotFound // no such message, or the API is off
	codeUnauthorized = "unauthorized"        // no valid key
	codeBadRequest   = "bad_request"         // a bad room name, query parameter or path
	codeTooLarge     = "too_large"           // a body over websocket.max_message_bytes
	codeMediaType    = "unsupported_media_type"
	codeUnavailable  = "unavailable" // the history store or Redis did not answer
)

// apiStatus is the HTTP status of an error code.
func apiStatus(code string) int {
	switch code {
	case pipeline.CodeInvalidJSON, pipeline.CodeEmpty, pipeline.CodeTooLong, pipeline.CodeUnknownType, codeBadRequest:
		return http.StatusBadRequest
	case codeNotFound, pipeline.CodeNoRecipient:
		return http.StatusNotFound
	case pipeline.CodeRejected:
		return http.StatusUnprocessableEntity
	case pipeline.CodeRateLimited:
		return http.StatusTooManyRequests
	case codeUnauthorized:
		return http.StatusUnauthorized
	case codeTooLarge:
		return http.StatusRequestEntityTooLarge
	case codeMediaType:
		return http.StatusUnsupportedMediaType
	case codeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeAPIError answers e as {"code","reason"} with the status of its code
// (status, when not 0, overrides it).
func writeAPIError(w http.ResponseWriter, status int, e *pipeline.Error) {
	if status == 0 {
		status = apiStatus(e.Code)
	}
	writeJSON(w, status, e)
}

// apiRoutes mounts the server API under /api.
func (s *Server) apiRoutes(r chi.Router) {
	r.Get("/openapi.json", serveOpenAPI)
	r.Group(func(r chi.Router) {
		r.Use(s.requireKeyForReads)
		r.Get("/rooms", s.serveRooms)
		r.With(apiRoom).Get("/rooms/{room}/history", s.serveHistory)
		r.With(apiRoom).Get("/rooms/{room}/members", s.serveMembers)
	})
	r.Group(func(r chi.Router) {
		r.Use(s.requireKey)
		r.With(apiRoom).Post("/rooms/{room}/messages", s.postMessage)
		r.With(apiRoom).Delete("/rooms/{room}/messages/{id}", s.deleteMessage)
		r.With(apiRoom).Post("/rooms/{room}/kick", s.kick)
	})
}

// apiRoom refuses invalid room names with 400 before any handler runs
// (after the key check: a caller without a key learns nothing).
func apiRoom(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ValidRoom(chi.URLParam(r, "room")) {
			writeAPIError(w, 0, pipeline.Reject(codeBadRequest, "invalid room name: want 1-64 characters of A-Z a-z 0-9 _ . -"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// readJSONBody reads r's body, which must be JSON (415 otherwise) of at most
// websocket.max_message_bytes (413 otherwise) — what a WebSocket frame may
// carry. On failure it has answered and returns nil.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) []byte {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeAPIError(w, 0, pipeline.Reject(codeMediaType, "send a JSON body with Content-Type: application/json"))
		return nil
	}
	limit := s.cfg.WebSocket.MaxMessageBytes
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeAPIError(w, 0, pipeline.Reject(codeTooLarge, "the body is over websocket.max_message_bytes (%d bytes)", limit))
			return nil
		}
		writeAPIError(w, 0, pipeline.Reject(codeBadRequest, "reading the body: %v", err))
		return nil
	}
	return body
}

// decodeStrict decodes a JSON object into v refusing unknown fields and
// trailing data, with the field at fault named (as for WebSocket frames).
func decodeStrict(body []byte, v any) *pipeline.Error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return pipeline.Reject(pipeline.CodeInvalidJSON, "%s", jsonProblem(err))
	}
	if dec.More() {
		return pipeline.Reject(pipeline.CodeInvalidJSON, "trailing data after the JSON object")
	}
	return nil
}

// kickRequest is the body of POST /api/rooms/{room}/kick.
type kickRequest struct {
	Username *string `json:"username"`
	Ban      *string `json:"ban"`
}

// kick closes every connection of a name in the room, on every node, with
// 4001; with a ban the name cannot join the room again until it ends. The
// ban is recorded before the kick goes out, so a connection of that name
// joining meanwhile is either kicked or refused. It answers how many
// connections the room listed under that name.
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	body := s.readJSONBody(w, r)
	if body == nil {
		return
	}
	var req kickRequest
	if perr := decodeStrict(body, &req); perr != nil {
		writeAPIError(w, 0, perr)
		return
	}
	if req.Username == nil || strings.TrimSpace(*req.Username) == "" {
		writeAPIError(w, 0, pipeline.Reject(pipeline.CodeInvalidJSON, "field username is required"))
		return
	}
	room, name := chi.URLParam(r, "room"), *req.Username
	ctx := r.Context()
	if req.Ban != nil {
		d, err := time.ParseDuration(*req.Ban)
		if err != nil || d <= 0 {
			writeAPIError(w, 0, pipeline.Reject(pipeline.CodeInvalidJSON, `field ban must be a positive duration such as "10m" or "24h"`))
			return
		}
		if err := s.bans.Ban(ctx, room, name, d); err != nil {
			s.log.Error("api: recording a ban", "room", room, "err", err)
			writeAPIError(w, 0, pipeline.Reject(codeUnavailable, "the ban could not be recorded"))
			return
		}
	}
	members, err := s.members(ctx, room)
	if err != nil {
		s.log.Warn("api kick: listing members", "room", room, "err", err)
	}
	n := 0
	for _, m := range members {
		if m.Username == name {
			n++
		}
	}
	if err := s.broker.Kick(ctx, room, name); err != nil {
		s.log.Error("api: kick", "room", room, "err", err)
		writeAPIError(w, 0, pipeline.Reject(codeUnavailable, "the kick reached this node only"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"kicked": n})
}

// deleteFrame is the frame that tells members a message was deleted.
type deleteFrame struct {
	Type string `json:"type"`
	Room string `json:"room"`
	ID   string `json:"id"`
}

// deleteMessage removes a message from the room's history and tells every
// member on every node. The frame is published without an id of its own
// (it names another message's) and is not kept.
func (s *Server) deleteMessage(w http.ResponseWriter, r *http.Request) {
	room, id := chi.URLParam(r, "room"), chi.URLParam(r, "id")
	ctx := r.Context()
	switch err := s.store.Delete(ctx, room, id); {
	case errors.Is(err, history.ErrNotFound):
		writeAPIError(w, 0, pipeline.Reject(codeNotFound, "no message %q in the history of room %s", id, room))
		return
	case err != nil:
		s.log.Error("api: deleting from history", "room", room, "err", err)
		writeAPIError(w, 0, pipeline.Reject(codeUnavailable, "history store unavailable"))
		return
	}
	frame, err := json.Marshal(deleteFrame{Type: "delete", Room: room, ID: id})
	if err == nil {
		err = s.broker.Publish(ctx, room, "", frame, false)
	}
	if err != nil {
		s.log.Error("api: publishing a delete", "room", room, "id", id, "err", err)
		writeAPIError(w, 0, pipeline.Reject(codeUnavailable, "deleted from history, but members were not told"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// roomCount is one entry of GET /api/rooms.
type roomCount struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
}

// serveRooms lists the rooms with members on any node, by name.
func (s *Server) serveRooms(w http.ResponseWriter, r *http.Request) {
	counts, err := s.roomCounts(r.Context())
	if err != nil {
		s.log.Error("api: listing rooms", "err", err)
		writeAPIError(w, 0, pipeline.Reject(codeUnavailable, "rooms unavailable"))
		return
	}
	out := make([]roomCount, 0, len(counts))
	for room, n := range counts {
		out = append(out, roomCount{room, n})
	}
	slices.SortFunc(out, func(a, b roomCount) int { return cmp.Compare(a.Room, b.Room) })
	writeJSON(w, http.StatusOK, out)
}

// roomCounts counts members per room: cluster-wide with broker redis (from
// presence), else the hub's.
func (s *Server) roomCounts(ctx context.Context) (map[string]int, error) {
	if s.presence != nil {
		return s.presence.Rooms(ctx)
	}
	return s.hub.roomCounts(), nil
}

// Paging through history (GET /api/rooms/{room}/history).
const defaultHistoryPage = 50

// serveHistory answers the limit (default 50, at most history.size)
// messages before the one whose id is before (the newest without before),
// oldest first.
func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	room, q := chi.URLParam(r, "room"), r.URL.Query()
	limit := min(defaultHistoryPage, s.cfg.History.Size)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeAPIError(w, 0, pipeline.Reject(codeBadRequest, "limit must be a whole number from 1 to %d (history.size)", s.cfg.History.Size))
			return
		}
		limit = min(n, s.cfg.History.Size)
	}
	entries, err := s.store.Recent(r.Context(), room, 0)
	if err != nil {
		s.log.Error("api: reading history", "room", room, "err", err)
		writeAPIError(w, 0, pipeline.Reject(codeUnavailable, "history store unavailable"))
		return
	}
	if q.Has("before") { // before= (empty) names no message either: 404
		before := q.Get("before")
		i := slices.IndexFunc(entries, func(e history.Entry) bool { return e.ID == before })
		if i < 0 {
			writeAPIError(w, 0, pipeline.Reject(codeNotFound, "no message %q in the history of room %s (evicted, deleted or never there)", before, room))
			return
		}
		entries = entries[:i]
	}
	entries = entries[max(0, len(entries)-limit):]
	entries, bad := history.Valid(entries)
	if bad > 0 {
		s.log.Warn("api: skipped history entries that are not JSON", "room", room, "count", bad)
	}
	out := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		out[i] = e.Frame
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveMembers(w http.ResponseWriter, r *http.Request) {
	members, err := s.members(r.Context(), chi.URLParam(r, "room"))
	if err != nil {
		writeAPIError(w, 0, pipeline.Reject(codeUnavailable, "members unavailable"))
		return
	}
	writeJSON(w, http.StatusOK, members)
}
