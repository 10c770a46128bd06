package plugins

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"strings"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("render_html",
		"fills html from a template (html/template: every user string is escaped)",
		DefaultRenderHTMLOptions,
		func(o *RenderHTMLOptions, deps pipeline.Deps) (pipeline.Plugin, error) {
			return NewRenderHTML(*o, deps.Templates)
		}))
}

// RenderHTMLOptions configure the render_html plugin.
type RenderHTMLOptions struct {
	// Template is the name of the template, among the server's templates, that
	// renders one message. It is executed with the *pipeline.Envelope.
	// Default "message.html".
	Template string `mapstructure:"template"`
	// Fast renders a template made only of text and plain fields in HTML
	// text or quoted attributes (message.html is one) without html/template
	// (see fastTemplate), to the same bytes; false always runs
	// html/template. Default true.
	Fast bool `mapstructure:"fast"`
}

// DefaultRenderHTMLOptions returns the options a step without `with:` gets.
func DefaultRenderHTMLOptions() *RenderHTMLOptions {
	return &RenderHTMLOptions{Template: "message.html", Fast: true}
}

// Validate rejects an empty template name, which could never be found.
func (o *RenderHTMLOptions) Validate() error {
	if o.Template == "" {
		return errors.New("template must not be empty")
	}
	return nil
}

// RenderHTML is the render_html plugin. It uses html/template so that every
// user-supplied string (body, username) is escaped for its context: a body of
// "<script>" reaches browsers as text, never as markup. Only message events are
// rendered; online/offline envelopes carry no html.
type RenderHTML struct {
	name string
	tmpl *template.Template
	// base is the size of the template's output for an empty envelope, so the
	// output buffer can be sized once per message instead of grown.
	base int
	// fast renders the template without html/template when it is simple
	// enough (see fastTemplate) and the Fast option is on; nil otherwise.
	fast *fastTemplate
}

// NewRenderHTML returns a render_html plugin rendering the template named
// opts.Template from set. The template is executed once with an empty envelope
// here, so a template that cannot run fails at load time, not per message.
func NewRenderHTML(opts RenderHTMLOptions, set *template.Template) (*RenderHTML, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if set == nil {
		return nil, fmt.Errorf("template %q: the server provides no templates", opts.Template)
	}
	// Executing an html/template freezes its whole set (no more Parse or
	// Clone), so run a private copy and leave the server's set as it was. A
	// set that already ran cannot be cloned and is frozen anyway: use it.
	if c, err := set.Clone(); err == nil {
		set = c
	}
	t := set.Lookup(opts.Template)
	if t == nil {
		return nil, fmt.Errorf("template %q not found%s", opts.Template, set.DefinedTemplates())
	}
	var b strings.Builder
	if err := t.Execute(&b, &pipeline.Envelope{}); err != nil {
		return nil, fmt.Errorf("template %q: %w", opts.Template, err)
	}
	r := &RenderHTML{name: opts.Template, tmpl: t, base: b.Len()}
	if opts.Fast {
		r.fast = compileFast(t)
	}
	return r, nil
}

// Wrap implements pipeline.Plugin.
func (r *RenderHTML) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.Kind == pipeline.Join || ev.Kind == pipeline.Leave || ev.Kind.Custom() && ev.Envelope.Body == "" {
			return next.Handle(ctx, ev)
		}
		e := &ev.Envelope
		if r.fast != nil {
			e.HTML = r.fast.render(e)
			return next.Handle(ctx, ev)
		}
		var b strings.Builder
		// Room for the fields plus a little for escaping: most messages then
		// render with a single allocation.
		n := len(e.ID) + len(e.Username) + len(e.Body) + len(e.Datetime) + len(e.Room) + 20
		b.Grow(r.base + n + n/8)
		if err := r.tmpl.Execute(&b, e); err != nil {
			return fmt.Errorf("render_html: executing template %q: %w", r.name, err)
		}
		e.HTML = b.String()
		return next.Handle(ctx, ev)
	})
}

var _ pipeline.Plugin = (*RenderHTML)(nil)
