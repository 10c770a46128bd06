package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Reads of guarded rooms. When a join step admits only proven members
// (signed or jwt identities), a room's history and members are as private as
// the room: GET /api/rooms/{room}/history and /members answer a caller that
// proves, with the credentials it would join with (the cookie, or ?token=),
// an identity the join would admit to that room — or one with an API key —
// and 401 to anyone else, a name banned from the room included. The list of
// rooms needs a key. The check runs the
// join steps' Gatekeeper.Admit, which verifies without side effects: nobody
// joins, nothing is announced.

// guardedRead reports whether r may read while the pipelines guard joins.
func (s *Server) guardedRead(r *http.Request, p *pipeline.Pipelines) bool {
	if key, ok := bearer(r); ok && s.apiKeys.valid(key) {
		return true
	}
	room := chi.URLParam(r, "room")
	if room == "" || !ValidRoom(room) {
		return false
	}
	name, err := p.Admit(&httpSender{r: r, room: room})
	if err != nil {
		return false
	}
	// A banned name reads nothing of the room either (when the bans cannot
	// be read, as at a join, the proof is enough).
	banned, _ := s.bans.Banned(r.Context(), room, name)
	return !banned
}

// refuseGuardedRead answers a read of a guarded room without a proof.
func (s *Server) refuseGuardedRead(w http.ResponseWriter) {
	s.metrics.APIUnauthorized.WithLabelValues("unproven").Inc()
	writeAPIError(w, http.StatusUnauthorized, pipeline.Reject(codeUnauthorized,
		"this server's rooms admit proven members only: send the identity you join with (its cookie or ?token=), or an API key"))
}

// httpSender is an HTTP request seen as a joiner of room, for
// Gatekeeper.Admit: its cookies and query are the handshake's.
type httpSender struct {
	r    *http.Request
	room string
}

func (h *httpSender) ID() int64                { return 0 }
func (h *httpSender) Room() string             { return h.room }
func (h *httpSender) Username() string         { return "" }
func (h *httpSender) SetUsername(string)       {}
func (h *httpSender) Query(name string) string { return h.r.URL.Query().Get(name) }
func (h *httpSender) RemoteAddr() string       { return h.r.RemoteAddr }
func (h *httpSender) Send([]byte) error        { return nil }
func (h *httpSender) Value(any) any            { return nil }
func (h *httpSender) SetValue(any, any)        {}

func (h *httpSender) Cookie(name string) (string, bool) {
	c, err := h.r.Cookie(name)
	if err != nil {
		return "", false
	}
	return c.Value, true
}

var _ pipeline.Sender = (*httpSender)(nil)
