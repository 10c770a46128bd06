// Package emoji is an example chatserver plugin: it turns :smile: codes in
// messages into emoji. Import it (for its side effect) into a binary that
// runs chatserver's command line, and `use: emoji` becomes valid in YAML.
package emoji

import (
	"context"
	"strings"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("emoji", "turns :smile: codes into emoji (an example custom plugin)",
		func() *Options { return &Options{Codes: map[string]string{}} }, // the defaults
		func(o *Options, _ pipeline.Deps) (pipeline.Plugin, error) { return New(*o), nil }))
}

// Options configure the emoji plugin.
type Options struct {
	// Codes adds to or overrides the built-in codes, e.g. {party: "🎉"} makes
	// :party: a party popper. Default none.
	Codes map[string]string `mapstructure:"codes"`
}

// builtin are the codes every emoji step knows.
var builtin = map[string]string{
	"smile": "😄", "heart": "❤️", "thumbsup": "👍", "wave": "👋", "tada": "🎉", "fire": "🔥",
}

// Emoji is the plugin: a strings.Replacer built once per pipeline.
type Emoji struct{ r *strings.Replacer }

// New returns an emoji plugin knowing the built-in codes and opts.Codes.
func New(opts Options) *Emoji {
	codes := map[string]string{}
	for k, v := range builtin {
		codes[k] = v
	}
	for k, v := range opts.Codes {
		codes[k] = v
	}
	var pairs []string
	for k, v := range codes {
		pairs = append(pairs, ":"+k+":", v)
	}
	return &Emoji{r: strings.NewReplacer(pairs...)}
}

// Wrap implements pipeline.Plugin: it rewrites message bodies, then lets the
// event go on.
func (e *Emoji) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.Kind == pipeline.Message {
			ev.SetBody(e.r.Replace(ev.Envelope.Body))
		}
		return next.Handle(ctx, ev)
	})
}

var _ pipeline.Plugin = (*Emoji)(nil)
