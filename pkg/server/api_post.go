//go:build apipost

package server

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// postRequest is the body of POST /api/rooms/{room}/messages: the fields of
// a WebSocket frame (SPEC §9.1), strictly — an unknown field or one of the
// wrong JSON type is invalid_json naming it — with username required.
type postRequest struct {
	Type     string          `json:"type"`
	Body     string          `json:"body"`
	Username *string         `json:"username"`
	Data     json.RawMessage `json:"data"`
	To       string          `json:"to"`
	Ref      string          `json:"ref"`
}

// inbound checks what decoding alone does not and returns the frame the
// room's pipeline runs.
func (p *postRequest) inbound() (pipeline.Inbound, *pipeline.Error) {
	if p.Username == nil || strings.TrimSpace(*p.Username) == "" {
		return pipeline.Inbound{}, pipeline.Reject(pipeline.CodeInvalidJSON, "field username is required")
	}
	if d := strings.TrimSpace(string(p.Data)); d == "null" {
		p.Data = nil
	} else if d != "" && d[0] != '{' {
		return pipeline.Inbound{}, pipeline.Reject(pipeline.CodeInvalidJSON, "field data must be a JSON object")
	}
	if p.Ref != "" && !validRef(p.Ref) {
		return pipeline.Inbound{}, pipeline.Reject(pipeline.CodeInvalidJSON, "field ref must be 1-64 printable ASCII characters")
	}
	return pipeline.Inbound{Type: p.Type, Body: p.Body, Username: p.Username, Data: p.Data, To: p.To, Ref: p.Ref}, nil
}

// validRef reports whether ref is 1-64 printable ASCII characters.
func validRef(ref string) bool {
	if len(ref) < 1 || len(ref) > 64 {
		return false
	}
	for i := 0; i < len(ref); i++ {
		if ref[i] < 0x20 || ref[i] > 0x7e {
			return false
		}
	}
	return true
}

// postMessage runs the room's pipeline for the posted frame, as for a
// member's, under the given username (the caller holds a key: it is
// trusted), and answers 201 with the envelope exactly as it was broadcast.
// The room needs no members: the message lands in its history.
func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	body := s.readJSONBody(w, r)
	if body == nil {
		return
	}
	var req postRequest
	if perr := decodeStrict(body, &req); perr != nil {
		writeAPIError(w, 0, perr)
		return
	}
	in, perr := req.inbound()
	if perr != nil {
		writeAPIError(w, 0, perr)
		return
	}
	room := chi.URLParam(r, "room")
	frame, err := s.Post(r.Context(), room, *req.Username, in)
	if err != nil {
		pe := pipeline.AsError(err)
		if pe.Code == pipeline.CodeInternal {
			s.log.Error("api: post failed", "room", room, "err", err)
		}
		writeAPIError(w, 0, pe)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(frame)
}
