package plugins

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("filter",
		"masks words from a list or a file in message bodies (whole words, any case, any script)",
		DefaultFilterOptions,
		func(o *FilterOptions, _ pipeline.Deps) (pipeline.Plugin, error) { return NewFilter(*o) }))
}

// FilterOptions configure the filter plugin. Words and File add up; at least
// one word is needed.
type FilterOptions struct {
	// Words are masked wherever they appear as a whole word, in any case.
	// A word is a run of letters, digits and combining marks. Default none.
	Words []string `mapstructure:"words"`
	// File names a file of more words, one per line; blank lines and lines
	// starting with # are skipped. It is read when the pipeline is built (at
	// start and at each hot reload). Default "" (none).
	File string `mapstructure:"file"`
	// Mask is the character repeated once per character of a masked word.
	// Default "*".
	Mask string `mapstructure:"mask"`
}

// DefaultFilterOptions returns the options a step without `with:` gets.
func DefaultFilterOptions() *FilterOptions {
	return &FilterOptions{Mask: "*"}
}

// Validate checks the mask and the words given inline; the file is checked
// by NewFilter.
func (o *FilterOptions) Validate() error {
	if utf8.RuneCountInString(o.Mask) != 1 {
		return fmt.Errorf("mask must be one character, got %q", o.Mask)
	}
	if len(o.Words) == 0 && o.File == "" {
		return errors.New("give words or a file of words")
	}
	for _, w := range o.Words {
		if err := checkWord(w); err != nil {
			return fmt.Errorf("words: %w", err)
		}
	}
	return nil
}

func checkWord(w string) error {
	if w == "" {
		return errors.New("empty word")
	}
	if i := strings.IndexFunc(w, func(r rune) bool { return !isWordRune(r) }); i >= 0 {
		return fmt.Errorf("%q is not one word (it holds %q)", w, []rune(w[i:])[0])
	}
	return nil
}

// Filter is the filter plugin. It changes the body of message events before
// the steps after it (render_html, history, broadcast) see it. Put it before
// render_html: placed after, it drops the html of every message it changes.
type Filter struct {
	words map[string]bool // lower-cased
	mask  rune
}

// NewFilter returns a filter plugin. It validates opts and reads opts.File.
func NewFilter(opts FilterOptions) (*Filter, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	f := &Filter{words: map[string]bool{}}
	f.mask, _ = utf8.DecodeRuneInString(opts.Mask)
	for _, w := range opts.Words {
		f.words[strings.ToLower(w)] = true
	}
	if opts.File != "" {
		if err := f.readFile(opts.File); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *Filter) readFile(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("file: %w", err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for n := 1; sc.Scan(); n++ {
		w := strings.TrimSpace(sc.Text())
		if w == "" || strings.HasPrefix(w, "#") {
			continue
		}
		if err := checkWord(w); err != nil {
			return fmt.Errorf("file %s:%d: %w", path, n, err)
		}
		f.words[strings.ToLower(w)] = true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("file %s: %w", path, err)
	}
	return nil
}

// Wrap implements pipeline.Plugin.
func (f *Filter) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.Kind == pipeline.Message {
			body := ev.Envelope.Body
			if body == "" {
				body = ev.In.Body
			}
			ev.SetBody(f.Mask(body))
		}
		return next.Handle(ctx, ev)
	})
}

// Mask returns s with every listed word masked. Matching is on whole words
// (runs of letters, digits and marks, so "class" is safe from "ass") and
// ignores case in every script ("ÉCOLE" matches "école").
func (f *Filter) Mask(s string) string {
	var b strings.Builder
	last := 0 // s[:last] is in b already
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !isWordRune(r) {
			i += size
			continue
		}
		j := i
		for j < len(s) {
			r, size := utf8.DecodeRuneInString(s[j:])
			if !isWordRune(r) {
				break
			}
			j += size
		}
		if f.words[strings.ToLower(s[i:j])] {
			if last == 0 {
				b.Grow(len(s))
			}
			b.WriteString(s[last:i])
			for range utf8.RuneCountInString(s[i:j]) {
				b.WriteRune(f.mask)
			}
			last = j
		}
		i = j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

var _ pipeline.Plugin = (*Filter)(nil)
