package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// apiKeys checks the bearer keys of the server API. It keeps only the
// SHA-256 of each key: comparing digests, which all have one length, in
// constant time against every key (no early exit) tells a caller nothing of
// a key's length, of how much of it matched, or of which key matched.
type apiKeys struct {
	digests [][sha256.Size]byte
}

func newAPIKeys(keys []string) *apiKeys {
	k := &apiKeys{digests: make([][sha256.Size]byte, len(keys))}
	for i, key := range keys {
		k.digests[i] = sha256.Sum256([]byte(key))
	}
	return k
}

// enabled reports whether any key is configured (the API's write routes
// exist only then).
func (k *apiKeys) enabled() bool { return len(k.digests) > 0 }

// valid reports whether key is one of the keys.
func (k *apiKeys) valid(key string) bool {
	d := sha256.Sum256([]byte(key))
	match := 0
	for i := range k.digests {
		match |= subtle.ConstantTimeCompare(d[:], k.digests[i][:])
	}
	return match == 1
}

// bearer returns the token of an `Authorization: Bearer TOKEN` header.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// requireKey lets through requests carrying a valid key and answers the
// others 401 {"code":"unauthorized"}, counting them by reason. With no key
// configured the routes it guards answer 404, as if they did not exist:
// the API is off.
func (s *Server) requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.apiKeys.enabled() {
			writeAPIError(w, http.StatusNotFound, pipeline.Reject(codeNotFound, "the server API is off: no api.keys configured"))
			return
		}
		if !s.authorized(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireKeyForReads guards the read routes: open unless api.protect_reads
// (which config validation allows only with a key), or unless the join
// pipeline admits proven members only (see api_guard.go).
func (s *Server) requireKeyForReads(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.API.ProtectReads && !s.authorized(w, r) {
			return
		}
		if p := s.pipelines.Load(); !s.cfg.API.ProtectReads && p.Guarded() && !s.guardedRead(r, p) {
			s.refuseGuardedRead(w) // api_guard.go
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorized checks r's key; when it is missing or wrong it answers 401 and
// returns false.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	key, ok := bearer(r)
	reason, why := "missing", "send Authorization: Bearer KEY"
	if ok {
		if s.apiKeys.valid(key) {
			return true
		}
		reason, why = "invalid", "the key is not valid"
	}
	s.metrics.APIUnauthorized.WithLabelValues(reason).Inc()
	w.Header().Set("WWW-Authenticate", `Bearer realm="chatserver"`)
	writeAPIError(w, http.StatusUnauthorized, pipeline.Reject(codeUnauthorized, "%s", why))
	return false
}
