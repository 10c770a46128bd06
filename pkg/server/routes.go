package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/chatserver/chatserver"
	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer, securityHeaders)
	r.Use(middleware.GetHead) // HEAD works wherever GET does (load balancers, monitors)
	r.Get("/", s.servePage)
	r.Get("/chatsocket", s.serveWS)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	r.Get("/readyz", s.serveReady)
	r.Method(http.MethodGet, "/metrics", s.metrics.Handler())
	r.Route("/api", s.apiRoutes) // api.go
	static, _ := fs.Sub(chatserver.Static, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(static)))
	return r
}

// pageData is what templates/index.html is executed with.
type pageData struct {
	// Room is the room the page joins.
	Room string
	// Messages is the room's history, oldest first; the page renders each
	// with the message.html template, as the seed did.
	Messages []pipeline.Envelope
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	if room == "" {
		room = DefaultRoom
	}
	if !ValidRoom(room) {
		http.Error(w, "invalid room name: want 1-64 characters of A-Z a-z 0-9 _ . -", http.StatusBadRequest)
		return
	}
	data := pageData{Room: room, Messages: []pipeline.Envelope{}}
	// When a join step guards the room (signed or jwt identities), the page
	// is served to anyone: it carries no messages, and its script gets the
	// history over the WebSocket once the join was accepted.
	var entries []history.Entry
	if !s.pipelines.Load().Guarded() {
		var err error
		if entries, err = s.store.Recent(r.Context(), room, 0); err != nil {
			s.log.Warn("page: history unavailable", "room", room, "err", err)
		}
	}
	for _, e := range entries {
		var env pipeline.Envelope
		if json.Unmarshal(e.Frame, &env) == nil && env.Type == pipeline.TypeMessage {
			data.Messages = append(data.Messages, env)
		}
	}
	var buf bytes.Buffer
	if err := s.templates.ExecuteTemplate(&buf, "index.html", data); err != nil {
		s.log.Error("page: rendering index.html", "err", err)
		http.Error(w, "could not render the page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}

// serveReady answers 200 when the store and broker answer, else 503 with
// what is down.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := map[string]string{"store": "ok", "broker": "ok"}
	code := http.StatusOK
	if err := s.store.Ping(ctx); err != nil {
		status["store"], code = err.Error(), http.StatusServiceUnavailable
	}
	if err := s.broker.Ping(ctx); err != nil {
		status["broker"], code = err.Error(), http.StatusServiceUnavailable
	}
	writeJSON(w, code, status)
}

// writeJSON encodes v before writing the status, so an encoding failure is
// a 500 rather than a 200 with a truncated body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
