package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/plugins"
)

// evalAwait evaluates a JavaScript expression whose value is a promise and
// decodes what it resolves to.
func evalAwait[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("%s: evaluating %s: %v (console: %q)", tb.name, expr, err, tb.consoleErrors())
	}
	return v
}

// TestBrowserJSClient loads the JavaScript client as the page does (an ES
// module from /static/chatserver.js, the very bytes of clients/js) into
// Chromium and does a send/ack round trip with it: the ack names the
// envelope the module's listener got, and the page's own client shows it.
func TestBrowserJSClient(t *testing.T) {
	s := startServer(t, nil)
	want, err := os.ReadFile("../../clients/js/chatserver.js")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.URL + "/static/chatserver.js")
	if err != nil {
		t.Fatal(err)
	}
	served, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || !bytes.Equal(served, want) {
		t.Fatalf("GET /static/chatserver.js: %d bytes, err %v; want clients/js/chatserver.js (%d bytes)", len(served), err, len(want))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("Content-Type %q: browsers run modules only as JavaScript", ct)
	}

	browser := startBrowser(t)
	tb := newTab(t, browser, "module tab")
	tb.open(s.URL + "/?room=module")
	type roundTrip struct {
		State    string `json:"state"`
		AckRef   string `json:"ackRef"`
		AckID    string `json:"ackId"`
		GotID    string `json:"gotId"`
		GotBody  string `json:"gotBody"`
		ClientID int64  `json:"clientId"`
		GotCID   int64  `json:"gotCid"`
		ErrCode  string `json:"errCode"`
		ErrIsCE  bool   `json:"errIsChatError"`
	}
	rt := evalAwait[roundTrip](tb, `(async function () {
		const m = await import("/static/chatserver.js");
		const c = m.connect("/", {room: "module"});
		const got = new Promise((resolve) => c.on("message", (env) => { if (env.body === "from the module") resolve(env); }));
		await new Promise((resolve) => c.on("connect", resolve));
		const ack = await c.send({body: "from the module", username: "mod"});
		const env = await got;
		let errCode = "", errIsChatError = false;
		try { await c.send("   "); } catch (e) { errCode = e.code; errIsChatError = e instanceof m.ChatError; }
		const r = {state: c.state, ackRef: ack.ref, ackId: ack.id, gotId: env.id, gotBody: env.body,
			clientId: c.clientId, gotCid: env.client_id, errCode, errIsChatError};
		c.close();
		return r;
	})()`)
	if rt.State != "connected" || rt.AckRef == "" || rt.AckID == "" || rt.AckID != rt.GotID || rt.GotBody != "from the module" {
		t.Fatalf("round trip through the module: %+v; want an ack naming the envelope received", rt)
	}
	if rt.ClientID == 0 || rt.ClientID != rt.GotCID {
		t.Errorf("client.clientId = %d, want the sent envelope's client_id %d", rt.ClientID, rt.GotCID)
	}
	if rt.ErrCode != "empty" || !rt.ErrIsCE {
		t.Errorf("a blank send rejected with %q (ChatError: %v), want a ChatError with code empty", rt.ErrCode, rt.ErrIsCE)
	}
	tb.waitFor("the page showing the module's message", messageJS("from the module"))
	if v := eval[[]string](tb, `window.__cspViolations`); len(v) != 0 {
		t.Errorf("CSP violations: %q", v)
	}
	if errs := tb.consoleErrors(); len(errs) != 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// typingObserverJS runs before the page's scripts: it records every text the
// typing indicator ever shows.
const typingObserverJS = `window.__typingShown = [];
document.addEventListener("DOMContentLoaded", function () {
	var el = document.getElementById("typing");
	if (!el) return;
	new MutationObserver(function () {
		if (el.textContent) window.__typingShown.push(el.textContent);
	}).observe(el, {childList: true, characterData: true, subtree: true});
});`

