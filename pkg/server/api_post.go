package server

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// postMessage runs the room's pipeline for the posted frame, as for a
// member's, under the given username (the caller holds a key: it is trusted;
// see Server.Post), and answers 201 with the envelope exactly as it was
// broadcast — or, for a ref accepted before, its ack. The room needs no
// members: the message lands in its history.
//
// The body is decoded as a WebSocket frame is (decodeInbound), so the two
// doors refuse the same frames with the same codes; username is required.
func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	body := s.readJSONBody(w, r)
	if body == nil {
		return
	}
	in, perr := decodeInbound(websocket.TextMessage, body)
	if perr == nil && (in.Username == nil || strings.TrimSpace(*in.Username) == "") {
		perr = pipeline.Reject(pipeline.CodeInvalidJSON, "field username is required")
	}
	if perr != nil {
		writeAPIError(w, 0, perr)
		return
	}
	room := chi.URLParam(r, "room")
	frame, err := s.Post(r.Context(), room, *in.Username, in)
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
	_, _ = w.Write(frame) //nolint:gosec // G705: JSON (application/json, nosniff), the envelope as broadcast

}
