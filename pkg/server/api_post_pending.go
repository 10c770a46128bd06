//go:build !apipost

package server

import (
	"net/http"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// postMessage waits for Server.Post (the protocol core, on main): until it
// is merged, api_post.go is built only with -tags apipost and the route
// answers 501.
func (s *Server) postMessage(w http.ResponseWriter, _ *http.Request) {
	writeAPIError(w, http.StatusNotImplemented, pipeline.Reject(pipeline.CodeInternal, "posting needs the protocol core (Server.Post)"))
}