// TestBrowserTyping: Alice types and Bob's page says so; her message ends it
// at once; typing again without sending shows it again, and it expires.
// Alice never sees her own signal, but sees another member's of the same
// name. A direct message to her is shown as one.
func TestBrowserTyping(t *testing.T) {
	s := startServer(t, func(cfg *config.Config) { fastLimits(cfg) })
	browser := startBrowser(t)
	pageURL := s.URL + "/?room=typing"
	alice := newTab(t, browser, "tab A")
	bob := newTab(t, browser, "tab B")
	alice.do("observing the typing indicator", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: typingObserverJS})
		return err
	}))
	alice.open(pageURL)
	alice.setName("Alice")
	bob.open(pageURL)
	bob.setName("Bob")
	alice.waitFor("Bob in A's member list", `Array.from(document.querySelectorAll("#members li")).some(function (li) { return li.textContent === "Bob"; })`)

	const typingJS = `document.getElementById("typing").textContent`
	alice.do("typing", chromedp.SendKeys(chromedp.ID("message"), "hel"))
	bob.waitFor("Alice typing in B", typingJS+` === "Alice is typing…"`)
	alice.do("finishing and sending", chromedp.SendKeys(chromedp.ID("message"), "lo"+kb.Enter))
	bob.waitFor("the message in B", messageJS("hello"))
	if got := eval[string](bob, typingJS); got != "" {
		t.Errorf("B still shows %q after Alice's message", got)
	}
	alice.waitFor("A's own message", messageJS("hello"))

	alice.do("typing again", chromedp.SendKeys(chromedp.ID("message"), "still there"))
	bob.waitFor("Alice typing again in B", typingJS+` === "Alice is typing…"`)
	bob.waitFor("the indicator to expire", typingJS+` === ""`)

	if shown := eval[[]string](alice, `window.__typingShown`); len(shown) != 0 {
		t.Errorf("A showed its own typing: %q", shown)
	}

	// Another member who is also called Alice: her signal is hers, not
	// Alice's own (the page told its own signals apart by name before).
	other := newTab(t, browser, "tab C")
	other.open(pageURL)
	other.setName("Alice")
	other.do("typing as the other Alice", chromedp.SendKeys(chromedp.ID("message"), "me too"))
	alice.waitFor("the other Alice typing in A", typingJS+` === "Alice is typing…"`)

	// A direct message looks like one: marked, with its recipient.
	evalAwait[bool](bob, `(async function () {
		const m = await import("/static/chatserver.js");
		const c = m.connect("/", {room: "typing", username: "Bob"});
		await new Promise((resolve) => c.on("connect", resolve));
		await c.send({body: "just for you", to: "Alice"});
		c.close();
		return true;
	})()`)
	alice.waitFor("the direct message in A", messageJS("just for you"))
	if got := eval[string](alice, messageJS("just for you")+`.className + " | " + `+messageJS("just for you")+`.querySelector(".to").textContent`); got != "message direct | → Alice (private)" {
		t.Errorf("the direct message in A: %q, want it marked direct, to Alice", got)
	}
	if got := eval[string](alice, messageJS("hello")+`.className`); got != "message mine" {
		t.Errorf("a public message's class: %q", got)
	}
	for _, tb := range []*tab{alice, bob, other} {
		if v := eval[[]string](tb, `window.__cspViolations`); len(v) != 0 {
			t.Errorf("%s: CSP violations: %q", tb.name, v)
		}
		if errs := tb.consoleErrors(); len(errs) != 0 {
			t.Errorf("%s: console errors: %q", tb.name, errs)
		}
	}
}

// TestBrowserSignedPage: with signed identities the server renders no
// messages into the page (they are not shown before the join is accepted);
// the page shows the history frame's messages itself, once each, and its
// member's own messages live.
func TestBrowserSignedPage(t *testing.T) {
	secret := strings.Repeat("s", 32)
	id := pipeline.Step{Use: "username", With: map[string]any{"mode": "signed", "secret": secret, "cookie": "identity"}}
	s := startServer(t, func(cfg *config.Config) {
		cfg.Pipelines[pipeline.Join] = []pipeline.Step{id, {Use: "broadcast"}}
		msg := cfg.Pipelines[pipeline.Message]
		for i, st := range msg {
			if st.Use == "username" {
				msg[i] = id
			}
		}
	})
	h := http.Header{}
	h.Set("Cookie", "identity="+plugins.SignUsername([]byte(secret), "alice"))
	alice := s.dial(t, "room=signed", h)
	alice.expect("history")
	for _, body := range []string{"kept one", "kept <b>two</b>"} {
		alice.send(map[string]string{"body": body, "ref": body})
		alice.next("ack")
	}

	resp, err := http.Get(s.URL + "/?room=signed")
	if err != nil {
		t.Fatal(err)
	}
	html, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || strings.Contains(string(html), "kept one") {
		t.Fatalf("GET /: the page holds messages before any join (err %v)", err)
	}

	browser := startBrowser(t)
	bob := newTab(t, browser, "bob")
	bob.do("signing in", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.SetCookie, network.SetCookieParams{
			Name: "identity", Value: plugins.SignUsername([]byte(secret), "bob"), URL: s.URL})
		return err
	}))
	bob.open(s.URL + "/?room=signed")
	bob.waitFor("the history from the socket", messageJS("kept <b>two</b>"))
	if n := eval[int](bob, `document.querySelectorAll("#inbox .message").length`); n != 2 {
		t.Errorf("bob's page shows %d messages, want the 2 of the history", n)
	}
	if got := eval[string](bob, messageJS("kept one")+`.querySelector(".user").textContent`); got != "alice" {
		t.Errorf("the first message is from %q, want alice", got)
	}
	bob.do("sending", chromedp.SendKeys(chromedp.ID("message"), "hi alice"+kb.Enter))
	bob.waitFor("bob's own message", messageJS("hi alice"))
	if got := eval[string](bob, messageJS("hi alice")+`.querySelector(".user").textContent`); got != "bob" {
		t.Errorf("bob's message is from %q, want bob (the signed name)", got)
	}
	if errs := bob.consoleErrors(); len(errs) != 0 {
		t.Errorf("console errors: %q", errs)
	}
}
