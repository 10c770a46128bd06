package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// chromiumPath is Debian's chromium. The browser tests skip without it on a
// developer's machine and fail without it in CI.
const chromiumPath = "/usr/bin/chromium"

// browserWait bounds every wait on the page.
const browserWait = 20 * time.Second

// startBrowser starts a headless chromium that the test closes when it ends.
// The returned context has a running browser; open tabs with newTab.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("chromium not installed (%s); install with apt-get install chromium; in CI this test fails instead", chromiumPath)
		}
		t.Fatalf("chromium not installed (%s) and CI is set: install it with apt-get install chromium", chromiumPath)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // we run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 700),
	)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// Close the browser gracefully, then wait for its process.
		_ = chromedp.Cancel(browserCtx)
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return browserCtx
}

// tab is one browser tab in a browser context of its own (its own cookies).
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu      sync.Mutex
	console []string // console errors, exceptions and error log entries
}

func newTab(t *testing.T, browserCtx context.Context, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	tb := &tab{t: t, name: name, ctx: ctx}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1000, 700)); err != nil {
		t.Fatalf("%s: opening a tab: %v", name, err)
	}
	if err := chromedp.Listen(ctx, tb.record); err != nil {
		t.Fatalf("%s: listening: %v", name, err)
	}
	return tb
}

// record keeps what the page reports as an error. It runs in chromedp's event
// loop, so it only appends under a lock.
func (tb *tab) record(ev any) {
	var line string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeWarning {
			return
		}
		var parts []string
		for _, a := range ev.Args {
			if a.Value != nil {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " "))
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line = "exception: " + d.Text
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level != log.EntryLevelError && ev.Entry.Level != log.EntryLevelWarning {
			return
		}
		line = fmt.Sprintf("log %s/%s: %s (%s)", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
	default:
		return
	}
	tb.mu.Lock()
	tb.console = append(tb.console, line)
	tb.mu.Unlock()
}

func (tb *tab) consoleErrors() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.console...)
}

// do runs steps within browserWait.
func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %s: %v (console: %q)", tb.name, what, err, tb.consoleErrors())
	}
}

// eval evaluates a JavaScript expression and decodes its value into T.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("%s: evaluating %s: %v", tb.name, expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate until it is truthy.
func (tb *tab) waitFor(what, predicate string) {
	tb.t.Helper()
	tb.do("waiting for "+what, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(browserWait)))
}

const connectedJS = `document.getElementById("status").classList.contains("online")`

// open loads the room's page and waits until its WebSocket is connected.
func (tb *tab) open(url string) {
	tb.t.Helper()
	tb.do("opening "+url, chromedp.Navigate(url))
	tb.waitFor("the connection", connectedJS)
}

