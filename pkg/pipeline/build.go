package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// Step is one entry of a pipeline in YAML: `use: NAME`, optional `name:` (a label
// for logs and metrics; defaults to the plugin name) and optional `with:`.
type Step struct {
	Use  string         `mapstructure:"use" yaml:"use" json:"use"`
	Name string         `mapstructure:"name" yaml:"name,omitempty" json:"name,omitempty"`
	With map[string]any `mapstructure:"with" yaml:"with,omitempty" json:"with,omitempty"`
}

// Label is the step's name for logs and metrics.
func (s Step) Label() string {
	if s.Name != "" {
		return s.Name
	}
	return s.Use
}

// Config is the `pipelines:` section: one list of steps per event kind — the
// built-in join, message and leave, and any custom kind (see CheckKind).
type Config map[Kind][]Step

// Steps returns the steps of one kind.
func (c Config) Steps(k Kind) []Step { return c[k] }

// Kinds returns the kinds Build makes a pipeline for: join, message and leave
// (always, empty when c has no steps for them), then c's custom kinds sorted.
func (c Config) Kinds() []Kind {
	kinds := slices.Clone(Kinds)
	var custom []Kind
	for k := range c {
		if k.Custom() {
			custom = append(custom, k)
		}
	}
	slices.Sort(custom)
	return append(kinds, custom...)
}

// Observer is told how long each step took on its own (time spent in later
// steps excluded) and what it returned. It is called on the event's goroutine
// and must be fast (a histogram observation).
type Observer interface {
	ObserveStep(kind Kind, step string, d time.Duration, err error)
}

// BuildOptions tune Build. The zero value is valid.
type BuildOptions struct {
	// Observer, if set, is told about every step of every event.
	Observer Observer
	// EventTimeout, if positive, bounds each event's whole run through its
	// pipeline (all steps together): the
	// context passed to plugins is cancelled after it. Plugins that wait (the
	// webhook) honour it.
	EventTimeout time.Duration
}

// ResolvedStep is a built step, for `config check` and `pipeline run`.
type ResolvedStep struct {
	Kind    Kind
	Label   string
	Use     string
	Options any // the decoded options struct, defaults filled in
}

// Gatekeeper is implemented by plugins that admit only members who prove who
// they are (the username plugin in signed and jwt modes). When a join step
// guards, the server shows nothing of the room to anyone whose join was not
// accepted: no history before the join pipeline completed, no messages
// rendered into the page.
type Gatekeeper interface {
	GuardsJoin() bool
	// Admit checks, without side effects, that s proves an identity that
	// may join s.Room(), and returns the proven name: the server asks it for
	// HTTP reads of a guarded room (history, members) made with the
	// joiner's own credentials. It returns an *Error (rejected) when not.
	Admit(s Sender) (name string, err error)
}

// Pipelines are the built pipelines, one per kind. They are immutable once
// built, so a hot reload builds a new value and swaps it in atomically.
type Pipelines struct {
	handlers map[Kind]Handler
	steps    []ResolvedStep
	closers  []io.Closer
	timeout  time.Duration
	gates    []Gatekeeper // the join steps that guard

	// active counts events inside Run; a retired value closes its plugins
	// when the last of them leaves (see Retire).
	active    atomic.Int64
	retired   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Build builds the pipelines of cfg. Errors name the step as
// `pipelines.KIND[i] (PLUGIN)` and, for options, the key at fault.
func Build(cfg Config, deps Deps, bo BuildOptions) (*Pipelines, error) {
	p := &Pipelines{handlers: map[Kind]Handler{}, timeout: bo.EventTimeout}
	fail := func(err error) (*Pipelines, error) {
		_ = p.Close() // the plugins built so far; the build error is what matters
		return nil, err
	}
	for _, kind := range cfg.Kinds() {
		if err := CheckKind(kind); err != nil {
			return fail(fmt.Errorf("pipelines.%s: %w", kind, err))
		}
		steps := cfg.Steps(kind)
		plugins := make([]Plugin, len(steps))
		for i, st := range steps {
			where := fmt.Sprintf("pipelines.%s[%d]", kind, i)
			if st.Use == "" {
				return fail(fmt.Errorf("%s: missing `use:` (known plugins: %v)", where, Names()))
			}
			where += " (" + st.Use + ")"
			spec, ok := Lookup(st.Use)
			if !ok {
				return fail(fmt.Errorf("%s: %w", where, unknownPlugin(st.Use)))
			}
			opts, err := DecodeOptions(spec, st.With)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", where, err))
			}
			d := deps
			if d.Logger != nil {
				d.Logger = d.Logger.With("pipeline", string(kind), "step", st.Label())
			}
			pl, err := spec.New(opts, d)
			if err != nil {
				return fail(fmt.Errorf("%s: %w", where, err))
			}
			if c, ok := pl.(io.Closer); ok {
				p.closers = append(p.closers, c)
			}
			if g, ok := pl.(Gatekeeper); ok && kind == Join && g.GuardsJoin() {
				p.gates = append(p.gates, g)
			}
			plugins[i] = pl
			p.steps = append(p.steps, ResolvedStep{Kind: kind, Label: st.Label(), Use: st.Use, Options: opts})
		}
		// Wrap from the last step to the first, so the first step runs first.
		var h Handler = end
		for i := len(plugins) - 1; i >= 0; i-- {
			label := steps[i].Label()
			h = plugins[i].Wrap(h)
			if bo.Observer != nil {
				h = observe(bo.Observer, kind, label, h)
			}
			h = recoverStep(label, h)
		}
		p.handlers[kind] = h
	}
	return p, nil
}

