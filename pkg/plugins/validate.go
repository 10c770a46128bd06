package plugins

import (
	"context"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("validate",
		"rejects empty and over-long bodies and invalid UTF-8; strips control characters",
		DefaultValidateOptions,
		func(o *ValidateOptions, _ pipeline.Deps) (pipeline.Plugin, error) { return NewValidator(*o) }))
}

// ValidateOptions configure the validate plugin.
type ValidateOptions struct {
	// MaxLength is the longest body accepted, in runes after cleaning, so the
	// limit means the same for every script. Default 2000.
	MaxLength int `mapstructure:"max_length"`
}

// DefaultValidateOptions returns the options a step without `with:` gets.
func DefaultValidateOptions() *ValidateOptions {
	return &ValidateOptions{MaxLength: 2000}
}

// Validate rejects a limit that no body could meet.
func (o *ValidateOptions) Validate() error {
	if o.MaxLength < 1 {
		return fmt.Errorf("max_length must be at least 1, got %d", o.MaxLength)
	}
	return nil
}

// Validator is the validate plugin. It runs on message events, and on custom
// kinds that carry a body (a custom kind needs none); join and leave carry no
// body. A body reaches the envelope only through this step. Later steps (render_html, history) see the cleaned body
// in both ev.In.Body and ev.Envelope.Body, so what is stored is what was checked.
type Validator struct {
	max int
}

// NewValidator returns a validate plugin. It validates opts.
func NewValidator(opts ValidateOptions) (*Validator, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Validator{max: opts.MaxLength}, nil
}

// Wrap implements pipeline.Plugin.
func (v *Validator) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.Kind == pipeline.Join || ev.Kind == pipeline.Leave || ev.Kind.Custom() && ev.In.Body == "" {
			return next.Handle(ctx, ev) // a custom kind needs no body; one it has is checked
		}
		body := ev.In.Body
		if !utf8.ValidString(body) {
			return pipeline.Reject(pipeline.CodeInvalidJSON, "body is not valid UTF-8")
		}
		body = cleanBody(body)
		if body == "" {
			return pipeline.Reject(pipeline.CodeEmpty, "body is empty")
		}
		if n := utf8.RuneCountInString(body); n > v.max {
			return pipeline.Reject(pipeline.CodeTooLong, "body is %d characters long; the limit is %d", n, v.max)
		}
		ev.SetBody(body)
		return next.Handle(ctx, ev)
	})
}

// cleanBody strips control characters but keeps the line breaks and tabs that
// multi-line messages and pasted code need, then trims surrounding white
// space. A clean body is returned as is, without allocating.
func cleanBody(s string) string {
	if strings.IndexFunc(s, isBodyJunk) >= 0 {
		s = strings.Map(func(r rune) rune {
			if isBodyJunk(r) {
				return -1
			}
			return r
		}, s)
	}
	return strings.TrimSpace(s)
}

func isBodyJunk(r rune) bool {
	return r != '\n' && r != '\t' && unicode.IsControl(r)
}

var _ pipeline.Plugin = (*Validator)(nil)
