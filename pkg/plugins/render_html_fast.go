package plugins

import (
	"bytes"
	"html/template"
	"reflect"
	"strconv"
	"strings"
	"text/template/parse"
	"unsafe"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// fastTemplate renders, without html/template's reflection, a message
// template made only of text and `{{.Field}}` actions in HTML text or quoted
// attribute values — which is what message.html is, and what most custom
// message templates are. Executing html/template costs dozens of allocations
// per message, most of it reflective calls to its escapers (BENCHMARKS.md,
// the pipeline's cost); this does the same escaping with one allocation.
//
// It is used only when it is provably the same: compileFast accepts a tree
// whose every action is a plain field of the envelope piped into one of the
// two escapers that html/template inserts for those contexts (both apply the
// same replacement table to strings), and then checks its output against
// html/template's on probing envelopes. Anything else (conditionals, ranges,
// functions, JavaScript or URL contexts) runs through html/template as before,
// and so does every template when the step's `fast` option is false.
// FuzzRenderHTMLFast holds the two byte-equal.
type fastTemplate struct {
	parts []fastPart
	text  int // bytes of static text
}

// fastPart is static text followed by a field (field < 0: none).
type fastPart struct {
	text  string
	field []int // index path into pipeline.Envelope
	isInt bool
}

// compileFast returns the fast form of t, which must have been executed once
// (so that html/template has escaped its tree), or nil.
func compileFast(t *template.Template) *fastTemplate {
	if t.Tree == nil || t.Tree.Root == nil {
		return nil
	}
	envType := reflect.TypeOf(pipeline.Envelope{})
	f := &fastTemplate{}
	var text strings.Builder
	for _, n := range t.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			text.Write(n.Text)
		case *parse.ActionNode:
			p := n.Pipe
			if p == nil || len(p.Decl) > 0 || p.IsAssign || len(p.Cmds) != 2 ||
				len(p.Cmds[0].Args) != 1 || len(p.Cmds[1].Args) != 1 {
				return nil
			}
			field, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok || len(field.Ident) != 1 {
				return nil
			}
			esc, ok := p.Cmds[1].Args[0].(*parse.IdentifierNode)
			if !ok || (esc.Ident != "_html_template_htmlescaper" && esc.Ident != "_html_template_attrescaper") {
				return nil
			}
			sf, ok := envType.FieldByName(field.Ident[0])
			if !ok || !sf.IsExported() {
				return nil
			}
			part := fastPart{text: text.String(), field: sf.Index}
			switch sf.Type.Kind() {
			case reflect.String:
			case reflect.Int64:
				part.isInt = true
			default:
				return nil
			}
			f.parts = append(f.parts, part)
			f.text += text.Len()
			text.Reset()
		default:
			return nil
		}
	}
	f.parts = append(f.parts, fastPart{text: text.String()})
	f.text += text.Len()
	if !f.sameAs(t) {
		return nil
	}
	return f
}

// sameAs checks f against html/template on envelopes that exercise every
// escaped character, empty and non-ASCII values and invalid UTF-8.
func (f *fastTemplate) sameAs(t *template.Template) bool {
	probes := []pipeline.Envelope{
		{},
		{ID: "0192f0c4-aaaa", Type: "message", Room: "lobby", ClientID: 7, Username: "alice", Body: "hello",
			HTML: "x", Datetime: "2026-11-25 21:04:05", TS: 1764104645123},
		{ID: `"><script>`, Type: "'&", Room: "+<>", ClientID: -1, Username: "\x00张三\u2028 \t\n",
			Body: "<script>alert('x' + \"y\")</script> & \xff\xfe", Datetime: "&amp;", TS: 1 << 62},
	}
	for i := range probes {
		var want bytes.Buffer
		if err := t.Execute(&want, &probes[i]); err != nil {
			return false
		}
		if got := f.render(&probes[i]); got != want.String() {
			return false
		}
	}
	return true
}

// render executes the template for e.
func (f *fastTemplate) render(e *pipeline.Envelope) string {
	v := reflect.ValueOf(e).Elem()
	n := f.text
	for _, p := range f.parts {
		if p.field != nil && !p.isInt {
			n += len(v.FieldByIndex(p.field).String()) * 11 / 10
		} else if p.field != nil {
			n += 20
		}
	}
	b := make([]byte, 0, n+8)
	for _, p := range f.parts {
		b = append(b, p.text...)
		if p.field == nil {
			continue
		}
		fv := v.FieldByIndex(p.field)
		if p.isInt {
			b = strconv.AppendInt(b, fv.Int(), 10)
		} else {
			b = appendHTMLEscaped(b, fv.String())
		}
	}
	return unsafe.String(unsafe.SliceData(b), len(b)) // b is not used again
}

// htmlEscapes is html/template's htmlReplacementTable: the only characters its
// HTML text and attribute escapers change in a plain string.
var htmlEscapes = [128]string{
	0:    "\uFFFD",
	'"':  "&#34;",
	'&':  "&amp;",
	'\'': "&#39;",
	'+':  "&#43;",
	'<':  "&lt;",
	'>':  "&gt;",
}

// appendHTMLEscaped appends s escaped as html/template's htmlEscaper does.
// The escaped characters are ASCII, which in UTF-8 (valid or not) never
// occurs inside a multi-byte sequence, so a byte scan is exact.
func appendHTMLEscaped(b []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 128 && htmlEscapes[c] != "" {
			b = append(b, s[last:i]...)
			b = append(b, htmlEscapes[c]...)
			last = i + 1
		}
	}
	return append(b, s[last:]...)
}
