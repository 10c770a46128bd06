package server

import "net/http"

// securityHeaders sets the headers every response carries: browsers must not
// guess content types (a JSON body sniffed as HTML would run user strings as
// markup), and other sites learn nothing from our URLs. The page adds its
// Content-Security-Policy in servePage.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}