// DecodeOptions decodes a step's `with:` map onto the plugin's default options
// and validates them. Unknown keys are errors that name the key.
func DecodeOptions(spec Spec, with map[string]any) (any, error) {
	if spec.Options == nil {
		if len(with) > 0 {
			return nil, fmt.Errorf("unknown option %s: plugin %s takes no options", quoteKeys(sortedKeys(with)), spec.Name)
		}
		return nil, nil
	}
	opts := spec.Options()
	if reflect.TypeOf(opts).Kind() != reflect.Pointer {
		panic("pipeline: plugin " + spec.Name + ": Options must return a pointer")
	}
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:   opts,
		Metadata: &md,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
	})
	if err != nil {
		return nil, err
	}
	if err := dec.Decode(with); err != nil {
		return nil, fmt.Errorf("options: %w", unwrapDecode(err))
	}
	if len(md.Unused) > 0 {
		sort.Strings(md.Unused)
		return nil, fmt.Errorf("unknown option %s (known: %s)", quoteKeys(md.Unused), strings.Join(OptionKeys(opts), ", "))
	}
	if v, ok := opts.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("options: %w", err)
		}
	}
	return opts, nil
}

// OptionKeys lists the `with:` keys an options struct accepts, in field order.
func OptionKeys(opts any) []string {
	t := reflect.TypeOf(opts)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys = append(keys, name)
	}
	return keys
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func quoteKeys(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = strconv.Quote(k)
	}
	return strings.Join(q, ", ")
}

// unwrapDecode keeps mapstructure's messages but drops its "decoding failed
// due to the following error(s):" preamble, which reads badly in one line.
func unwrapDecode(err error) error {
	var u interface{ Unwrap() []error }
	if errors.As(err, &u) {
		if errs := u.Unwrap(); len(errs) > 0 {
			msgs := make([]string, len(errs))
			for i, e := range errs {
				msgs[i] = e.Error()
			}
			return errors.New(strings.Join(msgs, "; ")) // one line, as every config error
		}
	}
	return err
}

// Run sends ev through the pipeline of its kind. A kind without steps lets the
// event through untouched.
func (p *Pipelines) Run(ctx context.Context, ev *Event) error {
	p.active.Add(1)
	defer func() {
		if p.active.Add(-1) == 0 && p.retired.Load() {
			_ = p.Close()
		}
	}()
	h, ok := p.handlers[ev.Kind]
	if !ok {
		return fmt.Errorf("pipeline: unknown event kind %q", ev.Kind)
	}
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	return h.Handle(ctx, ev)
}

// Steps returns the resolved steps of every pipeline, in order.
func (p *Pipelines) Steps() []ResolvedStep { return p.steps }

// Has reports whether there is a pipeline for kind: always for join,
// message and leave, for a custom kind when the config declared it.
func (p *Pipelines) Has(kind Kind) bool {
	_, ok := p.handlers[kind]
	return ok
}

// Accepts returns nil when a client's frame may ask for kind — message, or a
// custom kind of these pipelines — and an *Error with CodeUnknownType
// otherwise: join and leave are the server's own events.
func (p *Pipelines) Accepts(kind Kind) error {
	if kind == Join || kind == Leave || !p.Has(kind) {
		return Reject(CodeUnknownType, "type %q names no event kind of this server", string(kind))
	}
	return nil
}

// Guarded reports whether a join step admits only proven members (see
// Gatekeeper).
func (p *Pipelines) Guarded() bool { return len(p.gates) > 0 }

// Admit reports whether s would get past every guarding join step (see
// Gatekeeper.Admit), and the name the last of them proved; nil and "" when
// no step guards.
func (p *Pipelines) Admit(s Sender) (name string, err error) {
	for _, g := range p.gates {
		if name, err = g.Admit(s); err != nil {
			return "", err
		}
	}
	return name, nil
}

// Retire marks pipelines that were replaced (hot reload): their plugins are
// closed once no event is running through them any more — at once if none is.
// An event that loaded these pipelines just before the swap but has not yet
// called Run can still enter after that; plugins should fail cleanly when used
// after Close.
func (p *Pipelines) Retire() {
	p.retired.Store(true)
	if p.active.Load() == 0 {
		_ = p.Close()
	}
}

// Close closes every plugin that holds resources, once; later calls return
// the first call's result.
func (p *Pipelines) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		for _, c := range p.closers {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// observe reports the step's own duration — its time minus the time spent in
// the steps after it — and the error only if the step produced it rather than
// passed on what a later step returned. ev.down and ev.downErr carry the
// downstream results between the wrappers.
func observe(o Observer, kind Kind, step string, h Handler) Handler {
	return HandlerFunc(func(ctx context.Context, ev *Event) error {
		before := ev.down
		ev.downErr = nil
		start := time.Now()
		err := h.Handle(ctx, ev)
		incl := time.Since(start)
		own := err
		if err != nil && ev.downErr != nil && errors.Is(err, ev.downErr) {
			own = nil
		}
		o.ObserveStep(kind, step, incl-(ev.down-before), own)
		ev.down = before + incl
		ev.downErr = err
		return err
	})
}
