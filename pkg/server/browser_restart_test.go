package server_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/server"
)

// TestBrowserRestartWhileSending: in Chromium, the JavaScript client sends
// 40 messages while the server restarts (Shutdown, then a new server on the
// same address; history and refs in Redis). Every send is acked with an id
// of its own, and the page — a second client in the same tab — and the
// history hold every message once.
func TestBrowserRestartWhileSending(t *testing.T) {
	prefix := redistest.Prefix(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	start := func(ln net.Listener) (stop func()) {
		srv := newServer(t, func(cfg *config.Config) {
			useRedis(redistest.SharedURL, prefix)(cfg)
			cfg.Broker.Type = "redis"
		}, server.Options{})
		return testutil.Serve(t, srv, ln)
	}
	stop := start(ln)
	defer func() { stop() }()
	base := "http://" + addr

	browser := startBrowser(t)
	tb := newTab(t, browser, "sender")
	tb.open(base + "/?room=brestart")
	const n = 40
	eval[bool](tb, fmt.Sprintf(`window.__restart = {sent: 0, acks: null, err: null};
	(async function () {
		const m = await import("/static/chatserver.js");
		const c = m.connect("/", {room: "brestart", username: "rita", minReconnectDelay: 50, maxReconnectDelay: 300});
		await new Promise((resolve) => c.on("connect", resolve));
		const sends = [];
		for (let i = 0; i < %d; i++) {
			sends.push(c.send("b" + String(i).padStart(2, "0")));
			window.__restart.sent = i + 1;
			await new Promise((resolve) => setTimeout(resolve, 10));
		}
		try {
			const acks = await Promise.all(sends);
			await c.send("barrier"); // a duplicate would come before it
			window.__restart.acks = acks.map((a) => a.id);
		} catch (e) {
			window.__restart.err = String(e && e.code || e);
		}
		c.close();
	})();
	true`, n))
	tb.waitFor("a third of the sends", fmt.Sprintf(`window.__restart.sent >= %d`, n/3))
	stop()
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", addr, err)
	}
	stop = start(ln)

	tb.waitFor("every ack", `window.__restart.acks !== null || window.__restart.err !== null`)
	if e := eval[any](tb, `window.__restart.err`); e != nil {
		t.Fatalf("a send failed: %v", e)
	}
	ids := eval[[]string](tb, `window.__restart.acks`)
	if len(ids) != n || len(slices.Compact(slices.Sorted(slices.Values(ids)))) != n {
		t.Fatalf("%d acks, %d distinct ids; want %d", len(ids), len(slices.Compact(slices.Sorted(slices.Values(ids)))), n)
	}
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("b%02d", i)
	}
	tb.waitFor("the barrier on the page", messageJS("barrier"))
	shown := eval[[]string](tb, `Array.from(document.querySelectorAll("#inbox .message .body"), (b) => b.textContent).filter((s) => /^b\d\d$/.test(s))`)
	if got := slices.Sorted(slices.Values(shown)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the page shows %d messages %v; want each of %d once", len(shown), shown, n)
	}

	resp, err := http.Get(base + "/api/rooms/brestart/history?limit=100")
	if err != nil {
		t.Fatal(err)
	}
	var hist []struct {
		Body string `json:"body"`
	}
	err = json.NewDecoder(resp.Body).Decode(&hist)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, h := range hist {
		if h.Body != "barrier" {
			kept = append(kept, h.Body)
		}
	}
	if fmt.Sprint(slices.Sorted(slices.Values(kept))) != fmt.Sprint(want) {
		t.Errorf("history holds %v; want each of %d once", kept, n)
	}
	if errs := tb.consoleErrors(); len(errs) != 0 {
		t.Logf("console (a restart logs failed connections): %q", errs)
	}
}
