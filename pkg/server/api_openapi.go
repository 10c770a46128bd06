package server

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3 document of the server API. A test holds it to
// the routes: every operation it lists answers, with each status it lists.
//
//go:embed openapi.json
var openAPI []byte

// serveOpenAPI serves openapi.json, so backends can generate clients.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
