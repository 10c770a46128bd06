package plugins

import (
	"context"
	"html/template"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// FuzzRenderHTMLFast holds render_html's fast path to html/template: the
// plugin with fast on and with fast off (html/template itself) must render
// byte-equal html for any envelope, with the default message.html and with a
// template that puts fields in single- and double-quoted attributes.
func FuzzRenderHTMLFast(f *testing.F) {
	f.Add("0192f0c4-7e17-46eb-9f1e-11f5707ea0ec", "alice", "hello", "2026-11-25 21:04:05", int64(7), int64(1764104645123))
	f.Add(`"><script>`, "\x00张三\u2028 \t\n", "<script>alert('x' + \"y\")</script> & \xff\xfe", "&amp;", int64(-1), int64(1<<62))
	f.Add("", "", "", "", int64(0), int64(0))
	f.Add("'", "&#39;", "\ufffd\u00a0<!-- -->", "]]>", int64(-9223372036854775808), int64(9223372036854775807))
	sets := map[string]*template.Template{
		"message.html": template.Must(template.ParseFiles("../../templates/message.html")),
		"attributes": template.Must(template.New("message.html").Parse(
			`<p class="{{.Username}}" title='{{.Body}}' data-ts="{{.TS}}">{{.Room}}: {{.Body}} ({{.ClientID}}, {{.Type}})</p>`)),
	}
	type pair struct{ fast, slow *RenderHTML }
	var pairs []pair
	for name, set := range sets {
		fast, err := NewRenderHTML(RenderHTMLOptions{Template: "message.html", Fast: true}, set)
		if err != nil {
			f.Fatal(err)
		}
		slow, err := NewRenderHTML(RenderHTMLOptions{Template: "message.html", Fast: false}, set)
		if err != nil {
			f.Fatal(err)
		}
		if fast.fast == nil || slow.fast != nil {
			f.Fatalf("%s: fast path %v with fast on, %v with it off", name, fast.fast != nil, slow.fast != nil)
		}
		pairs = append(pairs, pair{fast, slow})
	}
	render := func(r *RenderHTML, e pipeline.Envelope) (string, error) {
		ev := &pipeline.Event{Kind: pipeline.Message, Envelope: e}
		err := r.Wrap(pipeline.HandlerFunc(func(context.Context, *pipeline.Event) error { return nil })).Handle(context.Background(), ev)
		return ev.Envelope.HTML, err
	}
	f.Fuzz(func(t *testing.T, id, username, body, datetime string, clientID, ts int64) {
		e := pipeline.Envelope{ID: id, Type: pipeline.TypeMessage, Room: username + body, ClientID: clientID,
			Username: username, Body: body, Datetime: datetime, TS: ts}
		for _, p := range pairs {
			got, err := render(p.fast, e)
			if err != nil {
				t.Fatal(err)
			}
			want, err := render(p.slow, e)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("fast path\n got %q\nwant %q (html/template)", got, want)
			}
		}
	})
}
