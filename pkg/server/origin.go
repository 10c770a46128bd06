package server

import (
	"net/http"
	"net/url"
	"strings"
)

// originChecker implements server.allowed_origins: empty means same origin
// only (the browser's Origin must match the Host it connected to), "*" any
// origin, else the Origin must equal one of the entries ("https://chat.example")
// or its host must ("chat.example"). Requests without an Origin header come
// from non-browser clients, which cross-site hijacking cannot use; they pass.
func originChecker(allowed []string) func(r *http.Request) bool {
	any := false
	for _, a := range allowed {
		if a == "*" {
			any = true
		}
	}
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" || any {
			return true
		}
		u, err := url.Parse(origin)
		if err != nil {
			return false
		}
		if len(allowed) == 0 {
			return strings.EqualFold(u.Host, r.Host)
		}
		for _, a := range allowed {
			if strings.EqualFold(a, origin) || strings.EqualFold(a, u.Host) {
				return true
			}
		}
		return false
	}
}