// setName types a name into the name field (Enter stores the cookie) and
// reloads, so that the name is the one the WebSocket joins with.
func (tb *tab) setName(name string) {
	tb.t.Helper()
	tb.do("setting the name",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("name").value = ""`),
		chromedp.SendKeys(chromedp.ID("name"), name+kb.Enter),
	)
	tb.waitFor("the username cookie", `document.cookie.indexOf("username=") >= 0`)
	tb.do("reloading", chromedp.Reload())
	tb.waitFor("the connection after reload", connectedJS)
	if got := eval[string](tb, `document.getElementById("name").value`); got != name {
		tb.t.Fatalf("%s: name field after reload = %q, want %q (cookie %q)", tb.name, got, name,
			eval[string](tb, `document.cookie`))
	}
}

// messageJS finds the message in #inbox whose body's text is exactly body.
func messageJS(body string) string {
	return fmt.Sprintf(`Array.from(document.querySelectorAll("#inbox .message")).find(function (m) {
		var b = m.querySelector(".body"); return b && b.textContent === %q; })`, body)
}

func TestBrowserChat(t *testing.T) {
	s := startServer(t, func(cfg *config.Config) { cfg.Server.Addr = "127.0.0.1:0" })
	browser := startBrowser(t)
	pageURL := s.URL + "/?room=browser"

	alice := newTab(t, browser, "tab A")
	bob := newTab(t, browser, "tab B")
	alice.open(pageURL)
	alice.setName("Alice")
	bob.open(pageURL)
	bob.setName("Bob")

	// Members: each sees the other, by name.
	bob.waitFor("Alice in B's member list", `Array.from(document.querySelectorAll("#members li")).some(function (li) { return li.textContent === "Alice"; })`)
	alice.waitFor("Bob in A's member list", `Array.from(document.querySelectorAll("#members li")).some(function (li) { return li.textContent === "Bob"; })`)
	alice.waitFor(`"Bob joined" in A's messages`, `Array.from(document.querySelectorAll("#inbox .notice")).some(function (n) { return n.textContent === "Bob joined"; })`)

	// A message typed in A (Enter sends) appears in B, from Alice.
	const hello = "Hello from Alice"
	alice.do("typing a message", chromedp.SendKeys(chromedp.ID("message"), hello+kb.Enter))
	bob.waitFor("Alice's message in B", messageJS(hello))
	if got := eval[string](bob, messageJS(hello)+`.querySelector(".user").textContent`); got != "Alice" {
		t.Fatalf("B shows the message from %q, want Alice", got)
	}
	if got := eval[string](alice, `document.getElementById("message").value`); got != "" {
		t.Fatalf("A's input after sending = %q, want it cleared", got)
	}

	// Markup in a body is text, never markup (send with the button this time).
	const xss = `<script>window.__xss=1</script><b>bold</b>`
	alice.do("sending markup",
		chromedp.SetValue(chromedp.ID("message"), xss),
		chromedp.Click(chromedp.ID("send")),
	)
	bob.waitFor("the markup message in B", messageJS(xss))
	type xssReport struct {
		Text     string `json:"text"`
		Elements int    `json:"elements"`
		Bold     int    `json:"bold"`
		XSS      bool   `json:"xss"`
	}
	rep := eval[xssReport](bob, `(function () {
		var m = `+messageJS(xss)+`;
		var body = m.querySelector(".body");
		return {text: m.textContent, elements: body.children.length,
			bold: body.querySelectorAll("b").length, xss: typeof window.__xss !== "undefined"};
	})()`)
	if !strings.Contains(rep.Text, "<script>") || rep.Elements != 0 || rep.Bold != 0 || rep.XSS {
		t.Fatalf("markup body was not shown as text: %+v", rep)
	}

	// B answers, so the screenshot shows both sides.
	const reply = "Hi Alice! The <b>tags</b> above stay text."
	bob.do("replying", chromedp.SendKeys(chromedp.ID("message"), reply+kb.Enter))
	alice.waitFor("Bob's reply in A", messageJS(reply))
	bob.waitFor("Bob's reply in B", messageJS(reply))

	shot := bob.screenshot()
	if path := os.Getenv("CHATSERVER_SCREENSHOT"); path != "" {
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot of tab B written to %s", path)
	}

	// History is rendered by the server: in the HTML of a plain GET …
	resp, err := http.Get(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	html, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{hello, "&lt;script&gt;window.__xss=1&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;", `class="message"`} {
		if !strings.Contains(string(html), want) {
			t.Errorf("GET %s: page lacks %q", pageURL, want)
		}
	}
	if strings.Contains(string(html), "<script>window.__xss") {
		t.Errorf("GET %s: the markup body reached the page as markup", pageURL)
	}

	// … and in B reloaded with JavaScript off, so no WebSocket runs at all.
	bob.do("reloading with scripts off",
		scriptsDisabled(true),
		chromedp.Reload(),
	)
	n := eval[int](bob, `document.querySelectorAll("#inbox .message").length`)
	if n != 3 {
		t.Errorf("B reloaded without scripts shows %d messages, want 3", n)
	}
	if got := eval[string](bob, `document.getElementById("status-text").textContent`); got != "connecting…" {
		t.Errorf("B without scripts: status %q; the page should not have connected", got)
	}
	bob.do("reloading with scripts on", scriptsDisabled(false), chromedp.Reload())
	bob.waitFor("the connection after reload", connectedJS)
	// The history frame kept the server-rendered list: each message once.
	if n := eval[int](bob, `document.querySelectorAll("#inbox .message").length`); n != 3 {
		t.Errorf("B after reload shows %d messages, want 3 (duplicates?)", n)
	}
	bob.waitFor("Alice still in B's member list", `Array.from(document.querySelectorAll("#members li")).some(function (li) { return li.textContent === "Alice"; })`)

	for _, tb := range []*tab{alice, bob} {
		if v := eval[[]string](tb, `window.__cspViolations`); len(v) != 0 {
			t.Errorf("%s: CSP violations: %q", tb.name, v)
		}
		if errs := tb.consoleErrors(); len(errs) != 0 {
			t.Errorf("%s: console errors: %q", tb.name, errs)
		}
	}
}

// TestBrowserReconnect cuts B's connection (a TCP proxy in front of the
// server drops every connection): the page must reconnect with ?since= and
// show what it missed, once.
func TestBrowserReconnect(t *testing.T) {
	s := startServer(t, nil)
	p := testutil.NewCutProxy(t, strings.TrimPrefix(s.URL, "http://"))
	browser := startBrowser(t)

	a := newTab(t, browser, "tab A")
	b := newTab(t, browser, "tab B")
	a.open(s.URL + "/?room=reconnect")
	b.open("http://" + p.Addr() + "/?room=reconnect")
	a.do("sending", chromedp.SendKeys(chromedp.ID("message"), "before"+kb.Enter))
	b.waitFor("the first message in B", messageJS("before"))

	p.Cut()
	b.waitFor("B noticing the cut", `!document.getElementById("status").classList.contains("online")`)
	a.do("sending while B is away", chromedp.SendKeys(chromedp.ID("message"), "while away"+kb.Enter))
	a.waitFor("A's own message", messageJS("while away"))
	p.Resume()
	b.waitFor("the missed message in B", messageJS("while away"))
	b.waitFor("B connected again", connectedJS)
	if n := eval[int](b, `document.querySelectorAll("#inbox .message").length`); n != 2 {
		t.Errorf("B after reconnecting shows %d messages, want 2", n)
	}
	if v := eval[[]string](b, `window.__cspViolations`); len(v) != 0 {
		t.Errorf("CSP violations: %q", v)
	}
}

// ssrObserverJS runs before the page's scripts (on every navigation of the
// tab): it marks the messages the server rendered into the page and counts
// messages removed from #inbox afterwards.
const ssrObserverJS = `window.__removedMessages = 0;
document.addEventListener("DOMContentLoaded", function () {
	var inbox = document.getElementById("inbox");
	if (!inbox) return;
	inbox.querySelectorAll(".message").forEach(function (m) { m.__ssr = true; });
	new MutationObserver(function (records) {
		records.forEach(function (r) {
			r.removedNodes.forEach(function (n) {
				if (n.classList && n.classList.contains("message")) window.__removedMessages++;
			});
		});
	}).observe(inbox, {childList: true});
});`

// TestBrowserFirstPaintAndPlainMessages checks what the page does with the
// server's first paint and with envelopes that carry no html:
//   - the first history frame keeps the messages the server rendered into
//     the page rather than replacing them with the envelopes' html;
//   - a message whose body changed after render_html (filter placed after it)
//     goes out without html, and the page builds it from its fields exactly
//     as templates/message.html renders it, markup shown as text — live, and
//     from the history frame of a reconnect;
//   - a system reply (client_id 0, never stored) does not become the ?since=
//     of a reconnect, so no false "messages may be missing" notice shows.
func TestBrowserFirstPaintAndPlainMessages(t *testing.T) {
	s := startServer(t, func(cfg *config.Config) {
		cfg.Pipelines[pipeline.Message] = []pipeline.Step{
			{Use: "username", With: map[string]any{"allow_rename": true}},
			{Use: "validate"},
			{Use: "render_html"},
			{Use: "filter", With: map[string]any{"words": []string{"darn"}}}, // misplaced on purpose
			{Use: "commands"},
			{Use: "history"},
			{Use: "broadcast"},
		}
	})
	p := testutil.NewCutProxy(t, strings.TrimPrefix(s.URL, "http://"))
	browser := startBrowser(t)
	a := newTab(t, browser, "tab A")
	b := newTab(t, browser, "tab B")
	b.do("observing the first paint", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: ssrObserverJS})
		return err
	}))
	pageURL := s.URL + "/?room=plain"
	a.open(pageURL)
	b.open("http://" + p.Addr() + "/?room=plain")

	// A masked message has no html: B builds it from the fields.
	const masked = `**** <b>it</b> & "so" <img src=x onerror=window.__xss=1>`
	a.do("sending a message the filter changes", chromedp.SendKeys(chromedp.ID("message"), `darn <b>it</b> & "so" <img src=x onerror=window.__xss=1>`+kb.Enter))
	b.waitFor("the masked message in B", messageJS(masked))
	type built struct {
		ID, User, Datetime, HTML string
		Children, BodyKids       int
		XSS                      bool
	}
	const builtJS = `(function () {
		var m = ` + "%s" + `;
		var t = m.querySelector(".meta > time");
		return {ID: m.id, User: m.querySelector(".meta > b.user").textContent, Datetime: t ? t.getAttribute("datetime") : "",
			HTML: m.outerHTML, Children: m.children.length, BodyKids: m.querySelector(".body").children.length,
			XSS: typeof window.__xss !== "undefined"};
	})()`
	live := eval[built](b, fmt.Sprintf(builtJS, messageJS(masked)))
	if !strings.HasPrefix(live.ID, "m") || len(live.ID) < 2 || live.User == "" || live.Datetime == "" ||
		live.Children != 2 || live.BodyKids != 0 || live.XSS {
		t.Fatalf("B built the html-less message wrongly: %+v", live)
	}

	// B reloads: the page's first paint is the server's rendering, kept as it
	// is by the history frame, and identical to what B built itself.
	b.do("reloading", chromedp.Reload())
	b.waitFor("the connection after reload", connectedJS)
	b.waitFor("the masked message after reload", messageJS(masked))
	type paint struct {
		Messages, Removed, SSR int
	}
	fp := eval[paint](b, `({Messages: document.querySelectorAll("#inbox .message").length, Removed: window.__removedMessages,
		SSR: Array.from(document.querySelectorAll("#inbox .message")).filter(function (m) { return m.__ssr; }).length})`)
	if fp.Messages != 1 || fp.Removed != 0 || fp.SSR != 1 {
		t.Errorf("after the first history frame: %+v; want the 1 server-rendered message kept, none removed", fp)
	}
	if ssr := eval[built](b, fmt.Sprintf(builtJS, messageJS(masked))); ssr.HTML != live.HTML {
		t.Errorf("built by the page:\n%s\nrendered by the server:\n%s", live.HTML, ssr.HTML)
	}

	// A system reply in B, then a cut: the reconnect resumes after the last
	// stored message, finds it, and adds what B missed, html-less too.
	b.do("asking /who", chromedp.SendKeys(chromedp.ID("message"), "/who"+kb.Enter))
	b.waitFor("the system reply", `Array.from(document.querySelectorAll("#inbox .message .user")).some(function (u) { return u.textContent === "system"; })`)
	p.Cut()
	b.waitFor("B noticing the cut", `!document.getElementById("status").classList.contains("online")`)
	const missed = "darn, missed"
	a.do("sending while B is away", chromedp.SendKeys(chromedp.ID("message"), missed+kb.Enter))
	a.waitFor("A's own message", messageJS("****, missed"))
	p.Resume()
	b.waitFor("the missed message in B", messageJS("****, missed"))
	b.waitFor("B connected again", connectedJS)
	if n := eval[int](b, `document.querySelectorAll("#inbox .notice.gap").length`); n != 0 {
		t.Errorf("B shows %d \"messages may be missing\" notices after resuming; want none", n)
	}
	if n := eval[int](b, `document.querySelectorAll("#inbox .message").length`); n != 3 {
		t.Errorf("B shows %d messages, want 3 (masked, system reply, missed)", n)
	}
	for _, tb := range []*tab{a, b} {
		if v := eval[[]string](tb, `window.__cspViolations`); len(v) != 0 {
			t.Errorf("%s: CSP violations: %q", tb.name, v)
		}
	}
}

// scriptsDisabled switches JavaScript off or on for the tab.
func scriptsDisabled(off bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: off})
		return err
	})
}

func (tb *tab) screenshot() []byte {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("%s: screenshot: %v", tb.name, err)
	}
	return png
}
