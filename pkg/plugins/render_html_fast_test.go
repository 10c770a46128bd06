package plugins

import (
	"html/template"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func TestFastTemplateMatchesHTMLTemplate(t *testing.T) {
	deps, _, _ := testDeps(t)
	r, err := NewRenderHTML(RenderHTMLOptions{Template: "message.html", Fast: true}, deps.Templates)
	if err != nil {
		t.Fatal(err)
	}
	if r.fast == nil {
		t.Fatal("the default message template should take the fast path")
	}
	alphabet := []rune("ab<>&\"'+\\\n\x00\u2028é张 ")
	rnd := rand.New(rand.NewPCG(3, 4))
	str := func() string {
		var b []byte
		for i := rnd.IntN(10); i > 0; i-- {
			if rnd.IntN(9) == 0 {
				b = append(b, 0xff)
				continue
			}
			b = append(b, string(alphabet[rnd.IntN(len(alphabet))])...)
		}
		return string(b)
	}
	for i := 0; i < 2000; i++ {
		e := pipeline.Envelope{ID: str(), Type: str(), Room: str(), ClientID: rnd.Int64N(1e9), Username: str(),
			Body: str(), Datetime: str(), TS: rnd.Int64()}
		var want strings.Builder
		if err := r.tmpl.Execute(&want, &e); err != nil {
			t.Fatal(err)
		}
		if got := r.fast.render(&e); got != want.String() {
			t.Fatalf("fast %q\nwant %q", got, want.String())
		}
	}
}

// Templates the fast path cannot prove equal run through html/template.
func TestFastTemplateOnlyForPlainFields(t *testing.T) {
	for _, src := range []string{
		`{{if .Body}}<p>{{.Body}}</p>{{end}}`,
		`<a href="{{.Body}}">x</a>`,
		`<script>var b = {{.Body}};</script>`,
		`<p style="color: {{.Body}}">x</p>`,
		`<p>{{.Body | printf "%q"}}</p>`,
		`<p>{{range .Body}}x{{end}}</p>`,
		`<p title={{.Body}}>x</p>`, // unquoted attribute: a stricter escaper
	} {
		set := template.Must(template.New("message.html").Parse(src))
		r, err := NewRenderHTML(RenderHTMLOptions{Template: "message.html", Fast: true}, set)
		if err != nil {
			continue // refused at load: fine too
		}
		if r.fast != nil {
			t.Errorf("%s: took the fast path", src)
		}
	}
	set := template.Must(template.New("message.html").Parse(`<p class="{{.Username}}">{{.Body}} {{.ClientID}}</p>`))
	if r, err := NewRenderHTML(RenderHTMLOptions{Template: "message.html", Fast: true}, set); err != nil || r.fast == nil {
		t.Errorf("plain fields in text and quoted attributes should take the fast path (err %v)", err)
	}
}
