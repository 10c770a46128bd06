package server_test

import (
	"encoding/json"
	"html"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// hostile are strings an attacker sends as names and bodies. Each must reach
// browsers as text: escaped in `html`, in the page, and as JSON elsewhere.
var hostile = []string{
	`<script>alert(1)</script>`,
	`<img src=x onerror=alert(1)>`,
	`"><svg onload=alert(1)>`,
	`' onmouseover='alert(1)`,
	`</div><script>alert(1)</script>`,
	`</span></b><iframe onload=x>`,
	`{{.Room}}<!--`,
	`<a href="javascript:x">y</a>`,
	`&lt;script&gt;`, // already escaped: must be escaped again, not decoded
}

// ourTags matches the elements templates/message.html itself produces.
var ourTags = regexp.MustCompile(`</?(div|span|b|time)( [a-z-]+="[^"<>]*")*>`)

// assertText checks that fragment (HTML made by message.html) holds no markup
// but ours, and shows want as text.
func assertText(t *testing.T, where, fragment string, want ...string) {
	t.Helper()
	rest := ourTags.ReplaceAllString(fragment, "\x00")
	if strings.ContainsAny(rest, "<>") {
		t.Errorf("%s: markup from user data in %q", where, fragment)
	}
	text := html.UnescapeString(strings.ReplaceAll(rest, "\x00", ""))
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s: text %q does not show %q", where, text, w)
		}
	}
}

func TestHostileNamesAndBodiesAreEscaped(t *testing.T) {
	s := startServer(t, fastLimits)
	watcher := joined(t, s, "room=xss")
	for i, evil := range hostile {
		// One name from the cookie, one from a rename: both paths.
		c := s.dialNamed(t, "room=xss", b64(evil))
		c.expect("history")
		if on := c.expect("online"); on.Username != evil {
			t.Fatalf("cookie name %q became %q", evil, on.Username)
		}
		watcher.next("online")
		c.send(map[string]any{"body": evil})
		m := watcher.next("message")
		if m.Body != evil || m.Username != evil {
			t.Fatalf("message %d: %s", i, m.raw)
		}
		assertText(t, "html field (cookie name)", m.HTML, evil)

		c.send(map[string]any{"body": "renamed: " + evil, "username": evil + "2"})
		m = watcher.next("message")
		assertText(t, "html field (rename)", m.HTML, evil+"2", "renamed: "+evil)
	}

	// The page renders history from the stored fields, escaped again.
	resp, err := http.Get(s.URL + "/?room=xss")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	inbox := regexp.MustCompile(`(?s)<div id="inbox"[^>]*>(.*?)</div>\s*<div class="composer">`).FindSubmatch(page)
	if inbox == nil {
		t.Fatalf("no inbox in page %.300s", page)
	}
	if n := strings.Count(string(inbox[1]), `<div class="message"`); n != 2*len(hostile) {
		t.Fatalf("page shows %d messages, want %d", n, 2*len(hostile))
	}
	assertText(t, "page history", string(inbox[1]), hostile...)

	// The member list is JSON (chat.js shows it with textContent).
	resp, err = http.Get(s.URL + "/api/rooms/xss/members")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("members Content-Type %q", ct)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("members API served without nosniff")
	}
	raw, _ := io.ReadAll(resp.Body)
	if strings.ContainsAny(string(raw), "<>") {
		t.Errorf("members JSON carries raw < or >: %s", raw)
	}
	var members []struct{ Username string }
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range members {
		names[m.Username] = true
	}
	for _, evil := range hostile {
		if !names[evil+"2"] {
			t.Errorf("members %s lack %q", raw, evil+"2")
		}
	}
}

// The page forbids inline script through its CSP, and has none of its own.
func TestPageSecurityHeaders(t *testing.T) {
	s := startServer(t, nil)
	resp, err := http.Get(s.URL + "/?room=empty")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h := resp.Header
	csp := map[string]string{}
	for _, d := range strings.Split(h.Get("Content-Security-Policy"), ";") {
		if f := strings.Fields(d); len(f) > 0 {
			csp[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for dir, want := range map[string]string{
		"default-src":     "'self'",
		"script-src":      "'self'",
		"base-uri":        "'none'",
		"frame-ancestors": "'none'",
	} {
		if csp[dir] != want {
			t.Errorf("CSP %s = %q, want %q (header %q)", dir, csp[dir], want, h.Get("Content-Security-Policy"))
		}
	}
	if p := h.Get("Content-Security-Policy"); strings.Contains(p, "unsafe-inline") || strings.Contains(p, "unsafe-eval") {
		t.Errorf("CSP allows unsafe sources: %q", p)
	}
	if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", got)
	}
	if got := h.Get("Referrer-Policy"); got != "same-origin" {
		t.Errorf("Referrer-Policy = %q", got)
	}
	if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}

	// Every script is an external file of our own; no inline handlers.
	scripts := regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`).FindAllSubmatch(page, -1)
	if len(scripts) == 0 {
		t.Fatal("page loads no script")
	}
	for _, sc := range scripts {
		if !regexp.MustCompile(`\bsrc="/static/[^"]+\.js"`).Match(sc[1]) || strings.TrimSpace(string(sc[2])) != "" {
			t.Errorf("inline or foreign script: %s", sc[0])
		}
	}
	if m := regexp.MustCompile(`(?i)\son[a-z]+\s*=|javascript:`).Find(page); m != nil {
		t.Errorf("page carries inline script %q", m)
	}

	// The script is served as JavaScript, so nosniff does not block it.
	resp, err = http.Get(s.URL + "/static/chat.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("chat.js Content-Type %q", ct)
	}
}
