package server_test

import (
	"encoding/json"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// A message deleted through the server API leaves the page live, and the
// others stay.
func TestBrowserDelete(t *testing.T) {
	s := startServer(t, withAPI())
	browser := startBrowser(t)
	a := newTab(t, browser, "tab A")
	a.open(s.URL + "/?room=moderated")
	for _, body := range []string{"regrettable", "fine"} {
		a.do("sending "+body, chromedp.SendKeys(chromedp.ID("message"), body+kb.Enter))
		a.waitFor(body, messageJS(body))
	}
	var hist []frame
	if err := json.Unmarshal(apiCall(t, "GET", s.URL+"/api/rooms/moderated/history", "", "", "").body, &hist); err != nil || len(hist) != 2 {
		t.Fatalf("history: %v %v", hist, err)
	}
	if r := apiCall(t, "DELETE", s.URL+"/api/rooms/moderated/messages/"+hist[0].ID, apiKey, "", ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	a.waitFor("the deleted message to leave the page", "!"+messageJS("regrettable"))
	if !eval[bool](a, "!!"+messageJS("fine")) {
		t.Fatal("the other message left too")
	}
}
